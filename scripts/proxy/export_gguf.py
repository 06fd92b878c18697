#!/usr/bin/env python3
"""Writes the proxy's LLM as unquantized GGUF files for llama.cpp.

The proxy's LLM (scripts/proxy/build_proxy.py) holds the values of the
Qwen2.5 GGUF ($KOMPAKT_DATA/qwen2.5-0.5b.gguf, tensors in Q5_0/Q8_0/Q4_K/Q6_K)
dequantized to float32 by the `gguf` package. This script does the same
dequantization and writes

  OUT/proxy-llm-f32.gguf   every tensor F32: exactly the values kompakt converts
  OUT/proxy-llm-f16.gguf   weight matrices F16 (norms and biases stay F32, as
                           llama.cpp's own converter does), llama.cpp's "F16" row

with every metadata key of the source (architecture, hyperparameters,
tokenizer, chat template) copied unchanged except `general.file_type`. Every
llama.cpp quantization of the peer comparison is made from the F32 file, so
llama.cpp and kompakt quantize the same numbers.

--verify CHECKPOINT compares the F32 values with the proxy checkpoint's
safetensors (language_model.* tensors) and fails on any difference.

Usage:
    pip install -r scripts/proxy/requirements-gguf.txt
    python3 scripts/proxy/export_gguf.py [--src $KOMPAKT_DATA/proxy/dl/qwen2.5-coder-0.5b-instruct.gguf]
        [--out $KOMPAKT_DATA/proxy/gguf] [--verify $KOMPAKT_DATA/proxy/checkpoint]

KOMPAKT_DATA defaults to ~/kompakt-data.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
except ImportError:  # pragma: no cover - message for the user
    sys.exit("the `gguf` package is missing: pip install -r scripts/proxy/requirements-gguf.txt")

# llama_ftype values (llama.h): ALL_F32 = 0, MOSTLY_F16 = 1.
FTYPE = {"f32": 0, "f16": 1}


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, ftype: int) -> None:
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer adds these itself
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_file_type(ftype)


def export(src: Path, out: Path, kind: str) -> Path:
    reader = gguf.GGUFReader(str(src))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    path = out / f"proxy-llm-{kind}.gguf"
    tmp = path.with_suffix(".gguf.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    copy_metadata(reader, writer, FTYPE[kind])
    for t in reader.tensors:
        # ggml's ne is the reverse of numpy's shape.
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        a = np.ascontiguousarray(dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32))
        if kind == "f16" and a.ndim == 2:
            a = a.astype(np.float16)
        writer.add_tensor(t.name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    tmp.rename(path)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(reader.tensors)} tensors)")
    return path


# GGUF tensor name -> Hugging Face name in the proxy checkpoint.
def hf_name(name: str) -> str:
    fixed = {
        "token_embd.weight": "language_model.model.embed_tokens.weight",
        "output_norm.weight": "language_model.model.norm.weight",
        "output.weight": "language_model.lm_head.weight",
    }
    if name in fixed:
        return fixed[name]
    _, layer, rest = name.split(".", 2)
    part = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    stem, kind = rest.rsplit(".", 1)
    return f"language_model.model.layers.{layer}.{part[stem]}.{kind}"


def verify(path: Path, checkpoint: Path) -> None:
    from safetensors.numpy import load_file

    ref = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        ref.update({k: v for k, v in load_file(str(shard)).items() if k.startswith("language_model.")})
    r = gguf.GGUFReader(str(path))
    seen = set()
    for t in r.tensors:
        n = hf_name(t.name)
        a = np.asarray(t.data, dtype=np.float32).reshape(ref[n].shape)
        if not np.array_equal(a, ref[n].astype(np.float32)):
            sys.exit(f"verify: {t.name} differs from {n} (max |d| {np.abs(a - ref[n]).max()})")
        seen.add(n)
    missing = set(ref) - seen
    if missing:
        sys.exit(f"verify: checkpoint tensors not in the GGUF: {sorted(missing)[:5]} ...")
    print(f"verify: {len(seen)} tensors of {path.name} equal the checkpoint's bit for bit")


# Data directory: $KOMPAKT_DATA, default ~/kompakt-data.
DATA = Path(os.environ.get("KOMPAKT_DATA", os.path.expanduser("~/kompakt-data")))
# Where scripts/quant-quality/extract.py and scripts/proxy/build_proxy.py put the same GGUF.
SOURCES = [DATA / "qwen2.5-0.5b.gguf", DATA / "proxy/dl/qwen2.5-coder-0.5b-instruct.gguf"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, help="the Qwen2.5 GGUF (default: the first of " + ", ".join(map(str, SOURCES)) + " that exists)")
    ap.add_argument("--out", type=Path, default=DATA / "proxy/gguf")
    ap.add_argument("--types", default="f32,f16", help="comma list of f32, f16")
    ap.add_argument("--verify", type=Path, help="proxy checkpoint dir to compare the F32 file with")
    a = ap.parse_args()
    if a.src is None:
        a.src = next((p for p in SOURCES if p.is_file()), SOURCES[0])
    if not a.src.is_file():
        sys.exit(f"{a.src} not found: build it with scripts/proxy/build_proxy.py (it concatenates the GGUF "
                 f"into {SOURCES[1]}) or scripts/quant-quality/extract.py ({SOURCES[0]})")
    a.out.mkdir(parents=True, exist_ok=True)
    for kind in a.types.split(","):
        p = export(a.src, a.out, kind)
        if kind == "f32" and a.verify:
            verify(p, a.verify)


if __name__ == "__main__":
    main()
