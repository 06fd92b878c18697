#!/usr/bin/env bash
# Per-bin models of the full-size Qwen2-Audio-7B shape, benchmarked on this
# machine; the table is printed and written to DATA_DIR/bench-bins.md (a run worth keeping goes
# into a dated note under docs/notes/ and its summary into RESULTS.md).
#
#   scripts/bench/bench-bins.sh DATA_DIR [bins...]     (default bins: 1 2 3)
#
# DATA_DIR holds (or receives) synth-7b/, a 16.8 GB random-weight checkpoint
# written by `kompakt synth-checkpoint` (give TOKENIZER=path/tokenizer.json to
# use a real Qwen2 tokenizer, so that vocabulary trimming keeps realistic
# rows), and the converted synth-binN.kpk files. The presets' `auto:N` layer
# choices need a calibration, which random weights cannot give meaningfully,
# so the same number of layers is dropped by an explicit list (the deepest
# blocks before the last, as ShortGPT finds least influential in LLaMA-2).
# Disk: ~16.8 GB + the models; time: a conversion is ~20-45 min on 2 cores.
set -euo pipefail
data=${1:?usage: bench-bins.sh DATA_DIR [bins...]}
shift || true
bins=${*:-1 2 3}
root=$(cd "$(dirname "$0")/../.." && pwd)
kompakt=${KOMPAKT:-$root/target/release/kompakt}
[ -x "$kompakt" ] || (cd "$root" && cargo build --release -p kompakt-cli)
mkdir -p "$data"
if [ ! -f "$data/synth-7b/model.safetensors.index.json" ]; then
  "$kompakt" synth-checkpoint --out "$data/synth-7b" ${TOKENIZER:+--tokenizer "$TOKENIZER"}
fi
seq_csv() { seq -s, "$1" "$2"; }
reports=()
for b in $bins; do
  out="$data/synth-bin$b.kpk"
  case $b in
    1) drops=() ;;
    2) drops=(--drop-llm-layers "$(seq_csv 23 30)") ;;
    3) drops=(--drop-llm-layers "$(seq_csv 9 30)" --drop-audio-layers "$(seq_csv 19 30)") ;;
    *) echo "no preset for bin $b" >&2; exit 2 ;;
  esac
  if [ ! -f "$out" ]; then
    /usr/bin/time -v "$kompakt" convert --checkpoint "$data/synth-7b" --out "$out" \
      --recipe "bin$b" "${drops[@]}" 2> "$data/convert-bin$b.log"
  fi
  "$kompakt" inspect "$out" | head -3
  "$kompakt" bench --model "$out" --audio-seconds "${SECONDS_LIST:-5,30}" \
    --threads "${THREADS:-1,2}" --repeat "${REPEAT:-1}" --json > "$data/bench-bin$b.json"
  reports+=("$data/bench-bin$b.json")
done
python3 "$root/scripts/bench/bench_table.py" "${reports[@]}" | tee "$data/bench-bins.md"
