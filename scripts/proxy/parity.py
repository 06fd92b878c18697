#!/usr/bin/env python3
"""Parity of kompakt's runtime against transformers on the Qwen2-Audio proxy (realistic scale).

1. converts the proxy checkpoint with `kompakt convert --dtype f32` (unless the .kpk exists);
2. text: 5 held-out windows (2 en, 2 de, 1 zh) of --tokens tokens: full logits from
   `kompakt eval --dump` vs transformers (f32, eager), and 32-token greedy continuations;
3. speech: 3 espeak-ng clips with the chat prompt (de instruction): prompt ids, encoder output
   rows, full prompt logits, and greedy output of `kompakt translate --json` vs `generate`.

Tolerance: max |logit_kompakt - logit_hf| / max |logit_hf| < 1e-3 per sequence. Both sides
compute in f32 with different summation orders (kompakt: blocked SIMD dot products, chunked
prefill; torch: MKL/oneDNN GEMMs); over 24 layers the accumulated rounding is ~1e-6..1e-5
relative, while any real bug (wrong rope layout, mask, norm, bias) moves logits by O(1) (> 1e-1
relative). 1e-3 separates the two by two orders of magnitude on each side. Greedy continuations
must match exactly for --greedy tokens (ties aside, which are reported).

    python3 scripts/proxy/parity.py [--proxy $KOMPAKT_DATA/proxy] [--evaldata $KOMPAKT_DATA/evaldata] \
        [--kompakt target/release/kompakt]

KOMPAKT_DATA defaults to ~/kompakt-data.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

REL_TOL = 1e-3
INSTR_DE = "Translate the English speech into German:"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kompakt_cmd(args) -> list[str]:
    if args.kompakt:
        return [str(args.kompakt)]
    root = Path(__file__).resolve().parents[2]
    return ["cargo", "run", "--quiet", "--release", "--manifest-path", str(root / "Cargo.toml"), "-p",
            "kompakt-cli", "--"]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"parity: command failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return r.stdout


def read_wav16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return (x.astype(np.float32) / 32768.0)


def cmp_logits(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.abs(b).max())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "max_abs_logit": scale,
            "rel": float(d.max() / scale), "argmax_agree": float((a.argmax(-1) == b.argmax(-1)).mean())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("KOMPAKT_DATA", os.path.expanduser("~/kompakt-data")))
    ap.add_argument("--proxy", type=Path, default=data / "proxy")
    ap.add_argument("--evaldata", type=Path, default=data / "evaldata")
    ap.add_argument("--kompakt", type=Path, help="kompakt binary (default: cargo run --release -p kompakt-cli)")
    ap.add_argument("--tokens", type=int, default=96, help="tokens per text window")
    ap.add_argument("--greedy", type=int, default=32)
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, help="work dir (default PROXY/parity)")
    args = ap.parse_args()
    ckpt = args.proxy / "checkpoint"
    if not (ckpt / "config.json").exists():
        sys.exit(f"parity: {ckpt} has no checkpoint; run scripts/proxy/build_proxy.py --out {args.proxy}")
    for f in ("heldout/en.txt", "heldout/de.txt", "heldout/zh.txt", "audio"):
        if not (args.evaldata / f).exists():
            sys.exit(f"parity: {args.evaldata / f} missing; run scripts/evaldata/build.py --out {args.evaldata}")
    work = args.out or args.proxy / "parity"
    work.mkdir(parents=True, exist_ok=True)
    kpk = args.proxy / "kpk" / "proxy-f32.kpk"
    km = kompakt_cmd(args)
    if not kpk.exists():
        kpk.parent.mkdir(parents=True, exist_ok=True)
        log(f"kompakt convert --dtype f32 -> {kpk}")
        run(km + ["convert", "--checkpoint", str(ckpt), "--out", str(kpk), "--dtype", "f32"])

    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
    torch.manual_seed(0)
    proc = AutoProcessor.from_pretrained(str(ckpt))
    tok = proc.tokenizer

    # Text windows: 2 en, 2 de, 1 zh, from the middle of each held-out file.
    seqs, labels = [], []
    for lang, k in (("en", 2), ("de", 2), ("zh", 1)):
        ids = tok((args.evaldata / "heldout" / f"{lang}.txt").read_text(), add_special_tokens=False).input_ids
        for j in range(k):
            start = (len(ids) // (k + 1)) * (j + 1)
            seqs.append([int(x) for x in ids[start:start + args.tokens]])
            labels.append(f"{lang}[{start}:{start + args.tokens}]")
    (work / "ids.json").write_text(json.dumps({"text": seqs}))
    clips_dir = work / "clips"
    clips_dir.mkdir(exist_ok=True)
    clips = sorted((args.evaldata / "audio").glob("*.wav"))[:args.clips]
    for c in clips_dir.glob("*.wav"):
        c.unlink()
    for c in clips:
        (clips_dir / c.name).symlink_to(c.resolve())
    dump = work / "dump"
    log("kompakt eval --dump (text logits, greedy, speech prompt logits)")
    t0 = time.time()
    run(km + ["eval", "--dump", str(dump), "--model", str(kpk), "--ids", str(work / "ids.json"), "--window",
              str(args.tokens + args.greedy), "--greedy", str(args.greedy), "--audio", str(clips_dir),
              "--prompt-lang", "de", "--threads", str(args.threads)])
    log(f"  {time.time() - t0:.1f} s")
    log("kompakt translate --json (greedy)")
    tr = run(km + ["translate", "--model", str(kpk), "--lang", "de", "--json", "--max-tokens", str(args.greedy),
                   "--threads", str(args.threads)] + [str(clips_dir / c.name) for c in clips])
    translations = [json.loads(l) for l in tr.splitlines() if l.strip().startswith("{")]
    d = json.loads((dump / "dump.json").read_text())

    log("transformers f32 eager")
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(ckpt), dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    eos = [151643, 151645]
    gen_kw = dict(do_sample=False, repetition_penalty=1.0, top_k=None, top_p=None, temperature=1.0,
                  eos_token_id=eos, pad_token_id=151643)
    report = {"tolerance_rel": REL_TOL, "text": [], "speech": []}
    ok = True
    for k, (ids, label) in enumerate(zip(seqs, labels)):
        e = d["text"][k]
        ours = np.fromfile(dump / e["logits"], np.float32).reshape(e["rows"], e["vocab"])
        x = torch.tensor([ids])
        with torch.no_grad():
            ref = model(input_ids=x).logits[0].float().numpy()
            g = model.generate(input_ids=x, max_new_tokens=args.greedy, **gen_kw)[0, len(ids):].tolist()
        c = cmp_logits(ours, ref)
        same = 0
        while same < min(len(g), len(e["greedy"])) and g[same] == e["greedy"][same]:
            same += 1
        c.update({"window": label, "tokens": len(ids), "greedy_same_prefix": same, "greedy_len": len(g),
                  "hf_greedy_text": tok.decode(g)})
        good = c["rel"] < REL_TOL and same >= min(args.greedy, len(g))
        ok &= good
        report["text"].append(c)
        log(f"  text {label}: max|d| {c['max_abs']:.3g} / max|logit| {c['max_abs_logit']:.3g} = {c['rel']:.3g}, "
            f"argmax agree {c['argmax_agree']:.4f}, greedy same {same}/{len(g)} {'OK' if good else 'FAIL'}")

    prompt_text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio_url": "x"}, {"type": "text", "text": INSTR_DE}]}],
        add_generation_prompt=True, tokenize=False)
    captured = {}
    hook = model.model.multi_modal_projector.register_forward_hook(
        lambda m, inp, out: captured.__setitem__("enc", inp[0].detach()))
    for k, clip in enumerate(clips):
        e = d["audio"][k]
        wav = read_wav16(clip)
        inputs = proc(text=prompt_text, audio=wav, sampling_rate=16000, return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        with torch.no_grad():
            ref = model(**inputs).logits[0].float().numpy()
            enc = captured["enc"][0, :e["n_audio"]].numpy()
            g = model.generate(**inputs, max_new_tokens=args.greedy, **gen_kw)[0, len(ids):].tolist()
        ours = np.fromfile(dump / e["logits"], np.float32).reshape(e["rows"], e["vocab"])
        our_enc = np.fromfile(dump / e["encoder"], np.float32).reshape(e["n_audio"], e["d_model"])
        c = {"wav": clip.name, "ids_equal": ids == e["ids"], "prompt_tokens": len(ids), "n_audio": e["n_audio"]}
        if c["ids_equal"]:
            c.update(cmp_logits(ours, ref))
        enc_d = np.abs(our_enc.astype(np.float64) - enc)
        c["encoder_rel"] = float(enc_d.max() / np.abs(enc).max())
        kg = translations[k]["token_ids"] if k < len(translations) else []
        same = 0
        while same < min(len(g), len(kg)) and g[same] == kg[same]:
            same += 1
        c.update({"greedy_same_prefix": same, "greedy_len_hf": len(g), "greedy_len_kompakt": len(kg),
                  "hf_greedy_text": tok.decode(g, skip_special_tokens=True)})
        good = c["ids_equal"] and c["rel"] < REL_TOL and c["encoder_rel"] < REL_TOL and same == len(g) == len(kg)
        ok &= good
        report["speech"].append(c)
        log(f"  speech {clip.name}: ids equal {c['ids_equal']} ({len(ids)} tokens, {e['n_audio']} audio), "
            f"encoder rel {c['encoder_rel']:.3g}, logits rel {c.get('rel', float('nan')):.3g}, argmax agree "
            f"{c.get('argmax_agree', float('nan')):.4f}, greedy same {same}/{len(g)} (kompakt {len(kg)}) "
            f"{'OK' if good else 'FAIL'}")
    hook.remove()
    report["pass"] = bool(ok)
    (work / "parity.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"{'PASS' if ok else 'FAIL'}; details in {work / 'parity.json'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
