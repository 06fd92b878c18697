"""Structured pruning of a Qwen2-Audio checkpoint into a smaller student of the same architecture.

What is cut (Minitron's axes, applied to the checkpoint's tensors by name):
  * decoder depth: whole layers, the lowest ShortGPT block influence first (never the first or
    the last layer), or evenly spaced without an importance file;
  * decoder width: hidden channels (embeddings, every norm, every projection's input or output,
    the projector's output rows, the lm_head's columns), FFN neurons (gate/up rows, down
    columns), attention heads by whole KV groups and query heads within the kept groups; the
    head dimension stays, written as `head_dim` in config.json, so RoPE is unchanged;
  * audio encoder: layers and FFN neurons (its width stays: Whisper derives the head dimension
    from d_model).
Within each axis the structures of highest importance are kept, in their original order. With no
importance file, weight norms rank them (a data-free fallback, named in the provenance).

Keeping every dimension reproduces the teacher exactly (a test checks the logits).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .arch import AUDIO, BIN_LIMITS, EMBED, LLM, LM_HEAD, PROJ, Dims
from .errors import TrainError

# Bits per weight the converter's floors give the parts that are not the decoder, for planning:
# the audio encoder stays at q4_k or more, the projector at q8_0 (converter/src/plan.rs).
AUDIO_BITS = 4.5
PROJECTOR_BITS = 8.5
# Room for metadata, the tokenizer section, f32 norms and biases and the planner's rounding.
SIZE_MARGIN = 0.03


@dataclass
class Selection:
    hidden: torch.Tensor                 # kept hidden channels (sorted)
    layers: list[int]                    # kept decoder layers
    heads: dict[int, torch.Tensor]       # per kept layer: kept query heads
    kv: dict[int, torch.Tensor]          # per kept layer: kept KV heads
    ffn: dict[int, torch.Tensor]         # per kept layer: kept FFN neurons
    audio_layers: list[int]
    audio_ffn: dict[int, torch.Tensor]
    ranked_by: str

    def summary(self, dims: Dims) -> dict:
        return {"ranked_by": self.ranked_by,
                "hidden_kept": self.hidden.tolist(),
                "llm_layers_kept": self.layers,
                "llm_layers_dropped": [i for i in range(dims.layers) if i not in self.layers],
                "audio_layers_kept": self.audio_layers,
                "audio_layers_dropped": [i for i in range(dims.audio_layers) if i not in self.audio_layers]}


def estimate_bytes(d: Dims, bits: float, vocab: int | None = None) -> float:
    p = d.params(vocab)
    llm = p["llm_layers"] + p["embed_tokens"] + p["lm_head"] + p["final_norm"]
    raw = (llm * bits + p["audio_encoder"] * AUDIO_BITS + p["projector"] * PROJECTOR_BITS) / 8
    return raw * (1 + SIZE_MARGIN)


def _round(x: float, multiple: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, int(x // multiple) * multiple))


def plan_for_bin(t: Dims, bin_no: int, bits: float, vocab: int | None = None,
                 fixed: dict | None = None) -> tuple[Dims, float]:
    """A student that fits `bin_no` at `bits` bits per decoder weight. Width shrinks first
    (hidden, FFN, heads, audio FFN together), depth only where half width does not fit (Minitron:
    width-pruned students distil better than depth-pruned ones). Dimensions given in `fixed` are
    kept as given.
    Returns the student and its estimated file bytes."""
    if bin_no not in BIN_LIMITS:
        raise TrainError(f"--bin {bin_no}: expected 1-5")
    if not 1.0 <= bits <= 16.0:
        raise TrainError(f"--bits {bits}: expected 1-16 bits per weight")
    limit = BIN_LIMITS[bin_no]
    fixed = fixed or {}
    group = t.heads // t.kv_heads
    per_depth = []  # (depth factor, widest fitting width factor, student, bytes)
    smallest = float("inf")
    for depth in (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25):
        for k in range(32, 3, -1):  # width 1.0 .. 0.125 in steps of 1/32
            w = k / 32
            kv = max(1, round(t.kv_heads * w))
            d = t.with_(
                hidden=_round(t.hidden * w, 64, 64, t.hidden),
                ffn=_round(t.ffn * w, 64, 64, t.ffn),
                kv_heads=kv, heads=kv * group,
                layers=max(2, round(t.layers * depth)),
                audio_layers=max(1, round(t.audio_layers * depth)),
                audio_ffn=_round(t.audio_ffn * w, 64, 64, t.audio_ffn),
            ).with_(**fixed)
            size = estimate_bytes(d, bits, vocab)
            smallest = min(smallest, size)
            if size < limit:
                per_depth.append((depth, w, d, size))
                break  # narrower students at this depth are smaller still
    # Width first, down to half of every dimension at full depth; then the deepest student that
    # keeps half width; below that, the largest by parameters.
    best = next((c for c in per_depth if c[1] >= 0.5), None)
    if best is None and per_depth:
        best = max(per_depth, key=lambda c: c[2].params(vocab)["total"])
    if best is None:
        raise TrainError(f"no student shape fits Bin{bin_no} (< {limit:,} bytes) at {bits} bits per weight: "
                         f"even the smallest searched ({smallest:,.0f} bytes) is too large; trim the vocabulary "
                         "(--vocab), use fewer bits, or fix fewer dimensions")
    return best[2], best[3]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores.float(), k).indices).values


def _spread(n: int, k: int) -> list[int]:
    """k of n layers, evenly spaced, always with the first and the last."""
    if k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _by_influence(bi: torch.Tensor, k: int) -> list[int]:
    n = len(bi)
    if k >= n:
        return list(range(n))
    if k < 2:
        return [0]
    inner = torch.topk(bi[1:-1].float(), k - 2).indices + 1
    return sorted([0, n - 1] + inner.tolist())


def select(t: Dims, s: Dims, state: dict[str, torch.Tensor], imp: dict[str, torch.Tensor] | None) -> Selection:
    """Which structures of the teacher `t` the student `s` keeps."""
    def w(name):
        return state[name].float()

    group = t.heads // t.kv_heads
    # Each stack uses activation importance when the file has it (text-only calibration has no
    # audio statistics), weight norms otherwise.
    llm_imp = imp if imp is not None and "llm.hidden" in imp else None
    audio_imp = imp if imp is not None and "audio.block_influence" in imp else None
    if llm_imp is not None:
        hidden = llm_imp["llm.hidden"]
        layers = _by_influence(llm_imp["llm.block_influence"], s.layers)
    else:
        hidden = w(EMBED).norm(dim=0)
        layers = _spread(t.layers, s.layers)
    if audio_imp is not None:
        audio_layers = _by_influence(audio_imp["audio.block_influence"], s.audio_layers)
    else:
        audio_layers = _spread(t.audio_layers, s.audio_layers)
    heads, kv, ffn, audio_ffn = {}, {}, {}, {}
    new_group = s.heads // s.kv_heads
    for i in layers:
        p = f"{LLM}layers.{i}."
        if llm_imp is not None:
            h, f = llm_imp[f"llm.layers.{i}.heads"], llm_imp[f"llm.layers.{i}.ffn"]
        else:
            o = w(p + "self_attn.o_proj.weight")
            h = o.reshape(o.shape[0], t.heads, t.head_dim).norm(dim=(0, 2))
            f = w(p + "mlp.down_proj.weight").norm(dim=0)
        kv_keep = _top(h.reshape(t.kv_heads, group).sum(-1), s.kv_heads)
        q_keep = torch.cat([g * group + _top(h.reshape(t.kv_heads, group)[g], new_group) for g in kv_keep.tolist()])
        heads[i], kv[i], ffn[i] = q_keep, kv_keep, _top(f, s.ffn)
    for i in audio_layers:
        if audio_imp is not None:
            f = audio_imp[f"audio.layers.{i}.ffn"]
        else:
            f = w(f"{AUDIO}layers.{i}.fc2.weight").norm(dim=0)
        audio_ffn[i] = _top(f, s.audio_ffn)
    def how(x):
        return "activation importance" if x is not None else "weight norms"
    ranked = f"decoder: {how(llm_imp)}"
    if (s.audio_layers, s.audio_ffn) != (t.audio_layers, t.audio_ffn):
        ranked += f", audio encoder: {how(audio_imp)}"
    return Selection(_top(hidden, s.hidden), layers, heads, kv, ffn, audio_layers, audio_ffn, ranked)


def _head_rows(idx: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (idx[:, None] * head_dim + torch.arange(head_dim)[None]).reshape(-1)


def apply(state: dict[str, torch.Tensor], t: Dims, sel: Selection) -> dict[str, torch.Tensor]:
    """The student's tensors, cut out of the teacher's `state` (same names, layers renumbered)."""
    h = sel.hidden
    out: dict[str, torch.Tensor] = {}
    used = set()

    def take(name: str, new_name: str | None = None, rows=None, cols=None) -> None:
        if name not in state:
            raise TrainError(f"the checkpoint has no tensor {name}")
        x = state[name]
        if rows is not None:
            x = x.index_select(0, rows)
        if cols is not None:
            x = x.index_select(1, cols)
        out[new_name or name] = x.clone()
        used.add(name)

    take(EMBED, cols=h)
    take(LM_HEAD, cols=h)
    take(LLM + "norm.weight", rows=h)
    take(PROJ + "weight", rows=h)
    take(PROJ + "bias", rows=h)
    for j, i in enumerate(sel.layers):
        p, q = f"{LLM}layers.{i}.", f"{LLM}layers.{j}."
        qr, kvr = _head_rows(sel.heads[i], t.head_dim), _head_rows(sel.kv[i], t.head_dim)
        for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            take(p + n, q + n, rows=h)
        take(p + "self_attn.q_proj.weight", q + "self_attn.q_proj.weight", rows=qr, cols=h)
        take(p + "self_attn.q_proj.bias", q + "self_attn.q_proj.bias", rows=qr)
        for n in ("k_proj", "v_proj"):
            take(p + f"self_attn.{n}.weight", q + f"self_attn.{n}.weight", rows=kvr, cols=h)
            take(p + f"self_attn.{n}.bias", q + f"self_attn.{n}.bias", rows=kvr)
        take(p + "self_attn.o_proj.weight", q + "self_attn.o_proj.weight", rows=h, cols=qr)
        f = sel.ffn[i]
        take(p + "mlp.gate_proj.weight", q + "mlp.gate_proj.weight", rows=f, cols=h)
        take(p + "mlp.up_proj.weight", q + "mlp.up_proj.weight", rows=f, cols=h)
        take(p + "mlp.down_proj.weight", q + "mlp.down_proj.weight", rows=h, cols=f)
    for j, i in enumerate(sel.audio_layers):
        p, q = f"{AUDIO}layers.{i}.", f"{AUDIO}layers.{j}."
        f = sel.audio_ffn[i]
        for name in [n for n in state if n.startswith(p)]:
            new = q + name[len(p):]
            if name == p + "fc1.weight" or name == p + "fc1.bias":
                take(name, new, rows=f)
            elif name == p + "fc2.weight":
                take(name, new, cols=f)
            else:
                take(name, new)
    # Everything else (convolutions, positions, encoder norms) is carried unchanged.
    for name, x in state.items():
        if name.startswith(f"{LLM}layers.") or name.startswith(f"{AUDIO}layers.") or name in used:
            continue
        out[name] = x.clone()
    return out


def student_config(cfg: dict, s: Dims) -> dict:
    c = copy.deepcopy(cfg)
    tc, ac = c["text_config"], c["audio_config"]
    tc.update(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
              num_key_value_heads=s.kv_heads, head_dim=s.head_dim, intermediate_size=s.ffn)
    if isinstance(tc.get("layer_types"), list):
        tc["layer_types"] = tc["layer_types"][: s.layers]
    if "max_window_layers" in tc:
        tc["max_window_layers"] = min(int(tc["max_window_layers"]), s.layers)
    ac.update(encoder_layers=s.audio_layers, encoder_ffn_dim=s.audio_ffn)
    return c
