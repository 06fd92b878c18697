#!/usr/bin/env bash
# kompakt's main job on a built-in default: convert a Hugging Face
# Qwen2-Audio checkpoint (the tiny random-weight one committed under
# tests/fixtures/models/tiny-mha) into one .kpk file, inspect it, and
# translate the bundled English speech. The tiny model's weights are random,
# so its "translation" is gibberish; the pipeline is the real one.
# Usage: bash scripts/quickstart.sh [CHECKPOINT_DIR] [WAV...]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt="${1:-tests/fixtures/models/tiny-mha}"
shift || true
wavs=("$@")
[ ${#wavs[@]} -gt 0 ] || wavs=(tests/fixtures/audio/*.wav)
out="${KOMPAKT_OUT:-target/quickstart}"
mkdir -p "$out"
cargo build --release -p kompakt-cli
bin=target/release/kompakt
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/release/kompakt"
step() { printf '\n== %s\n' "$*"; }
step "convert $ckpt -> $out/model.kpk"
"$bin" convert --checkpoint "$ckpt" --out "$out/model.kpk" --dtype f16
step "inspect $out/model.kpk"
"$bin" inspect "$out/model.kpk"
step "translate ${#wavs[@]} file(s) into German -> $out/translations.de.txt"
"$bin" translate --model "$out/model.kpk" --lang de -o "$out/translations.de.txt" "${wavs[@]}"
i=0
while IFS= read -r line; do
    printf '%s: %s\n' "${wavs[$i]}" "$line"
    i=$((i + 1))
done < "$out/translations.de.txt"
echo
echo "kompakt binary: $bin (install it with: cargo install --path cli)"
if [ "$ckpt" = tests/fixtures/models/tiny-mha ]; then
    echo "note: the built-in checkpoint has random weights (it checks the pipeline against transformers),"
    echo "      so the lines above are gibberish. For real output, give a Qwen2-Audio checkpoint:"
    echo "      bash scripts/quickstart.sh /path/to/Qwen2-Audio-7B-Instruct talk.wav"
fi
