"""kompakt's block formats in PyTorch against blocks and values written by the Rust kernels
(tests/compression.rs::qat_vectors_for_kompakt_train_match_the_kernels)."""
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import DATA
from kompakt_train import quant

VECTORS = load_file(str(DATA / "quant_vectors.safetensors"))
TYPES = ["q8_0", "q4_k", "q3_k", "q2_k"]


@pytest.mark.parametrize("name", TYPES)
def test_dequantization_is_bit_for_bit_the_kernels(name):
    fmt = quant.fmt_of(name)
    blocks, want = VECTORS[f"{name}.blocks"], VECTORS[f"{name}.dequantized"]
    cols = want.shape[1]
    grid, q = quant.unpack(fmt, blocks, cols)
    got = quant.dequantize(grid, q, cols).numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # Packing the decoded grid and codes gives back the kernels' bytes.
    assert np.array_equal(quant.pack(grid, q), blocks)


@pytest.mark.parametrize("name", TYPES)
def test_fake_quantization_keeps_a_quantized_weight_and_passes_gradients(name):
    fmt = quant.fmt_of(name)
    blocks, want = VECTORS[f"{name}.blocks"], VECTORS[f"{name}.dequantized"]
    cols = want.shape[1]
    grid, q = quant.unpack(fmt, blocks, cols)
    fq = quant.FakeQuant(grid, cols)
    w = torch.from_numpy(want.copy()).requires_grad_(True)
    out = fq(w)
    # A weight on the grid is its own fake-quantization, with the same codes.
    assert torch.equal(out, w.detach())
    # Its codes pack into blocks that decode to the same weights (the codes themselves may differ
    # where a sub-block's step is zero: every code gives the same weight there, up to its sign).
    g = fq.grid()
    repacked = quant.pack(g, fq.codes(w.detach(), g.d, g.dmin))
    g2, q2 = quant.unpack(fmt, repacked, cols)
    assert np.array_equal(quant.dequantize(g2, q2, cols).numpy(), want)  # (-0.0 == 0.0)
    # On the grid the straight-through gradient reaches the weights (those whose step is not zero).
    (out * torch.ones_like(out)).sum().backward()
    assert w.grad is not None and set(w.grad.unique().tolist()) <= {0.0, 1.0}
    assert (w.grad[2:] == 1).float().mean() > 0.8  # q2_k: 11 % of its sub-scales are zero here


class _Round(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


@pytest.mark.parametrize("name", TYPES)
def test_gradients_equal_autograd_through_the_straight_through_formula(name):
    """The hand-written backward (which saves only w and the steps) against autograd on
    w_hat = s * round_ste(clamp((w + M) / s)) - M (x = 0 where s = 0), off the grid."""
    fmt = quant.fmt_of(name)
    cols = VECTORS[f"{name}.dequantized"].shape[1]
    grid, _ = quant.unpack(fmt, VECTORS[f"{name}.blocks"], cols)
    x = torch.from_numpy(VECTORS["input"].copy())[2:]  # rows with nonzero steps
    grid = quant.Grid(fmt, grid.d[2:], grid.sc[2:], None if grid.dmin is None else grid.dmin[2:],
                      None if grid.m is None else grid.m[2:])
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    fq = quant.FakeQuant(grid, cols)
    w1 = x.clone().requires_grad_(True)
    (fq(w1) * g).sum().backward()

    fq2 = quant.FakeQuant(grid, cols)
    w2 = x.clone().requires_grad_(True)
    d, dmin = fq2.scales()
    rows, nb = d.shape
    wp = torch.nn.functional.pad(w2, (0, nb * fmt.block - cols)).reshape(rows, nb, fmt.nsub, fmt.sub)
    s = (d[..., None] * fq2.sc)[..., None]
    mn = (dmin[..., None] * fq2.m)[..., None] if fmt.has_min else torch.zeros_like(s)
    x = torch.where(s == 0, torch.zeros_like(wp), (wp + mn) / torch.where(s == 0, torch.ones_like(s), s))
    q = _Round.apply(torch.clamp(x, fmt.qmin, fmt.qmax))
    ref = (s * q - mn).reshape(rows, -1)[:, :cols]
    (ref * g).sum().backward()

    assert torch.allclose(w1.grad, w2.grad)
    assert torch.allclose(fq.log_d.grad, fq2.log_d.grad, rtol=1e-4, atol=1e-6)
    assert fq.log_d.grad.abs().sum() > 0
    if fmt.has_min:
        assert torch.allclose(fq.log_dmin.grad, fq2.log_dmin.grad, rtol=1e-4, atol=1e-6)


def test_fake_quantization_rounds_off_grid_weights_to_the_nearest_code():
    fmt = quant.fmt_of("q4_k")
    blocks, want = VECTORS["q4_k.blocks"], VECTORS["q4_k.dequantized"]
    cols = want.shape[1]
    grid, q = quant.unpack(fmt, blocks, cols)
    fq = quant.FakeQuant(grid, cols)
    x = torch.from_numpy(VECTORS["input"].copy())
    out = fq(x)
    # Within half a step of the input wherever the input is inside the grid's range.
    s = (grid.d[..., None] * grid.sc).repeat_interleave(fmt.sub, -1).reshape(x.shape[0], -1)[:, :cols]
    lo = (-(grid.dmin[..., None] * grid.m)).repeat_interleave(fmt.sub, -1).reshape(x.shape[0], -1)[:, :cols]
    inside = (x >= lo) & (x <= lo + 15 * s) & (s > 0)
    assert inside[2:].float().mean() > 0.9  # rows 0 and 1 are constant: zero steps
    assert torch.all((out - x).abs()[inside] <= s[inside] / 2 * (1 + 1e-5))


def test_unknown_types_are_named():
    with pytest.raises(quant.TrainError, match="iq2"):
        quant.fmt_of("iq2")
