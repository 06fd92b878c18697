"""The dimensions of a Qwen2-Audio checkpoint that pruning changes, their parameter counts, and
the names of the modules and tensors involved (the published checkpoint layout)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from .errors import TrainError

LLM = "language_model.model."
LM_HEAD = "language_model.lm_head.weight"
EMBED = LLM + "embed_tokens.weight"
PROJ = "multi_modal_projector.linear."
AUDIO = "audio_tower."

# Module names inside the transformers model (Qwen2AudioForConditionalGeneration in
# transformers 5: model.language_model.layers.N, model.audio_tower.layers.N); older layouts put
# `language_model.model.layers.N` there, so both are matched.
LLM_LAYER_RE = re.compile(r"(?:^|\.)language_model(?:\.model)?\.layers\.(\d+)$")
AUDIO_LAYER_RE = re.compile(r"(?:^|\.)audio_tower\.layers\.(\d+)$")

# IWSLT 2025 bins: upper limits in bytes (the stricter 10^6 reading of "MB").
BIN_LIMITS = {1: 4_000_000_000, 2: 2_000_000_000, 3: 1_000_000_000, 4: 500_000_000, 5: 200_000_000}


@dataclass(frozen=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    d_model: int
    audio_layers: int
    audio_heads: int
    audio_ffn: int
    n_mels: int
    audio_positions: int

    @staticmethod
    def from_config(cfg: dict) -> "Dims":
        t, a = cfg["text_config"], cfg["audio_config"]
        try:
            hidden = int(t.get("hidden_size", 4096))
            heads = int(t.get("num_attention_heads", 32))
            return Dims(
                hidden=hidden,
                layers=int(t.get("num_hidden_layers", 32)),
                heads=heads,
                kv_heads=int(t.get("num_key_value_heads", heads)),
                head_dim=int(t.get("head_dim") or hidden // heads),
                ffn=int(t.get("intermediate_size", 11008)),
                vocab=int(t.get("vocab_size", 156032)),
                d_model=int(a.get("d_model", 1280)),
                audio_layers=int(a.get("encoder_layers", 32)),
                audio_heads=int(a.get("encoder_attention_heads", 20)),
                audio_ffn=int(a.get("encoder_ffn_dim", 5120)),
                n_mels=int(a.get("num_mel_bins", 128)),
                audio_positions=int(a.get("max_source_positions", 1500)),
            )
        except (TypeError, ValueError) as e:
            raise TrainError(f"config.json: a dimension is not an integer ({e})") from None

    def with_(self, **kw) -> "Dims":
        return replace(self, **kw)

    def as_dict(self) -> dict:
        return asdict(self)

    # Parameter counts (weights and biases, as stored).
    def llm_layer_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = self.hidden * (q + 2 * kv) + (q + 2 * kv) + q * self.hidden
        return attn + 3 * self.hidden * self.ffn + 2 * self.hidden

    def audio_layer_params(self) -> int:
        d, f = self.d_model, self.audio_ffn
        return 4 * d * d + 3 * d + 2 * d * f + f + d + 4 * d

    def params(self, vocab: int | None = None) -> dict:
        v = self.vocab if vocab is None else vocab
        audio_fixed = (self.n_mels * self.d_model * 3 + self.d_model + self.d_model * self.d_model * 3
                       + self.d_model + self.audio_positions * self.d_model + 2 * self.d_model)
        parts = {
            "llm_layers": self.layers * self.llm_layer_params(),
            "embed_tokens": v * self.hidden,
            "lm_head": v * self.hidden,
            "audio_encoder": self.audio_layers * self.audio_layer_params() + audio_fixed,
            "projector": self.d_model * self.hidden + self.hidden,
            "final_norm": self.hidden,
        }
        parts["total"] = sum(parts.values())
        return parts

    def check(self, original: "Dims") -> None:
        """Refuses student dimensions that cannot be cut out of `original`."""
        def bad(msg: str) -> None:
            raise TrainError(msg)
        for name in ("hidden", "layers", "heads", "kv_heads", "ffn", "audio_layers", "audio_ffn"):
            v, o = getattr(self, name), getattr(original, name)
            if v < 1:
                bad(f"--{name.replace('_', '-')} {v}: must be at least 1")
            if v > o:
                bad(f"--{name.replace('_', '-')} {v}: the teacher has only {o}")
        if self.heads % self.kv_heads:
            bad(f"--heads {self.heads} is not a multiple of --kv-heads {self.kv_heads}: "
                "every KV head must serve the same number of query heads")
        if self.heads // self.kv_heads > original.heads // original.kv_heads:
            bad(f"--heads {self.heads} / --kv-heads {self.kv_heads} = {self.heads // self.kv_heads} query heads "
                f"per KV head, but the teacher's KV groups have {original.heads // original.kv_heads}: "
                "pruning keeps whole KV groups and query heads within them")
