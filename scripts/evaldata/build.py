#!/usr/bin/env python3
"""Evaluation and calibration data for kompakt from what Debian ships on this machine.

Text: the compiled gettext catalogs under /usr/share/locale/{de,zh_CN}/LC_MESSAGES/*.mo pair English
messages (msgid) with human translations (msgstr). English = msgids, German = msgstrs of the `de`
catalogs, Chinese = msgstrs of the `zh_CN` catalogs. Messages are cleaned (no format specifiers,
markup, option lists or accelerators; one line per message line), filtered to natural sentences,
and deduplicated.

Split: by source catalog (the package's text domain, e.g. `coreutils`), identically for all three
languages, so a held-out line never comes from a catalog used for calibration; then any calibration
line whose hash also occurs in held-out is dropped. Speech: espeak-ng speaks ~20 held-out English
sentences; sox resamples them to 16 kHz mono 16-bit WAVs.

    python3 scripts/evaldata/build.py --out "$KOMPAKT_DATA/evaldata"     # KOMPAKT_DATA: e.g. ~/kompakt-data

Output: OUT/{calib,heldout}/{en,de,zh}.txt (one line per message), OUT/audio/en_NN.wav + en_NN.txt,
OUT/MANIFEST.json (source catalog and package of every line, hashes, tool versions).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

LOCALE = Path("/usr/share/locale")
LANGS = {"de": "de", "zh": "zh_CN"}
SKIP_DOMAINS = re.compile(r"^(iso_|iso-)")     # country/language name lists are not sentences
HELDOUT_EVERY = 3                              # domains with sha256(domain) % 3 == 0 are held out


def die(msg):
    print(f"evaldata: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_mo(path: Path):
    """(msgid, msgstr) pairs of a compiled gettext catalog (first plural form, context dropped)."""
    b = path.read_bytes()
    if len(b) < 28:
        return []
    magic = struct.unpack_from("<I", b, 0)[0]
    end = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if end is None:
        return []
    _rev, n, o_tab, t_tab = struct.unpack_from(end + "4I", b, 4)
    raw = []
    for i in range(n):
        lo, oo = struct.unpack_from(end + "2I", b, o_tab + 8 * i)
        lt, ot = struct.unpack_from(end + "2I", b, t_tab + 8 * i)
        raw.append((b[oo:oo + lo], b[ot:ot + lt]))
    charset = "utf-8"
    for k, v in raw:
        if k == b"":
            m = re.search(rb"charset=([-\w]+)", v)
            if m:
                charset = m.group(1).decode("ascii")
    pairs = []
    for k, v in raw:
        if not k:
            continue
        try:
            ks, vs = k.decode(charset), v.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
        ks = ks.split("\x04")[-1].split("\x00")[0]
        vs = vs.split("\x00")[0]
        if vs:
            pairs.append((ks, vs))
    return pairs


BAD = re.compile(r"%|\\|[<>{}\[\]|`$@#=*^~]|https?:|\w\.\w+\(|--|\t|\b[A-Z_]{4,}\b|_\w|\w_")
CJK = re.compile(r"[\u4e00-\u9fff]")


def clean_lines(text: str, lang: str):
    for line in text.split("\n"):
        s = " ".join(line.replace("&", "").split())
        if not s or BAD.search(s) or s.startswith(("-", "(", ",", ".")):
            continue
        if lang == "zh":
            if len(CJK.findall(s)) < 8 or len(s) < 12:
                continue
        else:
            words = s.split()
            if len(words) < 6 or len(s) < 35:
                continue
            if sum(c.isalpha() for c in s) < 0.75 * len(s.replace(" ", "")):
                continue
            if not s[0].isupper():
                continue
        yield s


def h(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()[:16]


def is_heldout(domain: str) -> bool:
    return int(hashlib.sha256(domain.encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def owner_package(path: Path) -> str:
    r = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True)
    return r.stdout.split(":")[0].strip() if r.returncode == 0 and r.stdout else "?"


def collect():
    """lang -> list of (line, domain, catalog path)."""
    out = {"en": [], "de": [], "zh": []}
    catalogs = {}
    for lang, loc in LANGS.items():
        d = LOCALE / loc / "LC_MESSAGES"
        if not d.is_dir():
            die(f"{d} does not exist (no translated catalogs for {loc} on this machine)")
        for mo in sorted(d.glob("*.mo")):
            dom = mo.stem
            if SKIP_DOMAINS.search(dom):
                continue
            catalogs[str(mo)] = dom
            for msgid, msgstr in read_mo(mo):
                for s in clean_lines(msgstr, lang):
                    out[lang].append((s, dom, str(mo)))
                for s in clean_lines(msgid, "en"):
                    out["en"].append((s, dom, str(mo)))
    return out, catalogs


def split(items, cap: int):
    """Dedup, split by domain, drop calibration lines also in held-out, cap per split (spread over domains)."""
    seen, held, cal = set(), [], []
    for s, dom, mo in items:
        k = h(s)
        if k in seen:
            continue
        seen.add(k)
        (held if is_heldout(dom) else cal).append((s, dom, mo))
    held_h = {h(s) for s, _, _ in held}
    cal = [x for x in cal if h(x[0]) not in held_h]
    return round_robin(held, cap), round_robin(cal, cap)


def round_robin(items, cap):
    """Up to `cap` lines taking one line per domain in turn, so no catalog dominates."""
    by = {}
    for x in items:
        by.setdefault(x[1], []).append(x)
    doms = sorted(by)
    out, i = [], 0
    while len(out) < cap and any(by[d] for d in doms):
        d = doms[i % len(doms)]
        if by[d]:
            out.append(by[d].pop(0))
        i += 1
    return out


def speak(sentences, out: Path):
    for tool in ("espeak-ng", "sox"):
        if not shutil.which(tool):
            die(f"`{tool}` is not installed (apt-get install {tool})")
    out.mkdir(parents=True, exist_ok=True)
    res = []
    for i, (s, dom, mo) in enumerate(sentences):
        raw = out / f"en_{i:02d}.22k.wav"
        wav = out / f"en_{i:02d}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), s], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(wav)],
                       check=True)
        raw.unlink()
        (out / f"en_{i:02d}.txt").write_text(s + "\n")
        dur = (wav.stat().st_size - 44) / 32000
        res.append({"wav": wav.name, "text": s, "seconds": round(dur, 2), "domain": dom, "catalog": mo,
                    "sha256": hashlib.sha256(wav.read_bytes()).hexdigest()})
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=400, help="lines per language and split")
    ap.add_argument("--speech", type=int, default=20, help="number of spoken held-out English sentences")
    args = ap.parse_args()
    data, catalogs = collect()
    manifest = {"sources": {}, "split": f"by gettext domain: sha256(domain) % {HELDOUT_EVERY} == 0 -> held-out",
                "files": {}, "catalogs": {}}
    pkgs = {}
    for mo, dom in catalogs.items():
        pkgs.setdefault(dom, owner_package(Path(mo)))
    for part in ("calib", "heldout"):
        (args.out / part).mkdir(parents=True, exist_ok=True)
    held_en = []
    for lang in ("en", "de", "zh"):
        held, cal = split(data[lang], args.lines)
        if lang == "en":
            held_en = held
        for part, rows in (("heldout", held), ("calib", cal)):
            p = args.out / part / f"{lang}.txt"
            p.write_text("".join(s + "\n" for s, _, _ in rows))
            doms = sorted({d for _, d, _ in rows})
            manifest["files"][f"{part}/{lang}.txt"] = {
                "lines": len(rows), "chars": sum(len(s) for s, _, _ in rows),
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "domains": doms,
                "line_sources": [{"sha": h(s), "domain": d, "catalog": mo} for s, d, mo in rows]}
            print(f"{part}/{lang}.txt: {len(rows)} lines from {len(doms)} catalogs")
    for part in ("calib", "heldout"):
        pass
    hc = {h(l) for lang in ("en", "de", "zh") for l in (args.out / "heldout" / f"{lang}.txt").read_text().splitlines()}
    cc = {h(l) for lang in ("en", "de", "zh") for l in (args.out / "calib" / f"{lang}.txt").read_text().splitlines()}
    if hc & cc:
        die(f"{len(hc & cc)} lines occur in both splits")
    # Speech: held-out English sentences of moderate length that end like sentences.
    cands = [x for x in held_en if 50 <= len(x[0]) <= 160 and x[0].endswith(".")]
    chosen = round_robin(cands, args.speech)
    manifest["speech"] = speak(chosen, args.out / "audio")
    ver = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    manifest["tools"] = {"espeak-ng": ver, "espeak_voice": "en-us, 160 wpm",
                         "sox": subprocess.run(["sox", "--version"], capture_output=True, text=True).stdout.strip()}
    manifest["catalogs"] = {dom: {"package": pkgs[dom], "heldout": is_heldout(dom)} for dom in sorted(pkgs)}
    for lang, loc in LANGS.items():
        manifest["sources"][lang] = f"{LOCALE}/{loc}/LC_MESSAGES/*.mo (msgstr)"
    manifest["sources"]["en"] = "msgid of the same catalogs"
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"speech: {len(manifest['speech'])} WAVs in {args.out / 'audio'}; manifest {args.out / 'MANIFEST.json'}")


if __name__ == "__main__":
    main()
