#!/usr/bin/env bash
# kompakt's test command (the README's, and what .ci/run runs): formatting,
# lints, every Rust test (parity with the transformers goldens included),
# the training package's pytest suite (kompakt-train, CPU, tiny models),
# the C ABI example under valgrind, the Python binding, and the aarch64
# kernels under qemu. Ends with one line: N passed, M failed.
#
# What it changes on the system (Debian/Ubuntu, as root): apt-get installs
# valgrind, gcc, g++ and python3 when missing; the aarch64 step adds the arm64
# architecture to dpkg and installs a cross toolchain and qemu-user-static;
# pip installs sacrebleu/mweralign (scripts/eval/requirements.txt) and the
# training package with its pinned PyTorch into the current python3.
#
# KOMPAKT_TEST_NO_SYSTEM=1 changes nothing on the system: no apt-get, no
# dpkg architecture, no pip. Then the steps whose tools are missing are
# skipped and named at the end (the kompakt-train suite without torch, the
# valgrind run without valgrind, the aarch64 kernels without the cross
# toolchain and qemu; the evaluation-script test reports SKIPPED without
# sacrebleu).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

no_system="${KOMPAKT_TEST_NO_SYSTEM:-0}"
passed=0
failed=0
skipped=()
current=""
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Adds the counts that test runners print (cargo's "test result:" lines,
# pytest's "N passed, M failed in T s", the binding script's "N passed, M
# failed", the C test's last line) from the log of the last step.
count() {
    local p f
    read -r p f < <(awk '
        /^C API test passed/ { p += 1; next }
        /^test result: / || /^[0-9]+ (passed|failed)/ {
            s = $0
            while (match(s, /[0-9]+ (passed|failed)/)) {
                split(substr(s, RSTART, RLENGTH), a, " ")
                if (a[2] == "passed") p += a[1]; else f += a[1]
                s = substr(s, RSTART + RLENGTH)
            }
        }
        END { print p + 0, f + 0 }' "$log")
    passed=$((passed + p))
    failed=$((failed + f))
}

# Runs one step with its output shown and kept for counting.
run() {
    current="$1"
    shift
    step "$current"
    : > "$log"
    if "$@" 2>&1 | tee "$log"; then
        count
    else
        count
        [ "$failed" -gt 0 ] || failed=$((failed + 1))
        summary
        echo "FAILED in step: $current" >&2
        exit 1
    fi
}

summary() {
    printf '\n'
    [ ${#skipped[@]} -eq 0 ] || printf 'skipped: %s\n' "${skipped[@]}"
    printf '%d passed, %d failed\n' "$passed" "$failed"
}

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

if [ "$no_system" != 1 ]; then
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
fi

run "cargo fmt --check" cargo fmt --all -- --check
run "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
run "cargo test" cargo test --workspace

if [ "$no_system" != 1 ]; then
    step "kompakt-train: install (pinned torch/transformers/accelerate; the first install takes ~8 min)"
    python3 -m pip install -q --disable-pip-version-check -e "train[test]"
fi
if python3 -c "import torch, transformers, accelerate, kompakt_train" 2>/dev/null; then
    cargo build -q -p kompakt-cli
    run "kompakt-train pytest (CPU, tiny models)" env KOMPAKT_BIN="$PWD/target/debug/kompakt" \
        python3 -m pytest -q -p no:cacheprovider train/tests
else
    skipped+=("kompakt-train pytest (torch, transformers, accelerate or kompakt_train not importable)")
fi

if command -v gcc >/dev/null && command -v g++ >/dev/null; then
    # The CLI the C example is compared with: the test build (the release
    # build of the shipped library alone is LTO'd and takes a while).
    cargo build -q -p kompakt-cli
    run "C ABI: example against libkompakt.so and .a, header as C99 and C++, valgrind, Python binding" \
        env KOMPAKT_TEST_NO_SYSTEM="$no_system" KOMPAKT_BIN="$PWD/target/debug/kompakt" \
        bash bindings/c/test.sh
    if ! command -v valgrind >/dev/null; then
        skipped+=("the C example under valgrind (valgrind not installed)")
    fi
else
    skipped+=("C ABI tests and the Python binding (gcc/g++ not installed)")
fi

if [ "$no_system" = 1 ] && ! { command -v qemu-aarch64-static >/dev/null &&
    command -v aarch64-linux-gnu-gcc >/dev/null && [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]; }; then
    skipped+=("aarch64 kernels under qemu (cross toolchain or qemu-user-static not installed)")
else
    run "aarch64 kernels under qemu" bash scripts/test-aarch64.sh
fi

summary
