"""`kompakt-train`: importance, prune, distill, qat.

    kompakt-train importance --teacher DIR --text F... [--audio DIR] --out imp.safetensors
    kompakt-train prune --teacher DIR --out DIR [--importance imp.safetensors]
                        [--llm-layers N] [--hidden H] [--ffn F] [--heads A --kv-heads K]
                        [--audio-layers N] [--audio-ffn F] | [--bin N --bits B [--vocab V]] [--dry-run]
    kompakt-train distill --teacher DIR --student DIR --out DIR --text F... [--steps N | --tokens N] [--json]
    kompakt-train qat --codes CODES --teacher DIR --student DIR --out DIR --text F... [--steps N | --tokens N]
        (CODES from `kompakt convert --checkpoint STUDENT ... --export-codes CODES`)

Multi-GPU / multi-node: `accelerate launch [--config_file fsdp.yaml] -m kompakt_train distill ...`
or `torchrun --nproc_per_node N -m kompakt_train distill ...`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from .errors import TrainError


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cmd_importance(a) -> int:
    import torch

    from . import checkpoint as ckpt
    from . import importance
    from .arch import Dims
    from .data import clips_from_dir, load_tokenizer, speech_prompts, text_windows

    if not a.text and not a.audio:
        raise TrainError("give calibration data: --text FILE... and/or --audio DIR")
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = ckpt.read_config(a.teacher)
    dims = Dims.from_config(cfg)
    tok = load_tokenizer(Path(a.teacher))
    windows = text_windows(tok, a.text, a.window, a.max_tokens) if a.text else []
    prompts = speech_prompts(Path(a.teacher), clips_from_dir(a.audio), a.lang) if a.audio else []
    model = ckpt.load_model(a.teacher)
    imp, counts = importance.measure(model, dims, windows, prompts, log=log)
    importance.save(a.out, imp, dims, counts, ckpt.fingerprint(a.teacher))
    log(f"wrote {a.out}: {len(imp)} vectors from {counts['tokens']} tokens "
        f"({counts['text_windows']} windows, {counts['speech_prompts']} speech prompts)")
    return 0


def cmd_prune(a) -> int:
    from . import checkpoint as ckpt
    from . import importance, prune
    from .arch import Dims

    cfg = ckpt.read_config(a.teacher)
    t = Dims.from_config(cfg)
    given = {k: v for k, v in {
        "layers": a.llm_layers, "hidden": a.hidden, "ffn": a.ffn, "heads": a.heads, "kv_heads": a.kv_heads,
        "audio_layers": a.audio_layers, "audio_ffn": a.audio_ffn}.items() if v is not None}
    if (a.heads is None) != (a.kv_heads is None) and t.heads != t.kv_heads:
        raise TrainError("give --heads and --kv-heads together (the teacher shares KV heads)")
    if a.heads is not None and a.kv_heads is None:
        given["kv_heads"] = a.heads
    kept = None
    if a.keep_vocab:
        from . import vocab
        rows = int(cfg["text_config"]["vocab_size"])
        kept = vocab.select(Path(a.teacher), rows, a.keep_vocab)
        if a.vocab is not None and a.vocab != len(kept):
            raise TrainError(f"--vocab {a.vocab} disagrees with --keep-vocab, which keeps {len(kept)} ids")
        a.vocab = len(kept)
        log(f"vocabulary: {len(kept):,} of {rows:,} ids kept ({' '.join(a.keep_vocab)}; the rules of "
            f"`kompakt convert --keep-vocab`)")
    if a.bin is not None:
        if a.bits is None:
            raise TrainError("--bin needs --bits (bits per decoder weight the student will be stored at)")
        s, size = prune.plan_for_bin(t, a.bin, a.bits, a.vocab, given)
    else:
        if a.bits is not None:
            raise TrainError("--bits is used with --bin")
        s, size = t.with_(**given), None
    s.check(t)
    tp, sp = t.params(), s.params(a.vocab)
    log("plan (teacher -> student):")
    for name in ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "audio_layers", "audio_ffn"):
        log(f"  {name:13s} {getattr(t, name):>7} -> {getattr(s, name)}")
    log(f"  decoder blocks {tp['llm_layers']:,} -> {sp['llm_layers']:,} parameters "
        f"({100 * sp['llm_layers'] / tp['llm_layers']:.1f} %)")
    log(f"  total          {tp['total']:,} -> {sp['total']:,} parameters"
        + (f" (vocabulary {a.vocab:,} rows)" if a.vocab else ""))
    if size is not None:
        log(f"  estimated file at {a.bits} bits per decoder weight: {size / 1e6:,.0f} MB (Bin{a.bin} < "
            f"{prune.BIN_LIMITS[a.bin] / 1e6:,.0f} MB)")
    if a.dry_run:
        print(json.dumps({"teacher": t.as_dict(), "student": s.as_dict(), "params": sp,
                          "estimated_bytes": size}, indent=2))
        return 0
    if a.out is None:
        raise TrainError("--out is required (or --dry-run)")
    out = ckpt.OutputDir(a.out, overwrite=a.overwrite)  # refuses an existing --out before any work
    with out:
        imp = importance.load(a.importance, t) if a.importance else None
        state = ckpt.read_state_dict(a.teacher)
        sel = prune.select(t, s, state, imp)
        student = prune.apply(state, t, sel)
        prov = {"teacher": str(a.teacher), "teacher_hash": ckpt.fingerprint(a.teacher),
                "teacher_dims": t.as_dict(), "student_dims": s.as_dict(),
                "teacher_params": tp["total"], "student_params": s.params()["total"],
                "importance": str(a.importance) if a.importance else None,
                "steps_done": [{"stage": "prune", **sel.summary(t)}]}
        if a.bin is not None:
            prov["plan"] = {"bin": a.bin, "bits": a.bits, "vocab": a.vocab, "estimated_bytes": size}
        if kept is not None:
            prov["steps_done"][0]["vocab"] = {"rule": a.keep_vocab, "kept": len(kept)}
        ckpt.write_checkpoint(out.path, student, prune.student_config(cfg, s), Path(a.teacher), prov)
        if kept is not None:
            vocab.write(out.path, kept, a.keep_vocab)
        out.commit()
    log(f"wrote {a.out}: {s.params()['total']:,} parameters (ranked by {sel.ranked_by})")
    return 0


def cmd_distill(a) -> int:
    from . import distill

    known = {f.name for f in fields(distill.DistillConfig)}
    cfg = distill.DistillConfig(**{k: v for k, v in vars(a).items() if k in known and v is not None})
    result = distill.run(cfg, log=log)
    if a.json:
        from accelerate import PartialState
        if PartialState().is_main_process:
            print(json.dumps(result, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kompakt-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    i = sub.add_parser("importance", help="activation importance of neurons, heads, channels and layers")
    i.add_argument("--teacher", required=True, help="Qwen2-Audio checkpoint directory")
    i.add_argument("--text", nargs="+", default=[], help="UTF-8 calibration text files")
    i.add_argument("--audio", help="directory of 16 kHz WAV clips (speech calibration)")
    i.add_argument("--lang", nargs="+", default=["de"], help="prompt languages for the speech clips")
    i.add_argument("--window", type=int, default=256, help="tokens per text window (default 256)")
    i.add_argument("--max-tokens", type=int, help="at most this many tokens per text file")
    i.add_argument("--threads", type=int)
    i.add_argument("--out", required=True, help="output .safetensors")
    i.set_defaults(fn=cmd_importance)

    r = sub.add_parser("prune", help="cut a student out of the teacher")
    r.add_argument("--teacher", required=True)
    r.add_argument("--out", help="student checkpoint directory (must not exist)")
    r.add_argument("--importance", help="file from `kompakt-train importance` (default: rank by weight norms)")
    for name, h in (("llm-layers", "decoder layers"), ("hidden", "decoder hidden size"),
                    ("ffn", "decoder FFN size"), ("heads", "attention heads"), ("kv-heads", "KV heads"),
                    ("audio-layers", "audio encoder layers"), ("audio-ffn", "audio encoder FFN size")):
        r.add_argument(f"--{name}", type=int, help=f"student's {h} (default: the teacher's)")
    r.add_argument("--bin", type=int, help="choose the dimensions to fit this IWSLT bin (1-5)")
    r.add_argument("--bits", type=float, help="with --bin: bits per decoder weight of the final file")
    r.add_argument("--vocab", type=int, help="with --bin: vocabulary rows the file will keep "
                   "(after `kompakt convert --keep-vocab`); default all")
    r.add_argument("--keep-vocab", nargs="+", metavar="auto|CORPUS",
                   help="trim the vocabulary by the rules of `kompakt convert --keep-vocab` (auto: Latin and Han "
                        "script tokens; or the tokens of these text files); written to kompakt_vocab.json, "
                        "used by distill (lm_head on the kept rows) and by kompakt convert")
    r.add_argument("--dry-run", action="store_true", help="print the plan as JSON, write nothing")
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(fn=cmd_prune)

    d = sub.add_parser("distill", help="train the student on the teacher's distributions")
    training_args(d)
    d.set_defaults(fn=cmd_distill)

    q = sub.add_parser("qat", help="distill with the student's weight matrices in kompakt's quantized formats")
    q.add_argument("--codes", required=True,
                   help="codes file from `kompakt convert --checkpoint STUDENT ... --export-codes FILE`: the "
                        "types and starting grid of the matrices to train; the output checkpoint holds the "
                        "trained codes (kompakt_codes.safetensors), which `kompakt convert` stores unchanged")
    q.add_argument("--scale-lr", type=float, help="peak learning rate of the step sizes, in log space "
                   "(default: --lr; on the tiny fixture 10x --lr made it worse)")
    training_args(q)
    q.set_defaults(fn=cmd_distill)
    return p


def training_args(d: argparse.ArgumentParser) -> None:
    """The options that `distill` and `qat` share."""
    d.add_argument("--teacher", required=True)
    d.add_argument("--student", required=True)
    d.add_argument("--out", required=True, help="distilled checkpoint directory (work files in OUT.work/)")
    d.add_argument("--text", nargs="+", help="training text files (English, German, Chinese)")
    d.add_argument("--eval-text", nargs="+", help="held-out text files (default: every k-th training window)")
    d.add_argument("--eval-windows", type=int, help="held-out windows taken from --text when no --eval-text (4)")
    d.add_argument("--eval-max-tokens", type=int, help="tokens per --eval-text file (default 512, as kompakt eval)")
    d.add_argument("--teacher-cache", help="directory for the teacher pass, shared by students trained on the "
                   "same teacher and data (default OUT.work/)")
    d.add_argument("--segments", help="segment YAML (IWSLT/MuST-C layout), with --wav-dir")
    d.add_argument("--wav-dir")
    d.add_argument("--audio", help="directory of 16 kHz WAV clips")
    d.add_argument("--mt-src", help="English lines (one per line) that the teacher translates through kompakt's "
                                    "text prompt into each of --langs; the student learns the answers")
    d.add_argument("--langs", nargs="+", help="target languages of the speech prompts (de zh; default de)")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--tokens", type=int, help="stop after about this many target tokens")
    d.add_argument("--batch-size", type=int, help="examples per step and process (default 2)")
    d.add_argument("--lr", type=float, help="peak learning rate (default 5e-5)")
    d.add_argument("--warmup-steps", type=int)
    d.add_argument("--weight-decay", type=float)
    d.add_argument("--temperature", type=float, help="distillation temperature (default 1)")
    d.add_argument("--hidden-loss", type=float, metavar="W",
                   help="add W x the final hidden states' MSE (relative, on the teacher channels the student "
                        "kept) to the logit loss; the teacher then runs beside the student (default 0: off)")
    d.add_argument("--top-k", type=int, help="teacher log-probs kept per position (default 64)")
    d.add_argument("--window", type=int, help="tokens per text window (default 256)")
    d.add_argument("--max-tokens-per-file", type=int)
    d.add_argument("--max-new-tokens", type=int, help="teacher translation length cap (default 64)")
    d.add_argument("--eval-every", type=int)
    d.add_argument("--save-every", type=int)
    d.add_argument("--log-every", type=int)
    d.add_argument("--seed", type=int)
    d.add_argument("--gradient-checkpointing", action="store_true", default=None)
    d.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"])
    d.add_argument("--threads", type=int)
    d.add_argument("--overwrite", action="store_true", default=None)
    d.add_argument("--stop-after-steps", type=int, help="end this invocation after N steps with a checkpoint "
                   "(for time-limited jobs); the same command resumes")
    d.add_argument("--freeze-embeddings", action="store_true", default=None,
                   help="keep the token embeddings and the lm_head fixed (no optimizer state for them: "
                        "about 2 GB less on the 0.5B proxy, 7.5 GB on the 7B)")
    d.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return a.fn(a)
    except TrainError as e:
        print(f"kompakt-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kompakt-train: interrupted", file=sys.stderr)
        return 130
