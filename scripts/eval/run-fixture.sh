#!/usr/bin/env bash
# The whole path on the long-form fixture: convert the tiny fixture model, translate the
# segment list and the unsegmented talk (automatic segmentation), score both with
# evaluate.py (the second one resegmented with mweralign), print the real-time factors.
#   bash scripts/eval/run-fixture.sh [MODEL.kpk]     (default: the tiny random-weight fixture)
# Needs: cargo, python3 with sacrebleu and mweralign (pip install -r scripts/eval/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p kompakt-cli
k="$CARGO_TARGET_DIR/release/kompakt"
fx=tests/fixtures/longform
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
model=${1:-}
if [ -z "$model" ]; then
    model="$out/tiny.kpk"
    "$k" convert --checkpoint tests/fixtures/models/tiny-mha --out "$model" --dtype f32 >/dev/null
fi

echo "== segment list ($fx/talk.yaml)"
"$k" translate --model "$model" --lang de --segments "$fx/talk.yaml" --wav-dir "$fx" -o "$out/list.de"
python3 scripts/eval/evaluate.py --hyp "$out/list.de" --ref "$fx/reference.de" --src "$fx/source.en"

echo "== automatic segmentation ($fx/talk.wav)"
"$k" translate --model "$model" --lang de "$fx/talk.wav" -o "$out/auto.de" --segments-out "$out/auto.yaml"
echo "$(wc -l < "$out/auto.yaml") segments detected"
python3 scripts/eval/evaluate.py --hyp "$out/auto.de" --ref "$fx/reference.de" --src "$fx/source.en"
