"""kompakt's block formats in PyTorch, for quantization-aware training.

Each type of FORMAT.md ("Quantized block layouts") is decoded from and encoded to its exact bytes,
and its weights are computed in the same float32 arithmetic as the Rust dequantizer
(`runtime/kernels/src/scalar.rs::dequantize_block`), so a fake-quantized weight here is bit for bit
the weight kompakt's kernels multiply with. `train/tests/data/quant_vectors.safetensors` holds
blocks and dequantized values written by the kernels (`tests/compression.rs` keeps it current);
the tests decode them here.

A quantized matrix is a *grid* (per block: the f16 super-scales `d` and `dmin`, the integer
sub-scales `sc` and mins `m`) and integer codes `q`, with, per sub-block,

    w = (d * sc) * q - (dmin * m)

in float32, evaluated in that order (q3_k: `q` is the stored code minus 4 and there is no min;
q8_0: one sub-block per block with `sc` = 1).

Training (`FakeQuant`): the codes are recomputed from latent float weights on every forward pass,
`q = clamp(round((w + dmin * m) / (d * sc)))`, with straight-through gradients for the rounding
(inside the clamp range) and learned step sizes: `d` and `dmin` are trained in log space and
rounded to f16 in the forward pass (straight through), while the 4-6-bit sub-scales and mins stay
as the starting grid set them. This is EfficientQAT's end-to-end stage (weights and step sizes
trained against the full-precision model's outputs) in kompakt's own two-level scale formats.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .errors import TrainError

FILE = "kompakt_codes.safetensors"
FORMAT = "kompakt-codes/1"
META_KEY = "kompakt.codes"


@dataclass(frozen=True)
class Fmt:
    name: str
    block: int       # weights per block
    nbytes: int      # bytes per block
    sub: int         # weights per sub-block
    qmin: int        # code range, as used in the formula above
    qmax: int
    has_min: bool

    @property
    def nsub(self) -> int:
        return self.block // self.sub


TYPES = {
    "q8_0": Fmt("q8_0", 32, 34, 32, -127, 127, False),
    "q4_k": Fmt("q4_k", 256, 144, 32, 0, 15, True),
    "q3_k": Fmt("q3_k", 256, 110, 16, -4, 3, False),
    "q2_k": Fmt("q2_k", 256, 84, 16, 0, 3, True),
}


def fmt_of(name: str) -> Fmt:
    if name not in TYPES:
        raise TrainError(f"type {name}: quantization-aware training supports {', '.join(TYPES)} "
                         "(iq2's codebook is not trained yet)")
    return TYPES[name]


@dataclass
class Grid:
    """Scales of one matrix of `rows` x `nb` blocks, as float32 tensors holding exact values."""
    fmt: Fmt
    d: torch.Tensor                # [rows, nb] f16 values
    sc: torch.Tensor               # [rows, nb, nsub] integers
    dmin: torch.Tensor | None      # [rows, nb] f16 values
    m: torch.Tensor | None         # [rows, nb, nsub] integers


def _f16(b: np.ndarray) -> torch.Tensor:
    """Little-endian f16 from [..., 2] bytes, as float32."""
    return torch.from_numpy(np.ascontiguousarray(b).view("<f2")[..., 0].astype(np.float32))


def _f16_bytes(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float16).numpy().astype("<f2").view(np.uint8).reshape(*x.shape, 2)


def _unpack_6bit16(p: np.ndarray) -> np.ndarray:
    """[..., 12] bytes -> [..., 16] six-bit values (FORMAT.md "6bit16 packing")."""
    p = p.astype(np.int32)
    k = np.arange(16)
    low = np.where(k < 8, p[..., k % 8] & 15, p[..., k % 8] >> 4)
    high = (p[..., 8 + k % 4] >> (2 * (k // 4))) & 3
    return low | (high << 4)


def _pack_6bit16(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int32)
    out = np.zeros((*v.shape[:-1], 12), dtype=np.int32)
    out[..., :8] = (v[..., :8] & 15) | ((v[..., 8:] & 15) << 4)
    for j in range(4):
        for m in range(4):
            out[..., 8 + j] |= ((v[..., j + 4 * m] >> 4) & 3) << (2 * m)
    return out.astype(np.uint8)


def _code_index() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the 256 weights of a q3_k/q2_k block: byte (32g + t) and shift 2k of the 2-bit part."""
    i = np.arange(256)
    g, k, t = i // 128, (i % 128) // 32, i % 32
    return 32 * g + t, 2 * k, i


def unpack(fmt: Fmt, data: np.ndarray, cols: int) -> tuple[Grid, torch.Tensor]:
    """Bytes [rows, nb * nbytes] -> (grid, codes [rows, nb * block] as float32 integers)."""
    rows = data.shape[0]
    nb = -(-cols // fmt.block)
    if data.shape[1] != nb * fmt.nbytes:
        raise TrainError(f"{fmt.name}: {data.shape[1]} bytes per row, expected {nb * fmt.nbytes} for {cols} columns")
    b = data.reshape(rows, nb, fmt.nbytes)
    dmin = m = None
    if fmt.name == "q8_0":
        d = _f16(b[..., 0:2])
        sc = torch.ones(rows, nb, 1)
        q = b[..., 2:34].view(np.int8).astype(np.float32)
    elif fmt.name == "q4_k":
        d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
        v = _unpack_6bit16(b[..., 4:16])
        sc, m = torch.from_numpy(v[..., :8].astype(np.float32)), torch.from_numpy(v[..., 8:].astype(np.float32))
        qs = b[..., 16:144].astype(np.int32).reshape(rows, nb, 4, 32)
        q = np.stack([qs & 15, qs >> 4], axis=3).reshape(rows, nb, 256).astype(np.float32)
    elif fmt.name == "q3_k":
        d = _f16(b[..., 0:2])
        sc = torch.from_numpy((_unpack_6bit16(b[..., 2:14]) - 32).astype(np.float32))
        qh, ql = b[..., 14:46].astype(np.int32), b[..., 46:110].astype(np.int32)
        byte, shift, i = _code_index()
        lo = (ql[..., byte] >> shift) & 3
        hi = (qh[..., i % 32] >> (i // 32)) & 1
        q = (lo | (hi << 2)).astype(np.float32) - 4.0
    elif fmt.name == "q2_k":
        d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
        s = b[..., 4:20].astype(np.int32)
        sc, m = torch.from_numpy((s & 15).astype(np.float32)), torch.from_numpy((s >> 4).astype(np.float32))
        qs = b[..., 20:84].astype(np.int32)
        byte, shift, _ = _code_index()
        q = ((qs[..., byte] >> shift) & 3).astype(np.float32)
    else:  # pragma: no cover - fmt_of guards
        raise TrainError(fmt.name)
    return Grid(fmt, d, sc, dmin, m), torch.from_numpy(np.ascontiguousarray(q)).reshape(rows, nb * fmt.block)


def pack(grid: Grid, q: torch.Tensor) -> np.ndarray:
    """Inverse of `unpack`: (grid, integer codes [rows, nb * block]) -> bytes [rows, nb * nbytes]."""
    fmt = grid.fmt
    rows, nb = grid.d.shape
    out = np.zeros((rows, nb, fmt.nbytes), dtype=np.uint8)
    qi = q.detach().reshape(rows, nb, fmt.block).round().to(torch.int32).numpy()
    if fmt.name == "q8_0":
        out[..., 0:2] = _f16_bytes(grid.d)
        out[..., 2:34] = qi.astype(np.int8).view(np.uint8)
    elif fmt.name == "q4_k":
        out[..., 0:2], out[..., 2:4] = _f16_bytes(grid.d), _f16_bytes(grid.dmin)
        v = np.concatenate([grid.sc.numpy(), grid.m.numpy()], axis=-1).astype(np.int32)
        out[..., 4:16] = _pack_6bit16(v)
        q4 = qi.reshape(rows, nb, 4, 2, 32)
        out[..., 16:144] = (q4[:, :, :, 0] | (q4[:, :, :, 1] << 4)).reshape(rows, nb, 128).astype(np.uint8)
    elif fmt.name == "q3_k":
        out[..., 0:2] = _f16_bytes(grid.d)
        out[..., 2:14] = _pack_6bit16(grid.sc.numpy().astype(np.int32) + 32)
        u = qi + 4
        byte, shift, i = _code_index()
        ql = np.zeros((rows, nb, 64), dtype=np.int32)
        qh = np.zeros((rows, nb, 32), dtype=np.int32)
        for w in range(256):
            ql[..., byte[w]] |= (u[..., w] & 3) << shift[w]
            qh[..., w % 32] |= ((u[..., w] >> 2) & 1) << (w // 32)
        out[..., 14:46], out[..., 46:110] = qh.astype(np.uint8), ql.astype(np.uint8)
    elif fmt.name == "q2_k":
        out[..., 0:2], out[..., 2:4] = _f16_bytes(grid.d), _f16_bytes(grid.dmin)
        out[..., 4:20] = (grid.sc.numpy().astype(np.int32) | (grid.m.numpy().astype(np.int32) << 4)).astype(np.uint8)
        byte, shift, _ = _code_index()
        qs = np.zeros((rows, nb, 64), dtype=np.int32)
        for w in range(256):
            qs[..., byte[w]] |= (qi[..., w] & 3) << shift[w]
        out[..., 20:84] = qs.astype(np.uint8)
    return out.reshape(rows, nb * fmt.nbytes)


def dequantize(grid: Grid, q: torch.Tensor, cols: int) -> torch.Tensor:
    """w = (d * sc) * q - (dmin * m) per sub-block, float32, in the Rust dequantizer's order."""
    fmt = grid.fmt
    rows, nb = grid.d.shape
    s = (grid.d[..., None] * grid.sc)[..., None]                  # [rows, nb, nsub, 1]
    w = s * q.reshape(rows, nb, fmt.nsub, fmt.sub)
    if fmt.has_min:
        w = w - (grid.dmin[..., None] * grid.m)[..., None]
    return w.reshape(rows, nb * fmt.block)[:, :cols]


class _F16STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.to(torch.float16).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


def _codes(wp: torch.Tensor, s: torch.Tensor, mn: torch.Tensor | None, qmin: int, qmax: int):
    """x = (w + M) / s and its codes q = round(clamp(x)) per sub-block; wp [rows, nb, nsub, sub],
    s and mn [rows, nb, nsub, 1]. Zero steps give code 0."""
    num = wp + mn if mn is not None else wp
    x = num / torch.where(s == 0, torch.ones_like(s), s)
    x = torch.where(s == 0, torch.zeros_like(x), x)
    return x, torch.round(torch.clamp(x, qmin, qmax))


class _FakeQuantFn(torch.autograd.Function):
    """w_hat = s * round(clamp((w + M) / s)) - M with straight-through (LSQ) gradients:
    dw_hat/dw = 1 inside the code range (0 outside, and where s = 0), dw_hat/ds = q - x inside
    (q outside), dw_hat/dM = 0 inside (-1 outside). `w` is [rows, cols]; s and M are
    [rows, nb, nsub, 1]. Saves only w, s and M and recomputes the codes in the backward pass,
    where the autograd graph of the same formula keeps four or five full-size temporaries per
    matrix. (On the 0.5B proxy the peak stayed about the same, 21.4 GB against the 20.3 GB at
    which the autograd version was killed: see docs/notes/2026-12-07-mt-prompts-and-qat.md.)"""

    @staticmethod
    def forward(ctx, w, s, mn, qmin, qmax, fmt):
        _, q = _codes(_blocks(w, s, fmt), s, mn, qmin, qmax)
        ctx.save_for_backward(w, s, mn if mn is not None else torch.empty(0))
        ctx.has_min, ctx.qmin, ctx.qmax, ctx.fmt = mn is not None, qmin, qmax, fmt
        out = s * q
        if mn is not None:
            out = out - mn
        return out.reshape(w.shape[0], -1)[:, :w.shape[1]]

    @staticmethod
    def backward(ctx, g):
        w, s, mn = ctx.saved_tensors
        mn = mn if ctx.has_min else None
        x, q = _codes(_blocks(w, s, ctx.fmt), s, mn, ctx.qmin, ctx.qmax)
        # A zero step makes the weight a constant (-M): no gradient reaches w there.
        inside = ((x >= ctx.qmin) & (x <= ctx.qmax) & (s != 0)).to(g.dtype)
        gb = _blocks(g, s, ctx.fmt)
        g_w = (gb * inside).reshape(w.shape[0], -1)[:, :w.shape[1]]
        g_s = (gb * (q - inside * x)).sum(-1, keepdim=True)
        g_m = (gb * (inside - 1)).sum(-1, keepdim=True) if mn is not None else None
        return g_w, g_s, g_m, None, None, None


def _blocks(w: torch.Tensor, s: torch.Tensor, fmt: Fmt) -> torch.Tensor:
    """[rows, cols] -> [rows, nb, nsub, sub], zero-padded to whole blocks."""
    rows, nb = s.shape[0], s.shape[1]
    if w.shape[1] != nb * fmt.block:
        w = torch.nn.functional.pad(w, (0, nb * fmt.block - w.shape[1]))
    return w.reshape(rows, nb, fmt.nsub, fmt.sub)


class FakeQuant(nn.Module):
    """Parametrization of a Linear weight: the latent float weight in, kompakt's dequantized
    weight out (see the module docstring)."""

    def __init__(self, grid: Grid, cols: int):
        super().__init__()
        self.fmt, self.cols = grid.fmt, cols
        self.register_buffer("d0", grid.d.clone())
        self.register_buffer("sc", grid.sc.clone())
        self.log_d = nn.Parameter(torch.zeros_like(grid.d))
        if grid.fmt.has_min:
            self.register_buffer("dmin0", grid.dmin.clone())
            self.register_buffer("m", grid.m.clone())
            self.log_dmin = nn.Parameter(torch.zeros_like(grid.dmin))

    def grid(self) -> Grid:
        """The current grid with exact f16 super-scales."""
        with torch.no_grad():
            d, dmin = self.scales()
        return Grid(self.fmt, d.detach().clone(), self.sc, dmin.detach().clone() if dmin is not None else None,
                    self.m if self.fmt.has_min else None)

    def scales(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = _F16STE.apply(self.d0 * torch.exp(self.log_d))
        dmin = _F16STE.apply(self.dmin0 * torch.exp(self.log_dmin)) if self.fmt.has_min else None
        return d, dmin

    def _steps(self, d, dmin):
        s = (d[..., None] * self.sc)[..., None]
        mn = (dmin[..., None] * self.m)[..., None] if self.fmt.has_min else None
        return s, mn

    def codes(self, w: torch.Tensor, d: torch.Tensor, dmin: torch.Tensor | None) -> torch.Tensor:
        """Codes [rows, nb * block] of latent weights `w` (no gradient)."""
        s, mn = self._steps(d, dmin)
        _, q = _codes(_blocks(w.detach().float(), s, self.fmt), s.detach(), None if mn is None else mn.detach(),
                      self.fmt.qmin, self.fmt.qmax)
        return q.reshape(q.shape[0], -1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        d, dmin = self.scales()
        s, mn = self._steps(d, dmin)
        return _FakeQuantFn.apply(w.float(), s, mn, self.fmt.qmin, self.fmt.qmax, self.fmt).to(w.dtype)


# ---------------------------------------------------------------------------------------------
# Codes files (converter/src/codes.rs)
# ---------------------------------------------------------------------------------------------

def read_codes(path: str | Path) -> dict[str, tuple[Fmt, int, int, np.ndarray]]:
    """{checkpoint tensor name: (format, rows, cols, bytes [rows, row_bytes])}."""
    import json

    from safetensors import safe_open
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"{p}: no such codes file (make one with `kompakt convert ... --export-codes FILE`)")
    try:
        with safe_open(str(p), "np") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise TrainError(f"{p}: not a kompakt codes file (metadata format {meta.get('format')!r})")
            info = json.loads(meta[META_KEY])
            out = {}
            for name in f.keys():
                e = info[name]
                rows, cols = e["shape"]
                out[name] = (fmt_of(e["dtype"]), int(rows), int(cols), f.get_tensor(name))
    except (OSError, KeyError, ValueError) as e:
        raise TrainError(f"{p}: cannot read the codes ({e})") from None
    return out


def write_codes(path: str | Path, codes: dict[str, tuple[Fmt, int, int, np.ndarray]]) -> None:
    import json

    from safetensors.numpy import save_file
    info = {n: {"dtype": f.name, "shape": [r, c]} for n, (f, r, c, _) in codes.items()}
    save_file({n: np.ascontiguousarray(b) for n, (_, _, _, b) in codes.items()}, str(path),
              metadata={"format": FORMAT, META_KEY: json.dumps(info)})


# ---------------------------------------------------------------------------------------------
# Attaching to a model
# ---------------------------------------------------------------------------------------------

def _layer_suffix(name: str) -> str:
    """`language_model.model.layers.3.mlp.up_proj.weight` -> `layers.3.mlp.up_proj.weight`."""
    i = name.find("layers.")
    if i < 0:
        raise TrainError(f"codes for `{name}`: only decoder-layer matrices are trained")
    return name[i:]


def language_model(model) -> nn.Module:
    for name, mod in model.named_modules():
        if name.endswith("language_model") and hasattr(mod, "layers"):
            return mod
    for name, mod in model.named_modules():
        if name.endswith("language_model.model") and hasattr(mod, "layers"):
            return mod
    raise TrainError("the model has no language model with decoder layers")


def attach(model, codes: dict[str, tuple[Fmt, int, int, np.ndarray]]) -> dict[str, FakeQuant]:
    """Fake-quantizes every matrix named in `codes` (grid from the codes; the latent weight stays
    the model's own float weight). Returns {checkpoint name: parametrization}."""
    from torch.nn.utils import parametrize
    lm = language_model(model)
    out = {}
    for name, (fmt, rows, cols, data) in codes.items():
        suffix = _layer_suffix(name)
        mod_name = suffix[: -len(".weight")]
        try:
            mod = lm.get_submodule(mod_name)
        except AttributeError:
            raise TrainError(f"codes for `{name}`: the student has no `{mod_name}`") from None
        if tuple(mod.weight.shape) != (rows, cols):
            raise TrainError(f"codes for `{name}` have shape [{rows}, {cols}], the student's weight "
                             f"{list(mod.weight.shape)} (codes from another model?)")
        grid, _ = unpack(fmt, data, cols)
        fq = FakeQuant(grid, cols).to(mod.weight.device)
        parametrize.register_parametrization(mod, "weight", fq)
        out[name] = fq
    return out


def export(model, attached: dict[str, FakeQuant]) -> dict[str, tuple[Fmt, int, int, np.ndarray]]:
    """The trained codes, and the model's weights replaced by their dequantized values (the
    parametrizations removed): what `kompakt convert` stores and what transformers computes then
    agree exactly."""
    from torch.nn.utils import parametrize
    lm = language_model(model)
    out = {}
    with torch.no_grad():
        for name, fq in attached.items():
            mod = lm.get_submodule(_layer_suffix(name)[: -len(".weight")])
            latent = mod.parametrizations.weight.original.float()
            grid = fq.grid()
            q = fq.codes(latent, grid.d, grid.dmin)
            data = pack(grid, q)
            w = dequantize(grid, q, fq.cols)
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
            mod.weight.data = w.to(mod.weight.dtype)
            out[name] = (fq.fmt, w.shape[0], fq.cols, data)
    return out
