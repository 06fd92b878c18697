"""Activation-based importance of every prunable structure (Minitron, Muralidharan et al. 2024,
section 2.2), from forward passes over calibration text and speech; no gradients.

For each decoder layer `l` (LLM) and audio encoder layer:
  * `llm.layers.l.ffn`     [ffn]      FFN neuron: mean over tokens of the squared input of
                                      `down_proj` (= act(gate) * up), i.e. the neuron's
                                      mean-square activation.
  * `llm.layers.l.heads`   [heads]    attention head: mean over tokens of the squared L2 norm of
                                      the head's slice of `o_proj`'s input (its attention output).
  * `llm.layers.l.kv_groups` [kv]     sum of `heads` over the query heads that share a KV head.
  * `llm.hidden`           [hidden]   hidden channel: mean square of the RMSNorm outputs, summed
                                      over every norm of the stack (Minitron's LayerNorm-based
                                      embedding-channel score).
  * `llm.block_influence`  [layers]   ShortGPT's 1 - mean cos(h_in, h_out) of each block.
Audio: `audio.layers.l.ffn` (input of fc2), `audio.layers.l.heads` (input of out_proj),
`audio.hidden` (LayerNorm outputs), `audio.block_influence`; audio statistics count only the
frames of real audio, not the padding to 30 s.

Mean squares rather than Minitron's mean of |x|: the same ranking on Gaussian-like activations,
and the same statistic as the importance matrix of `kompakt calibrate`. The file is a
safetensors file of f32 vectors with the token and clip counts in its metadata.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from .arch import AUDIO_LAYER_RE, LLM_LAYER_RE, Dims
from .errors import TrainError


class Meter:
    """Forward hooks that accumulate the statistics above on a transformers Qwen2-Audio model."""

    def __init__(self, model, dims: Dims):
        self.dims = dims
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(0))
        self.counts: dict[str, float] = defaultdict(float)
        self.audio_valid: int | None = None  # valid encoder frames of the clip being run
        self.handles = []
        for name, mod in model.named_modules():
            if m := LLM_LAYER_RE.search(name):
                self._hook_layer("llm", int(m.group(1)), mod, mod.mlp.down_proj, mod.self_attn.o_proj,
                                 dims.heads, dims.head_dim, (mod.input_layernorm, mod.post_attention_layernorm))
            elif m := AUDIO_LAYER_RE.search(name):
                self._hook_layer("audio", int(m.group(1)), mod, mod.fc2, mod.self_attn.out_proj,
                                 dims.audio_heads, dims.d_model // dims.audio_heads,
                                 (mod.self_attn_layer_norm, mod.final_layer_norm))
            elif name.endswith("language_model.norm") or name.endswith("language_model.model.norm"):
                self.handles.append(mod.register_forward_hook(self._norm_hook("llm")))
            elif name.endswith("audio_tower.layer_norm"):  # after the 2x average pool
                self.handles.append(mod.register_forward_hook(self._norm_hook("audio", pooled=True)))

    def _rows(self, stack: str, x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """[tokens, features] in f32; audio limited to the clip's real frames."""
        if stack == "audio" and self.audio_valid is not None and x.dim() == 3:
            x = x[:, : (self.audio_valid - 2) // 2 + 1 if pooled else self.audio_valid]
        return x.detach().float().reshape(-1, x.shape[-1])

    def _add(self, key: str, value: torch.Tensor, count: float) -> None:
        s = self.sums[key]
        self.sums[key] = value if s.numel() == 0 else s + value
        self.counts[key] += count

    def _norm_hook(self, stack: str, pooled: bool = False):
        def hook(_mod, _inp, out):
            r = self._rows(stack, out, pooled)
            self._add(f"{stack}.hidden", r.pow(2).sum(0), r.shape[0])
        return hook

    def _hook_layer(self, stack, idx, layer, ffn_out, attn_out, n_heads, head_dim, norms):
        pre = f"{stack}.layers.{idx}"

        def ffn_hook(_mod, inp):
            r = self._rows(stack, inp[0])
            self._add(f"{pre}.ffn", r.pow(2).sum(0), r.shape[0])

        def head_hook(_mod, inp):
            r = self._rows(stack, inp[0])
            per_head = r.reshape(r.shape[0], n_heads, head_dim).pow(2).sum(-1)
            self._add(f"{pre}.heads", per_head.sum(0), r.shape[0])

        def block_hook(_mod, args, kwargs, out):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = out[0] if isinstance(out, tuple) else out
            a, b = self._rows(stack, h_in), self._rows(stack, h_out)
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
            self._add(f"{stack}.block_influence.{idx}", (1 - cos).sum().reshape(1), a.shape[0])

        self.handles.append(ffn_out.register_forward_pre_hook(ffn_hook))
        self.handles.append(attn_out.register_forward_pre_hook(head_hook))
        self.handles.append(layer.register_forward_hook(block_hook, with_kwargs=True))
        for n in norms:
            self.handles.append(n.register_forward_hook(self._norm_hook(stack)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def result(self) -> dict[str, torch.Tensor]:
        out = {}
        for key, s in self.sums.items():
            if ".block_influence." in key:
                continue
            out[key] = (s / max(self.counts[key], 1.0)).float()
        for stack, n in (("llm", self.dims.layers), ("audio", self.dims.audio_layers)):
            keys = [f"{stack}.block_influence.{i}" for i in range(n)]
            if all(k in self.sums for k in keys):
                out[f"{stack}.block_influence"] = torch.cat(
                    [self.sums[k] / max(self.counts[k], 1.0) for k in keys]).float()
        group = self.dims.heads // self.dims.kv_heads
        for i in range(self.dims.layers):
            h = out.get(f"llm.layers.{i}.heads")
            if h is not None:
                out[f"llm.layers.{i}.kv_groups"] = h.reshape(self.dims.kv_heads, group).sum(-1)
        return out


def audio_valid_frames(feature_attention_mask: torch.Tensor) -> int:
    """Encoder positions carrying real audio (after conv2's stride 2), as the encoder computes them."""
    mel = int(feature_attention_mask.sum())
    return (mel - 1) // 2 + 1


@torch.no_grad()
def measure(model, dims: Dims, windows: list[torch.Tensor], prompts: list, log=print) -> tuple[dict, dict]:
    """Runs the model over text windows and speech prompts; returns (importance, counts)."""
    meter = Meter(model, dims)
    model.eval()
    t0 = time.time()
    tokens = 0
    try:
        for i, w in enumerate(windows):
            model(input_ids=w[None], use_cache=False)
            tokens += len(w)
            if (i + 1) % 10 == 0 or i + 1 == len(windows):
                log(f"importance: text {i + 1}/{len(windows)} windows, {tokens} tokens, {time.time() - t0:.0f} s")
        for i, p in enumerate(prompts):
            meter.audio_valid = audio_valid_frames(p.feature_attention_mask)
            model(input_ids=p.input_ids[None], input_features=p.input_features[None],
                  feature_attention_mask=p.feature_attention_mask[None], use_cache=False)
            meter.audio_valid = None
            tokens += len(p.input_ids)
            log(f"importance: speech {i + 1}/{len(prompts)} prompts, {time.time() - t0:.0f} s")
    finally:
        meter.remove()
    imp = meter.result()
    if not imp:
        raise TrainError("no calibration input was run (give --text and/or --audio)")
    counts = {"text_windows": len(windows), "speech_prompts": len(prompts), "tokens": tokens,
              "seconds": round(time.time() - t0, 1)}
    return imp, counts


def save(path: str | Path, imp: dict[str, torch.Tensor], dims: Dims, counts: dict, teacher: str) -> None:
    meta = {"format": "kompakt-train importance 1", "dims": json.dumps(dims.as_dict()),
            "counts": json.dumps(counts), "teacher": teacher}
    p = Path(path)
    tmp = p.with_name(p.name + ".partial")
    save_file({k: v.contiguous() for k, v in sorted(imp.items())}, str(tmp), metadata=meta)
    tmp.replace(p)


def load(path: str | Path, dims: Dims) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    p = Path(path)
    try:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
            imp = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise TrainError(f"{p}: no such importance file") from None
    except (SafetensorError, OSError) as e:
        raise TrainError(f"{p}: not a safetensors importance file ({e})") from None
    if meta.get("format") != "kompakt-train importance 1":
        raise TrainError(f"{p}: not written by `kompakt-train importance`")
    stored = json.loads(meta.get("dims", "{}"))
    if stored != dims.as_dict():
        diff = {k: (stored.get(k), v) for k, v in dims.as_dict().items() if stored.get(k) != v}
        raise TrainError(f"{p}: measured on a model with other dimensions ({diff}: file, teacher)")
    return imp

