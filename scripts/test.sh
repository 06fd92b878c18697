#!/usr/bin/env bash
# kompakt's test command (the README's, and what .ci/run runs): formatting,
# lints, every Rust test (parity with the transformers goldens included),
# the C ABI example under valgrind, the Python binding, and the aarch64
# kernels under qemu. Installs the system packages it needs (Debian, root).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

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

step "C ABI: example against libkompakt.so and .a, header as C99 and C++, valgrind, Python binding"
bash bindings/c/test.sh

step "aarch64 kernels under qemu"
bash scripts/test-aarch64.sh
