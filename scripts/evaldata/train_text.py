#!/usr/bin/env python3
"""Distillation text for kompakt-train: more English, German and Chinese sentences than the
calibration split holds, from the gettext catalogs of Debian packages that are downloaded (not
installed) with `apt-get download` and unpacked into a cache directory.

The calibration split of `build.py` has about 6,000 tokens per language, too little to heal a
pruned student (a width-pruned proxy student trained twice over it got worse on held-out text).
This script adds catalogs of desktop applications (GIMP, Inkscape, VLC, GnuCash, Gramps, ...):
the same kind of text (human translations of interface messages), cleaned and filtered by the
same rules as `build.py`, and kept apart from the held-out split three ways:

- a catalog whose text domain is held out by `build.py`'s rule (sha256(domain) % 3 == 0) is
  skipped, and so is one whose domain stem (`gtk30` -> `gtk`) equals a held-out domain's stem;
- a line whose hash occurs in EVALDATA/heldout/*.txt is dropped;
- lines are deduplicated across catalogs.

    python3 scripts/evaldata/train_text.py --evaldata "$KOMPAKT_DATA/evaldata" --out "$KOMPAKT_DATA/train-text"

Output: OUT/{en,de,zh}.txt (one sentence per line, domains interleaved), OUT/MANIFEST.json (the
packages and versions, the catalogs used and skipped, per-file hashes). Needs `apt-get` with a
reachable Debian mirror (bookworm was used for the committed results) and `dpkg-deb`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402  (same directory: read_mo, clean_lines, is_heldout, round_robin)

# Packages whose German and Simplified Chinese catalogs are large and are not installed on the
# machine that built the evaluation data (none of their domains is in its MANIFEST).
PACKAGES = [
    "gimp", "gimp-data", "inkscape", "vlc-l10n", "gnucash-common", "gramps", "scribus-data",
    "kdenlive-data", "krita-data", "darktable", "audacity-data", "lyx-common", "gnumeric-common",
    "abiword-common", "evolution-common", "evolution-data-server-common", "gnome-control-center-data",
    "gnome-shell-common", "mutter-common", "nautilus-data", "gedit-common", "evince-common",
    "totem-common", "rhythmbox-data", "shotwell-common", "gparted", "hexchat-common", "pidgin-data",
    "transmission-common", "geany-common", "claws-mail-i18n", "filezilla-common", "virt-manager",
    "system-config-printer-common", "gnome-software-common", "gnome-disk-utility", "seahorse",
    "brasero-common", "file-roller", "eog", "simple-scan", "remmina-common", "poedit-common",
]


def stem(domain: str) -> str:
    return re.split(r"[-_.\d]", domain, maxsplit=1)[0].lower()


def download(packages: list[str], cache: Path) -> dict[str, str]:
    """package -> .deb file name (downloaded into `cache` unless already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = {}
    for p in packages:
        have = sorted(cache.glob(f"{p}_*.deb"))
        if not have:
            r = subprocess.run(["apt-get", "download", p], cwd=cache, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"train_text: skipping {p}: apt-get download failed: {r.stderr.strip()[-200:]}",
                      file=sys.stderr)
                continue
            have = sorted(cache.glob(f"{p}_*.deb"))
        if have:
            debs[p] = have[-1].name
    return debs


def unpack(cache: Path, debs: dict[str, str], root: Path) -> None:
    for deb in debs.values():
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(cache / deb)], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(root), "--wildcards",
                        *(f"./usr/share/locale/{loc}/LC_MESSAGES/*" for loc in build.LANGS.values())],
                       input=tar.stdout, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaldata", type=Path, required=True, help="output of build.py (held-out split, MANIFEST)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="where the .deb files go (default OUT/debs)")
    ap.add_argument("--max-chars", type=int, default=0, help="cap per language (0: everything)")
    args = ap.parse_args()
    for tool in ("apt-get", "dpkg-deb", "tar"):
        if not shutil.which(tool):
            build.die(f"`{tool}` is not on PATH (this script needs Debian's package tools)")
    manifest_in = args.evaldata / "MANIFEST.json"
    if not manifest_in.is_file():
        build.die(f"{manifest_in} does not exist: build the evaluation data first (scripts/evaldata/build.py)")
    known = json.loads(manifest_in.read_text())["catalogs"]
    held_stems = {stem(d) for d, c in known.items() if c["heldout"]}
    held_lines = {build.h(line) for lang in ("en", "de", "zh")
                  for line in (args.evaldata / "heldout" / f"{lang}.txt").read_text().splitlines()}

    cache = args.cache or args.out / "debs"
    debs = download(PACKAGES, cache)
    root = args.out / "unpacked"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    unpack(cache, debs, root)

    rows = {"en": [], "de": [], "zh": []}
    used, skipped = set(), {}
    for lang, loc in build.LANGS.items():
        for mo in sorted((root / "usr/share/locale" / loc / "LC_MESSAGES").glob("*.mo")):
            dom = mo.stem
            why = ("known to build.py" if dom in known else
                   "held-out domain" if build.is_heldout(dom) else
                   "stem of a held-out domain" if stem(dom) in held_stems else
                   "country/language names" if build.SKIP_DOMAINS.search(dom) else None)
            if why:
                skipped[dom] = why
                continue
            used.add(dom)
            for msgid, msgstr in build.read_mo(mo):
                rows[lang].extend((s, dom, mo.name) for s in build.clean_lines(msgstr, lang))
                rows["en"].extend((s, dom, mo.name) for s in build.clean_lines(msgid, "en"))
    shutil.rmtree(root)

    manifest = {"packages": debs, "catalogs_used": sorted(used), "catalogs_skipped": skipped,
                "evaldata_manifest_sha256": hashlib.sha256(manifest_in.read_bytes()).hexdigest(),
                "files": {}}
    for lang, items in rows.items():
        seen, keep = set(), []
        for s, dom, mo in items:
            k = build.h(s)
            if k in seen or k in held_lines:
                continue
            seen.add(k)
            keep.append((s, dom, mo))
        keep = build.round_robin(keep, len(keep))
        if args.max_chars:
            total, cut = 0, []
            for x in keep:
                total += len(x[0]) + 1
                if total > args.max_chars:
                    break
                cut.append(x)
            keep = cut
        p = args.out / f"{lang}.txt"
        p.write_text("".join(s + "\n" for s, _, _ in keep))
        manifest["files"][f"{lang}.txt"] = {"lines": len(keep), "chars": sum(len(s) for s, _, _ in keep),
                                            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                                            "domains": len({d for _, d, _ in keep})}
        print(f"{p}: {len(keep)} lines, {manifest['files'][f'{lang}.txt']['chars']} characters")
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
