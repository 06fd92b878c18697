#!/usr/bin/env python3
"""The results table and learning-curve plot of the proxy students (after proxy-students.sh).

For every student S of $WORK: (a) the pruned student, (b) the distilled one, both converted to
q8_0 by `kompakt convert`, and (c) the unpruned proxy quantized by `kompakt convert --max-size`
to the bytes of (b); all three measured by one `kompakt eval` against the f32 proxy on the
held-out text (window 256, 512 tokens per language, the proxy's fidelity-table settings).

    python3 train/experiments/proxy_table.py --kompakt target/release/kompakt \
        --out train/experiments/results

Writes OUT/proxy-students.md (the table), OUT/proxy-students.json (every figure) and
OUT/proxy-students-curve.png (held-out KL against tokens seen, every student).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def sh(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def convert(kompakt: str, src: Path, dst: Path, *args: str) -> Path:
    if not dst.exists():
        sh(kompakt, "convert", "--checkpoint", str(src), "--out", str(dst), *args)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kompakt", default="target/release/kompakt")
    data = Path(os.environ.get("KOMPAKT_DATA", os.path.expanduser("~/kompakt-data")))
    ap.add_argument("--work", default=str(data / "students"))
    ap.add_argument("--proxy", default=str(data / "proxy/checkpoint"))
    ap.add_argument("--eval", default=str(data / "evaldata"))
    ap.add_argument("--kpk", default=str(data / "kpk"), help="where the .kpk files go")
    ap.add_argument("--students", nargs="+", default=["width50", "depth50", "width25", "depth25"])
    ap.add_argument("--out", default="train/experiments/results")
    a = ap.parse_args()
    work, kpk, out = Path(a.work), Path(a.kpk), Path(a.out)
    kpk.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ref = convert(a.kompakt, Path(a.proxy), kpk / "proxy-f32.kpk", "--dtype", "f32")
    rows, models = [], []
    for s in a.students:
        kd = work / f"{s}-kd"
        if not kd.is_dir():
            print(f"skipping {s}: {kd} missing", file=sys.stderr)
            continue
        pruned = convert(a.kompakt, work / s, kpk / f"{s}-pruned-q8_0.kpk", "--dtype", "q8_0")
        distilled = convert(a.kompakt, kd, kpk / f"{s}-kd-q8_0.kpk", "--dtype", "q8_0")
        ptq = convert(a.kompakt, Path(a.proxy), kpk / f"proxy-ptq-{s}.kpk", "--max-size",
                      str(distilled.stat().st_size))
        prov = json.loads((kd / "kompakt_train.json").read_text())
        rows.append({"student": s, "prov": prov, "curve": json.loads((kd / "learning_curve.json").read_text()),
                     "files": {"a": str(pruned), "b": str(distilled), "c": str(ptq)}})
        models += [pruned, distilled, ptq]
    report = json.loads(sh(a.kompakt, "eval", "--reference", str(ref), *sum([["--model", str(m)] for m in models], []),
                           *sum([["--text", f"{a.eval}/heldout/{lang}.txt"] for lang in ("en", "de", "zh")], []),
                           "--window", "256", "--max-tokens", "512", "--json"))
    by_file = {c["model"]: c for c in report["candidates"]}
    lines = ["| student | decoder blocks kept | what | file MB | KL mean | top-1 | ppl en / de / zh |",
             "|---|---|---|---|---|---|---|"]
    ref_ppl = None
    for r in rows:
        p = r["prov"]
        t, st = p["teacher_dims"], p["student_dims"]
        from kompakt_train.arch import Dims
        frac = Dims(**st).params()["llm_layers"] / Dims(**t).params()["llm_layers"]
        d = p["steps_done"][-1]
        what = {"a": "pruned, before training",
                "b": f"distilled ({d['tokens']:,} tokens, {d['wall_s'] / 60:.0f} min)",
                "c": "unpruned, `--max-size` of (b)"}
        for k in "abc":
            c = by_file[r["files"][k]]
            ta = c["text_all"]
            ppl = " / ".join(f"{x['ppl_cand']:.1f}" for x in c["text"])
            ref_ppl = " / ".join(f"{x['ppl_ref']:.1f}" for x in c["text"])
            r[k] = {"file_bytes": c["size"]["file_bytes"], "kl": ta["kl_mean"], "top1": ta["top1"],
                    "ppl": [x["ppl_cand"] for x in c["text"]]}
            lines.append(f"| {r['student']} | {100 * frac:.0f} % | ({k}) {what[k]} | {c['size']['file_bytes'] / 1e6:.1f} | "
                         f"{ta['kl_mean']:.3f} | {ta['top1']:.3f} | {ppl} |")
    lines.append(f"\nReference perplexity (f32 proxy) en / de / zh: {ref_ppl}.")
    (out / "proxy-students.md").write_text("\n".join(lines) + "\n")
    (out / "proxy-students.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "prov"} | {"dims": r["prov"]["student_dims"],
                                                         "distill": r["prov"]["steps_done"][-1]} for r in rows],
        indent=2) + "\n")
    plot(rows, out / "proxy-students-curve.png")
    print("\n".join(lines))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(rows):
        color = f"C{i}"
        x = [c["tokens"] for c in r["curve"]]
        ax.plot(x, [c["kl"] for c in r["curve"]], marker=".", color=color, label=f"{r['student']} (distilled)")
        if "c" in r:
            ax.axhline(r["c"]["kl"], color=color, linestyle=":", linewidth=1,
                       label=f"unpruned PTQ at {r['c']['file_bytes'] / 1e6:.0f} MB")
    ax.set_yscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("held-out KL(teacher || student)")
    ax.set_title("Proxy students: distillation against post-training quantization at equal bytes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
