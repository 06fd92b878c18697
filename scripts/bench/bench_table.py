#!/usr/bin/env python3
"""Render `kompakt bench --json` reports as one markdown table.

    python3 scripts/bench/bench_table.py bench-bin1.json bench-bin2.json ... [--readme FILE.md]

With --readme the table replaces the text between the markers
`<!-- bench-bins:begin -->` and `<!-- bench-bins:end -->` in that file.
Standard library only.
"""
import argparse
import json
import sys


def mb(b):
    return b / 1e6


def render(reports):
    first = reports[0][1]
    m = first["machine"]
    out = [
        f"Machine: {m['cpu']}, {m['cores']} cores, `{m['kernels']}` kernels. "
        "Medians of the runs of each report; speeds are only comparable within one "
        "report's run (bandwidth measured in the same process).",
        "",
        "| model | size MB | bin | params | threads | audio s | encoder s | prefill tok/s "
        "| decode tok/s | tokens | RTF | decode GB/s | of read bw | of model pages' bw | peak RSS MB "
        "| mapped MB | KV MB | activations MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in reports:
        mem = r["memory"]
        for run in r["runs"]:
            frac = run.get("bandwidth_fraction")
            mfrac = run.get("model_bandwidth_fraction")
            out.append(
                "| {} | {:.1f} | {} | {:,} | {} | {:g} | {:.2f} | {:.1f} | {:.2f} | {} | {:.2f} | {:.1f} "
                "| {} | {} | {:.0f} | {:.0f} | {:.1f} ({}) | {:.0f} |".format(
                    name,
                    mb(r["model"]["file_bytes"]),
                    r["model"]["bin"],
                    r["model"]["parameters"],
                    run["threads"],
                    run["audio_s"],
                    run["encoder_s"],
                    run["prefill_tok_s"],
                    run["decode_tok_s"],
                    run["decode_tokens"],
                    run["rtf"],
                    run["decode_gb_s"],
                    "-" if frac is None else f"{100 * frac:.0f} %",
                    "-" if mfrac is None else f"{100 * mfrac:.0f} %",
                    mb(mem["peak_rss_bytes"]),
                    mb(mem.get("model_resident_bytes") or mem["peak_mapped_bytes"]),
                    mb(mem["kv_cache_bytes"]),
                    mem.get("kv_cache_type", "f32"),
                    mb(mem["activations_bytes"]),
                )
            )
    bw = "; ".join(
        f"{name}: " + ", ".join(
            f"{b['threads']} thr {b['read_gb_s']:.1f} GB/s"
            + (f" (model pages {b['model_read_gb_s']:.1f})" if "model_read_gb_s" in b else "")
            for b in r["bandwidth"]
        )
        for name, r in reports
    )
    out += ["", f"Read bandwidth probe per run: {bw}."]
    loads = "; ".join(
        f"{name}: cold {r['load']['cold_s']:.2f} s / first translation {r['load']['cold_first_translation_s']:.1f} s"
        for name, r in reports
        if r["load"].get("cold_s") is not None
    )
    if loads:
        out.append(f"Cold start (file evicted from the page cache): {loads}.")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="kompakt bench --json outputs (name = file stem)")
    ap.add_argument("--readme", help="update the marked section of this markdown file")
    a = ap.parse_args()
    reports = []
    for p in a.reports:
        with open(p) as f:
            reports.append((p.rsplit("/", 1)[-1].removesuffix(".json"), json.load(f)))
    table = render(reports)
    if not a.readme:
        sys.stdout.write(table)
        return
    begin, end = "<!-- bench-bins:begin -->", "<!-- bench-bins:end -->"
    text = open(a.readme).read()
    if begin not in text or end not in text:
        sys.exit(f"{a.readme}: markers {begin} / {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(a.readme, "w") as f:
        f.write(head + begin + "\n" + table + end + tail)


if __name__ == "__main__":
    main()
