#!/usr/bin/env python3
"""Parallel held-out text for the translation meter (`kompakt eval --mt-src/--mt-ref`): English
messages and their human German and Chinese translations from the held-out gettext catalogs of
`build.py` (same catalogs, same cleaning and filtering, same held-out rule), as line-aligned files.

    python3 scripts/evaldata/mt_pairs.py --out "$KOMPAKT_DATA/evaldata/mt"

Output: OUT/en.txt, OUT/de.txt, OUT/zh.txt, line-aligned (line i of de.txt and zh.txt translates
line i of en.txt), OUT/MANIFEST.json (catalog of every line, hashes). A message is kept when its
catalog has both a German and a Chinese translation and all three sides pass the filters of
build.py; messages are deduplicated by their English side and taken one catalog at a time in
turn, as build.py takes lines.

    kompakt eval --reference ref.kpk --model cand.kpk --mt-src OUT/en.txt --mt-ref OUT/de.txt --mt-ref OUT/zh.txt
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402  (same directory)


def pairs(lang: str, loc: str):
    """(english, translation, domain, catalog) of the held-out catalogs, both sides one clean line."""
    out = []
    d = build.LOCALE / loc / "LC_MESSAGES"
    if not d.is_dir():
        build.die(f"{d} does not exist (no translated catalogs for {loc} on this machine)")
    for mo in sorted(d.glob("*.mo")):
        dom = mo.stem
        if build.SKIP_DOMAINS.search(dom) or not build.is_heldout(dom):
            continue
        for msgid, msgstr in build.read_mo(mo):
            src = list(build.clean_lines(msgid, "en"))
            tgt = list(build.clean_lines(msgstr, lang))
            if len(src) == 1 and len(tgt) == 1 and "\n" not in msgid.strip() and "\n" not in msgstr.strip():
                out.append((src[0], tgt[0], dom, str(mo)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=200, help="aligned lines")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    by_lang = {lang: {(dom, en): tr for en, tr, dom, _ in pairs(lang, loc)} for lang, loc in build.LANGS.items()}
    seen, items = set(), []
    for (dom, en), de in sorted(by_lang["de"].items()):
        zh = by_lang["zh"].get((dom, en))
        if zh is None or en in seen:
            continue
        seen.add(en)
        items.append(((en, de, zh), dom, dom))
    chosen = build.round_robin(items, args.lines)
    files = {}
    for k, lang in enumerate(("en", "de", "zh")):
        f = args.out / f"{lang}.txt"
        f.write_text("".join(t[k] + "\n" for t, _, _ in chosen))
        files[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    manifest = {"source": "held-out gettext catalogs of scripts/evaldata/build.py (msgid -> de and zh_CN msgstr)",
                "lines": len(chosen), "domains": sorted({d for _, d, _ in chosen}), "sha256": files,
                "line_domains": [d for _, d, _ in chosen]}
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"{args.out}: {len(chosen)} aligned lines (en, de, zh) from {len(manifest['domains'])} catalogs")


if __name__ == "__main__":
    main()
