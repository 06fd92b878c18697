#!/usr/bin/env bash
# Issue 24's proof on real weights: the whole proxy (vocabulary trimmed as `--keep-vocab auto`)
# at Bin1's 3.81 bits per weight (`--max-size 304190765`, RESULTS.md's fidelity table), post-training
# mixed precision against the same plan trained in its formats by `kompakt-train qat`, at equal
# tensor bytes, measured by `kompakt eval` against the f32 proxy on the held-out split.
#
# The training data and held-out files are width50-long.sh's, given as the same strings, so its
# teacher pass ($WORK/teacher-cache-big) is reused.
#
#   bash train/experiments/qat-proxy.sh            # TOKENS=20000 MAX_SIZE=304190765 by default
set -euo pipefail
DATA=${KOMPAKT_DATA:-$HOME/kompakt-data}
PROXY=${PROXY:-$DATA/proxy/checkpoint}
EVAL=${EVAL:-$DATA/evaldata}
TEXT=${TEXT:-$DATA/train-text}
WORK=${WORK:-$DATA/students}
Q=${Q:-$DATA/qat}
KPK=${KPK:-$DATA/kpk}
KOMPAKT=${KOMPAKT:-target/release/kompakt}
TOKENS=${TOKENS:-20000}
MAX_SIZE=${MAX_SIZE:-304190765}
LR=${LR:-2e-5}
TAG=${TAG:-b1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$Q" "$KPK"

[ -f "$KPK/proxy-f32.kpk" ] || "$KOMPAKT" convert --checkpoint "$PROXY" --out "$KPK/proxy-f32.kpk" --dtype f32
[ -f "$Q/proxy-calib.safetensors" ] || "$KOMPAKT" calibrate --model "$KPK/proxy-f32.kpk" \
    --text "$EVAL/calib/en.txt" --text "$EVAL/calib/de.txt" --text "$EVAL/calib/zh.txt" --max-tokens 4096 \
    -o "$Q/proxy-calib.safetensors"
# The student: the proxy itself with the vocabulary that the file keeps (training computes the
# lm_head on those rows only).
[ -d "$Q/proxy-v" ] || kompakt-train prune --teacher "$PROXY" --keep-vocab auto --out "$Q/proxy-v"
# Post-training quantization, and its decoder blocks as the starting point.
[ -f "$Q/$TAG-ptq.kpk" ] || "$KOMPAKT" convert --checkpoint "$Q/proxy-v" --out "$Q/$TAG-ptq.kpk" \
    --max-size "$MAX_SIZE" --calibration "$Q/proxy-calib.safetensors" --export-codes "$Q/$TAG-codes.safetensors"
if [ ! -d "$Q/$TAG-qat" ]; then
    /usr/bin/time -v kompakt-train qat --codes "$Q/$TAG-codes.safetensors" --teacher "$PROXY" \
        --student "$Q/proxy-v" --out "$Q/$TAG-qat" \
        --text "$EVAL"/calib/{en,de,zh}.txt "$TEXT"/{en,de,zh}.txt --max-tokens-per-file 32000 \
        --eval-text "$EVAL"/heldout/{en,de,zh}.txt --teacher-cache "$WORK/teacher-cache-big" \
        --tokens "$TOKENS" --batch-size 2 --window 256 --lr "$LR" --warmup-steps 5 --eval-every "${EVAL_EVERY:-5}" \
        --save-every 20 --seed 0 --freeze-embeddings --json > "$Q/$TAG-qat.json" 2> "$Q/$TAG-qat.log"
fi
[ -f "$Q/$TAG-qat.kpk" ] || "$KOMPAKT" convert --checkpoint "$Q/$TAG-qat" --out "$Q/$TAG-qat.kpk" \
    --max-size "$MAX_SIZE" --calibration "$Q/proxy-calib.safetensors"
"$KOMPAKT" eval --reference "$KPK/proxy-f32.kpk" --model "$Q/$TAG-ptq.kpk" --model "$Q/$TAG-qat.kpk" \
    --text "$EVAL/heldout/en.txt" --text "$EVAL/heldout/de.txt" --text "$EVAL/heldout/zh.txt" \
    --window 256 --max-tokens 512 --json > "$Q/$TAG-eval.json"
python3 - "$Q/$TAG-eval.json" <<'PY'
import json, sys
for c in json.load(open(sys.argv[1]))["candidates"]:
    t = c["text_all"]
    print(f"{c['model']}: {c['size']['file_bytes']:,} bytes, KL {t['kl_mean']:.4f}, p99 {t['kl_p99']:.3f}, "
          f"top-1 {t['top1']:.3f}")
PY
