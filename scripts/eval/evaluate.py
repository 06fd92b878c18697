#!/usr/bin/env python3
"""Scores speech-translation output the IWSLT way.

    evaluate.py --hyp hyp.txt --ref ref.de [--src source.en] [--lang de|zh]
                [--resegment] [--comet-model PATH] [--json]

Hypotheses and references are one segment per line. When their line counts differ (automatic
segmentation) or with --resegment, the hypotheses are first re-cut to the reference segments by
minimum-WER alignment (mweralign, the successor of mwerSegmenter). Then BLEU and chrF are
computed with sacrebleu (tokenizer `zh` for Chinese, `13a` otherwise), and COMET with
unbabel-comet when --comet-model names a local checkpoint (it cannot be downloaded here; COMET
also needs --src). Prints a table, or JSON with --json.

Install: pip install -r scripts/eval/requirements.txt
"""
import argparse
import json
import os
import sys


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


class _StdoutToStderr:
    """Sends fd 1 to stderr (the aligner's C++ code prints progress on stdout)."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


def resegment(hyps, refs, lang):
    """Re-cuts the concatenated hypotheses into len(refs) segments (mweralign)."""
    try:
        from mweralign import align_texts
        from mweralign.segmenter import CJSegmenter
    except ImportError:
        sys.exit(
            "error: the hypotheses have %d lines and the references %d: they need "
            "resegmentation, which needs mweralign (pip install mweralign==1.4.1, see "
            "scripts/eval/requirements.txt)" % (len(hyps), len(refs))
        )
    hyp_text = " ".join(h.strip() for h in hyps if h.strip())
    if lang == "zh":
        seg = CJSegmenter()
        ref_str = "\n".join(" ".join(seg.encode(r.strip())) for r in refs)
        hyp_str = " ".join(seg.encode(hyp_text))
        with _StdoutToStderr():
            out = align_texts(ref_str, hyp_str, is_tokenized=False)
        lines = [seg.decode(line) for line in out.split("\n")]
    else:
        with _StdoutToStderr():
            out = align_texts("\n".join(r.strip() for r in refs), hyp_text, is_tokenized=False)
        lines = out.split("\n")
    if len(lines) < len(refs):
        lines += [""] * (len(refs) - len(lines))
    if len(lines) != len(refs):
        sys.exit(
            "error: mweralign returned %d segments for %d references" % (len(lines), len(refs))
        )
    return [line.strip() for line in lines]


def comet_score(model_path, srcs, hyps, refs):
    if not os.path.exists(model_path):
        return None, "COMET skipped: %s does not exist (give a local checkpoint, e.g. " \
            ".../wmt22-comet-da/checkpoints/model.ckpt; it cannot be downloaded here)" % model_path
    if srcs is None:
        return None, "COMET skipped: it needs the source transcripts (--src)"
    try:
        from comet import load_from_checkpoint
    except ImportError:
        return None, "COMET skipped: unbabel-comet is not installed (pip install unbabel-comet==2.2.7)"
    model = load_from_checkpoint(model_path)
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(srcs, hyps, refs)]
    out = model.predict(data, batch_size=16, gpus=0, progress_bar=False)
    return 100.0 * float(out.system_score), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hyp", required=True, help="hypotheses, one per line (UTF-8)")
    ap.add_argument("--ref", required=True, help="references, one per line (UTF-8)")
    ap.add_argument("--src", help="source transcripts, one per reference line (for COMET)")
    ap.add_argument("--lang", default="de", help="target language: de, zh, ... (default de)")
    ap.add_argument("--resegment", action="store_true",
                    help="resegment with mweralign even when the line counts match")
    ap.add_argument("--comet-model", metavar="PATH",
                    help="local unbabel-comet checkpoint (model.ckpt); COMET is skipped without it")
    ap.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = ap.parse_args()

    try:
        import sacrebleu
    except ImportError:
        sys.exit("error: sacrebleu is not installed (pip install -r scripts/eval/requirements.txt)")

    hyps = read_lines(args.hyp)
    n_hyp_lines = len(hyps)
    refs = read_lines(args.ref)
    srcs = read_lines(args.src) if args.src else None
    if srcs is not None and len(srcs) != len(refs):
        sys.exit("error: %s has %d lines but %s has %d" % (args.src, len(srcs), args.ref, len(refs)))
    if not refs:
        sys.exit("error: %s is empty" % args.ref)

    resegmented = False
    if args.resegment or len(hyps) != len(refs):
        hyps = resegment(hyps, refs, args.lang)
        resegmented = True

    tokenize = "zh" if args.lang == "zh" else "13a"
    bleu_metric = sacrebleu.BLEU(tokenize=tokenize)
    bleu = bleu_metric.corpus_score(hyps, [refs])
    chrf_metric = sacrebleu.CHRF()
    chrf = chrf_metric.corpus_score(hyps, [refs])
    result = {
        "segments": len(refs),
        "hypothesis_lines": n_hyp_lines,
        "resegmented": resegmented,
        "lang": args.lang,
        "bleu": round(bleu.score, 2),
        "bleu_signature": str(bleu_metric.get_signature()),
        "chrf": round(chrf.score, 2),
        "chrf_signature": str(chrf_metric.get_signature()),
        "comet": None,
    }
    notes = []
    if args.comet_model:
        score, note = comet_score(args.comet_model, srcs, hyps, refs)
        result["comet"] = None if score is None else round(score, 2)
        if note:
            notes.append(note)
    else:
        notes.append("COMET skipped: no --comet-model PATH (a local unbabel-comet checkpoint; "
                     "it cannot be downloaded here)")
    result["notes"] = notes

    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print("%-12s %s" % ("segments", result["segments"]))
    print("%-12s %s%s" % ("hyp lines", result["hypothesis_lines"],
                          " (resegmented with mweralign)" if resegmented else ""))
    print("%-12s %.2f  (%s)" % ("BLEU", result["bleu"], result["bleu_signature"]))
    print("%-12s %.2f  (%s)" % ("chrF", result["chrf"], result["chrf_signature"]))
    print("%-12s %s" % ("COMET", "-" if result["comet"] is None else "%.2f" % result["comet"]))
    for n in notes:
        print("note: " + n, file=sys.stderr)


if __name__ == "__main__":
    main()
