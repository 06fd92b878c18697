#!/usr/bin/env bash
# Issue 20, second stage: the width50-big student (width50-long.sh: KL 1.155 after 100 k tokens of
# text) goes on with translation prompts, so that it learns the chat-template answer it never saw:
# every English line of the calibration split is translated by the teacher into German and Chinese
# through kompakt's text prompt (distill --mt-src), and those answers are distilled together with
# 10 k tokens per language of text it has not seen (train-text lines after the first 3,000; its
# first stage read the first 32 k tokens, which end before line 2,300 in every language).
# Then: q8_0 file, `kompakt eval` KL on the held-out split, and chrF/BLEU on the 50 held-out
# translation lines (the same meter as RESULTS.md's translation table).
#
#   bash train/experiments/width50-long.sh      # makes $WORK/width50-big
#   bash train/experiments/width50-mt.sh
set -euo pipefail
DATA=${KOMPAKT_DATA:-$HOME/kompakt-data}
PROXY=${PROXY:-$DATA/proxy/checkpoint}
EVAL=${EVAL:-$DATA/evaldata}
TEXT=${TEXT:-$DATA/train-text}
WORK=${WORK:-$DATA/students}
KPK=${KPK:-$DATA/kpk}
KOMPAKT=${KOMPAKT:-target/release/kompakt}
TOKENS=${TOKENS:-15000}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$WORK/logs" "$KPK" "$WORK/text-2"

for l in en de zh; do tail -n +3001 "$TEXT/$l.txt" > "$WORK/text-2/$l.txt"; done
if [ ! -d "$WORK/width50-mt" ]; then
    /usr/bin/time -v kompakt-train distill --teacher "$PROXY" --student "$WORK/width50-big" --out "$WORK/width50-mt" \
        --mt-src "$EVAL/calib/en.txt" --langs de zh \
        --text "$WORK"/text-2/{en,de,zh}.txt --max-tokens-per-file 10000 \
        --eval-text "$EVAL"/heldout/{en,de,zh}.txt --teacher-cache "$WORK/teacher-cache-mt" \
        --tokens "$TOKENS" --batch-size 2 --window 256 --lr "${LR:-2e-5}" --warmup-steps 10 --eval-every 25 \
        --save-every 50 --seed 0 --json \
        > "$WORK/logs/distill-width50-mt.json" 2> "$WORK/logs/distill-width50-mt.log"
fi
[ -f "$KPK/proxy-f32.kpk" ] || "$KOMPAKT" convert --checkpoint "$PROXY" --out "$KPK/proxy-f32.kpk" --dtype f32
[ -f "$KPK/width50-mt-q8_0.kpk" ] ||
    "$KOMPAKT" convert --checkpoint "$WORK/width50-mt" --out "$KPK/width50-mt-q8_0.kpk" --dtype q8_0
"$KOMPAKT" eval --reference "$KPK/proxy-f32.kpk" --model "$KPK/width50-mt-q8_0.kpk" \
    --text "$EVAL/heldout/en.txt" --text "$EVAL/heldout/de.txt" --text "$EVAL/heldout/zh.txt" \
    --window 256 --max-tokens 512 --json > "$WORK/logs/eval-width50-mt.json"
"$KOMPAKT" eval --reference "$KPK/proxy-f32.kpk" --model "$KPK/width50-mt-q8_0.kpk" \
    --mt-src "$EVAL/mt/en.txt" --mt-ref de="$EVAL/mt/de.txt" --mt-ref zh="$EVAL/mt/zh.txt" \
    --mt-lines 50 --mt-out "$WORK/mt-width50-mt" --json > "$WORK/logs/mt-width50-mt.json"
python3 - "$WORK/logs/eval-width50-mt.json" "$WORK/logs/mt-width50-mt.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["candidates"][0]
t = c["text_all"]
print(f"width50-mt q8_0: {c['size']['file_bytes'] / 1e6:.1f} MB, KL {t['kl_mean']:.3f}, top-1 {t['top1']:.3f}, "
      "ppl " + " / ".join(f"{f['ppl_cand']:.1f}" for f in c["text"]))
print(json.dumps(json.load(open(sys.argv[2])), indent=1)[:3000])
PY
