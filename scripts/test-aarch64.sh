#!/usr/bin/env bash
# Builds and runs the kompakt-kernels tests for aarch64 under qemu, once with
# `-cpu max` (NEON + dotprod: the sdot path) and once with `-cpu cortex-a72`
# (NEON without dotprod). Installs Debian's cross toolchain when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/rustc ] || need+=(rustc-web)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_AARCH64:-${CARGO_TARGET_DIR:-target}-aarch64}"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export PROPTEST_CASES="${PROPTEST_CASES:-32}"
for cpu in max cortex-a72; do
    echo "== aarch64 kernels tests, qemu -cpu $cpu"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -cpu $cpu" \
        cargo test --release --target aarch64-unknown-linux-gnu -p kompakt-kernels
done
