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
    # Straight-through: the latent weights and the step sizes get gradients.
    (out * torch.randn_like(out)).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert fq.log_d.grad is not None and fq.log_d.grad.abs().sum() > 0


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
