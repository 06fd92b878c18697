#!/usr/bin/env bash
# kompakt's test command (the README's, and what .ci/run runs): formatting,
# lints, every Rust test (parity with the transformers goldens included),
# the training package's pytest suite (kompakt-train, CPU, tiny models),
# the C ABI example under valgrind, the Python binding, and the aarch64
# kernels under qemu. Installs the system packages it needs (Debian, root).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# A fresh clone gains nothing from incremental state, and it is the largest
# part of target/ after a test build.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The whole run (debug, release and aarch64 builds) writes about 3 GB to the
# target directories; say so up front rather than fail later inside the linker.
NEED_GB=4
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((NEED_GB * 1024 * 1024)) ]; then
    printf 'warning: %s has %d MB free; a clean run of this script writes about %d GB\n' \
        "$target_dir" $((free_kb / 1024)) "$NEED_GB" >&2
fi

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

step "Python packages for the evaluation script (sacrebleu, mweralign)"
python3 -m pip install -q --disable-pip-version-check -r scripts/eval/requirements.txt

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "kompakt-train: install (pinned torch/transformers/accelerate; the first install takes ~8 min) and pytest"
python3 -m pip install -q --disable-pip-version-check -e "train[test]"
cargo build -q -p kompakt-cli
KOMPAKT_BIN="$PWD/target/debug/kompakt" python3 -m pytest -q -p no:cacheprovider train/tests

step "C ABI: example against libkompakt.so and .a, header as C99 and C++, valgrind, Python binding"
bash bindings/c/test.sh

step "aarch64 kernels under qemu"
bash scripts/test-aarch64.sh
