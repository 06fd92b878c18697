#!/usr/bin/env python3
"""Writes llama.cpp's files for Qwen2-Audio's audio path (libmtmd) from a
Hugging Face checkpoint, without the 15 GB LLM:

  OUT/mmproj-qwen2a-{f16,q8_0}.gguf   audio tower + projector ("mmproj")
  OUT/qwen2a-vocab.gguf                the LLM's hyperparameters and tokenizer,
                                       no tensors (llama.cpp's --vocab-only)

Why not llama.cpp's `convert_hf_to_gguf.py --mmproj`: the copy vendored in
`llama-cpp-sys-2` 0.1.161 cannot run, it imports the `conversion` package
that the crate does not ship (ModuleNotFoundError: No module named
'conversion'). This script writes what that converter's
`WhisperEncoderModel` (registered for Qwen2AudioForConditionalGeneration)
and `MmprojModel` write, with the same `gguf` package (0.19.0):

- metadata: general.architecture "clip", general.type "mmproj",
  general.file_type, clip.has_audio_encoder, clip.projector_type "qwen2a",
  clip.audio.{embedding_length, feed_forward_length, block_count,
  attention.head_count, attention.layer_norm_epsilon, num_mel_bins,
  projection_dim};
- names: gguf.TensorNameMap(MMPROJ), `multi_modal_projector.*` renamed
  `audio.multi_modal_projector.*` first (-> mm.a.fc), conv biases reshaped
  to [C, 1];
- types (ModelBase.prepare_tensors + tensor_force_quant): convolution
  weights F16; 1-D tensors, biases and the position embedding F32; every
  other matrix F16 or Q8_0 (`--outtype`), Q8_0 by `gguf.quants.quantize`.

The vocab-only file exists because libmtmd needs a text model for
Qwen2-Audio: `mtmd_tokenize` wraps each audio chunk in the <|audio_bos|> /
<|audio_eos|> tokens and throws "llama_vocab is not provided" without one.
llama.cpp loads it with `vocab_only`: no weights and no hyperparameters
(its n_embd reads 0, so libmtmd skips the width check a full model gets).

Usage:
    python3 scripts/mtmd/export_mmproj.py [--checkpoint $KOMPAKT_DATA/synth-7b] \
        [--out $KOMPAKT_DATA/mtmd] [--outtype f16 q8_0]

KOMPAKT_DATA defaults to ~/kompakt-data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
    import torch
    from safetensors import safe_open
except ImportError as e:  # pragma: no cover - message for the user
    sys.exit(f"missing package ({e.name}): pip install gguf==0.19.0 torch safetensors")

QTYPE = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
FTYPE = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


def load_config(ckpt: Path) -> dict:
    path = ckpt / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        sys.exit(f"{path}: {e}")
    if "Qwen2AudioForConditionalGeneration" not in cfg.get("architectures", []):
        sys.exit(f"{path}: not a Qwen2AudioForConditionalGeneration checkpoint")
    return cfg


def audio_tensors(ckpt: Path):
    """(name, float32 tensor) of the audio tower and projector, shard by shard."""
    index = ckpt / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
    else:
        weight_map = None
    files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
    for f in files:
        with safe_open(ckpt / f, framework="pt") as st:
            for name in st.keys():
                if name.startswith("language_model."):
                    continue
                yield name, st.get_tensor(name).to(torch.float32)


def write_mmproj(ckpt: Path, cfg: dict, out: Path, outtype: str) -> Path:
    a = cfg["audio_config"]
    n_layers = a["encoder_layers"]
    path = out / f"mmproj-qwen2a-{outtype}.gguf"
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_file_type(FTYPE[outtype])
    w.add_clip_has_audio_encoder(True)
    w.add_audio_projection_dim(cfg["text_config"]["hidden_size"])
    w.add_audio_embedding_length(a["d_model"])
    w.add_audio_feed_forward_length(a["encoder_ffn_dim"])
    w.add_audio_block_count(n_layers)
    w.add_audio_head_count(a["encoder_attention_heads"])
    w.add_clip_projector_type(gguf.VisionProjectorType.QWEN2A)
    w.add_audio_num_mel_bins(a["num_mel_bins"])
    w.add_audio_attention_layernorm_eps(a.get("layer_norm_eps", 1e-5))

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, n_layers)
    counts: dict[str, int] = {}
    for name, t in audio_tensors(ckpt):
        if name.startswith("multi_modal_projector"):
            name = "audio." + name
        if "conv1.bias" in name or "conv2.bias" in name:
            t = t.unsqueeze(-1)
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            sys.exit(f"{ckpt}: no GGUF name for tensor {name}")
        data = t.numpy()
        if ".conv" in name and name.endswith(".weight"):
            qtype = gguf.GGMLQuantizationType.F16
        elif data.ndim <= 1 or not new.endswith(".weight") or new.startswith("a.position_embd"):
            qtype = gguf.GGMLQuantizationType.F32
        else:
            qtype = QTYPE[outtype]
            if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 != 0:
                qtype = gguf.GGMLQuantizationType.F16
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(new, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(new, data.astype(np.float16))
        else:
            w.add_tensor(new, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{path}: {sum(counts.values())} tensors {counts}, {path.stat().st_size} bytes")
    return path


def write_vocab(ckpt: Path, cfg: dict, out: Path) -> Path:
    t = cfg["text_config"]
    path = out / "qwen2a-vocab.gguf"
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2])
    w.add_context_length(t.get("max_position_embeddings", 8192))
    w.add_embedding_length(t["hidden_size"])
    w.add_block_count(t["num_hidden_layers"])
    w.add_feed_forward_length(t["intermediate_size"])
    w.add_head_count(t["num_attention_heads"])
    w.add_head_count_kv(t.get("num_key_value_heads", t["num_attention_heads"]))
    w.add_layer_norm_rms_eps(t.get("rms_norm_eps", 1e-6))
    w.add_rope_freq_base(t.get("rope_theta", 10000.0))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    tok_path = ckpt / "tokenizer.json"
    try:
        tok = json.loads(tok_path.read_text())
    except OSError as e:
        sys.exit(f"{tok_path}: {e}")
    by_id: dict[int, tuple[str, int]] = {
        i: (s, gguf.TokenType.NORMAL) for s, i in tok["model"]["vocab"].items()
    }
    for at in tok.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if at.get("special") else gguf.TokenType.USER_DEFINED
        by_id[at["id"]] = (at["content"], kind)
    n_vocab = max(t.get("vocab_size", 0), max(by_id) + 1)
    tokens, types = [], []
    for i in range(n_vocab):  # padded like convert_hf_to_gguf's _set_vocab_gpt2
        s, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(s)
        types.append(kind)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(ckpt, load_merges=True, n_vocab=n_vocab).add_to_gguf(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{path}: vocab only, {n_vocab} tokens, {path.stat().st_size} bytes")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = Path(os.environ.get("KOMPAKT_DATA", os.path.expanduser("~/kompakt-data")))
    p.add_argument("--checkpoint", type=Path, default=data / "synth-7b")
    p.add_argument("--out", type=Path, default=data / "mtmd")
    p.add_argument("--outtype", nargs="+", choices=sorted(QTYPE), default=["f16", "q8_0"])
    args = p.parse_args()
    cfg = load_config(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    for o in args.outtype:
        write_mmproj(args.checkpoint, cfg, args.out, o)
    write_vocab(args.checkpoint, cfg, args.out)


if __name__ == "__main__":
    main()
