#!/usr/bin/env bash
# Issue 20's two-CPU-hour run: the width50 student of proxy-students.sh (hidden 640, FFN 3200,
# pruned by activation importance) distilled on 100 k tokens of text it sees about once: the
# calibration split plus 32 k tokens per language of other gettext catalogs (train_text.py),
# then measured like the proxy-students table (q8_0 file, kompakt eval against the f32 proxy on
# the held-out split, window 256, 512 tokens per language).
#
#   bash train/experiments/proxy-students.sh 30000 width50     # makes $WORK/width50 (the pruned student)
#   python3 scripts/evaldata/train_text.py --evaldata $KOMPAKT_DATA/evaldata --out $KOMPAKT_DATA/train-text
#   bash train/experiments/width50-long.sh
#
# Writes $WORK/width50-big/ (the distilled checkpoint, learning_curve.{json,png}),
# $WORK/logs/distill-width50-big.{json,log} (the log ends with /usr/bin/time -v: CPU seconds),
# $KPK/width50-big-q8_0.kpk and $WORK/logs/eval-width50-big.json.
set -euo pipefail
DATA=${KOMPAKT_DATA:-$HOME/kompakt-data}
PROXY=${PROXY:-$DATA/proxy/checkpoint}
EVAL=${EVAL:-$DATA/evaldata}
TEXT=${TEXT:-$DATA/train-text}
WORK=${WORK:-$DATA/students}
KPK=${KPK:-$DATA/kpk}
KOMPAKT=${KOMPAKT:-target/release/kompakt}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$WORK/logs" "$KPK"

if [ ! -d "$WORK/width50-big" ]; then
    /usr/bin/time -v kompakt-train distill --teacher "$PROXY" --student "$WORK/width50" --out "$WORK/width50-big" \
        --text "$EVAL"/calib/{en,de,zh}.txt "$TEXT"/{en,de,zh}.txt --max-tokens-per-file 32000 \
        --eval-text "$EVAL"/heldout/{en,de,zh}.txt --teacher-cache "$WORK/teacher-cache-big" \
        --tokens 100000 --batch-size 2 --window 256 --lr 1e-4 --warmup-steps 10 --eval-every 20 \
        --save-every 20 --seed 0 --json \
        > "$WORK/logs/distill-width50-big.json" 2> "$WORK/logs/distill-width50-big.log"
fi
[ -f "$KPK/proxy-f32.kpk" ] || "$KOMPAKT" convert --checkpoint "$PROXY" --out "$KPK/proxy-f32.kpk" --dtype f32
[ -f "$KPK/width50-big-q8_0.kpk" ] ||
    "$KOMPAKT" convert --checkpoint "$WORK/width50-big" --out "$KPK/width50-big-q8_0.kpk" --dtype q8_0
"$KOMPAKT" eval --reference "$KPK/proxy-f32.kpk" --model "$KPK/width50-big-q8_0.kpk" \
    --text "$EVAL/heldout/en.txt" --text "$EVAL/heldout/de.txt" --text "$EVAL/heldout/zh.txt" \
    --window 256 --max-tokens 512 --json > "$WORK/logs/eval-width50-big.json"
python3 - "$WORK/logs/eval-width50-big.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["candidates"][0]
t = c["text_all"]
print(f"width50-big q8_0: {c['size']['file_bytes'] / 1e6:.1f} MB, KL {t['kl_mean']:.3f}, top-1 {t['top1']:.3f}, "
      "ppl " + " / ".join(f"{f['ppl_cand']:.1f}" for f in c["text"]))
PY
