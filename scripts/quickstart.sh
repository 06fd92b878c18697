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
"$bin" convert --checkpoint "$ckpt" --out "$out/model.kpk" --dtype f16
"$bin" inspect "$out/model.kpk"
"$bin" translate --model "$out/model.kpk" --lang de "${wavs[@]}"
