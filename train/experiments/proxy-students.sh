#!/usr/bin/env bash
# Issue 20's proof on real weights: students of the real-weight proxy (Whisper-tiny encoder +
# Qwen2.5-0.5B LLM, scripts/proxy) keeping 50 % and 25 % of the decoder blocks' parameters, by
# depth and by width, pruned by activation importance, each distilled within the same budget.
#
#   python3 scripts/proxy/build_proxy.py --out "${KOMPAKT_DATA:-$HOME/kompakt-data}/proxy"
#   python3 scripts/evaldata/build.py --out "${KOMPAKT_DATA:-$HOME/kompakt-data}/evaldata"
#   bash train/experiments/proxy-students.sh [TOKENS] [STUDENTS...]
#
# KOMPAKT_DATA defaults to ~/kompakt-data. Writes under $WORK (default $KOMPAKT_DATA/students):
# imp.safetensors, <student>/ (pruned), <student>-kd/ (distilled: kompakt_train.json,
# learning_curve.{json,png}), logs/*.log, results.jsonl (one line per distillation, the --json
# result of kompakt-train distill).
set -euo pipefail
DATA=${KOMPAKT_DATA:-$HOME/kompakt-data}
PROXY=${PROXY:-$DATA/proxy/checkpoint}
EVAL=${EVAL:-$DATA/evaldata}
WORK=${WORK:-$DATA/students}
TOKENS=${1:-30000}
shift || true
STUDENTS=("${@:-width50 depth50 width25 depth25}")
read -r -a STUDENTS <<< "${STUDENTS[*]}"
mkdir -p "$WORK/logs"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ ! -f "$WORK/imp.safetensors" ]; then
    # Calibration split (catalogs disjoint from held-out), 4096 tokens per language.
    kompakt-train importance --teacher "$PROXY" --text "$EVAL"/calib/{en,de,zh}.txt --max-tokens 4096 \
        --window 256 --out "$WORK/imp.safetensors" 2> "$WORK/logs/importance.log"
fi

dims() {
    case "$1" in
        # 50 % / 25 % of the 24 blocks' 357.9 M parameters (head_dim 64, 14 heads / 2 KV heads kept)
        width50) echo "--hidden 640 --ffn 3200" ;;
        width25) echo "--hidden 448 --ffn 2048" ;;
        depth50) echo "--llm-layers 12" ;;
        depth25) echo "--llm-layers 6" ;;
        *) echo "unknown student $1" >&2; exit 2 ;;
    esac
}

for s in "${STUDENTS[@]}"; do
    if [ ! -d "$WORK/$s" ]; then
        # shellcheck disable=SC2046
        kompakt-train prune --teacher "$PROXY" --importance "$WORK/imp.safetensors" $(dims "$s") \
            --out "$WORK/$s" 2> "$WORK/logs/prune-$s.log"
    fi
    if [ ! -d "$WORK/$s-kd" ]; then
        kompakt-train distill --teacher "$PROXY" --student "$WORK/$s" --out "$WORK/$s-kd" \
            --text "$EVAL"/calib/{en,de,zh}.txt --eval-text "$EVAL"/heldout/{en,de,zh}.txt \
            --teacher-cache "$WORK/teacher-cache" --tokens "$TOKENS" --batch-size 2 --window 256 \
            --lr 1e-4 --warmup-steps 5 --eval-every 10 --save-every 20 --seed 0 --json \
            > "$WORK/logs/distill-$s.json" 2> "$WORK/logs/distill-$s.log"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); r['student']=sys.argv[2]; print(json.dumps(r))" \
            "$WORK/logs/distill-$s.json" "$s" >> "$WORK/results.jsonl"
    fi
done
