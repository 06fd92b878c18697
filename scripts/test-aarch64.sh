#!/usr/bin/env bash
# Builds and runs the kompakt-kernels tests for aarch64 under qemu, once with
# `-cpu max` (NEON + dotprod: the sdot path) and once with `-cpu cortex-a72`
# (NEON without dotprod); then the library, the C example and the CLI end to
# end (below). Installs Debian's cross toolchain when missing.
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

# End to end on aarch64: the shipped library (release: LTO, stripped, no
# tokenizer), the C example against libkompakt.so and libkompakt.a, and the
# CLI (profile `qemu`: the release build under Debian's rustc takes long), all
# under qemu on the tiny fixture model (q8_0) and WAV. The token ids must
# equal the x86_64 CLI's.
KOMPAKT_X86="${KOMPAKT_BIN:-}"
if [ -z "$KOMPAKT_X86" ]; then
    env -u RUSTC -u RUSTDOC CARGO_TARGET_DIR="${CARGO_TARGET_DIR_HOST:-target}" \
        cargo build -q -p kompakt-cli
    KOMPAKT_X86="${CARGO_TARGET_DIR_HOST:-target}/debug/kompakt"
fi
T=aarch64-unknown-linux-gnu
echo "== aarch64: libkompakt (release) and the kompakt CLI (profile qemu)"
cargo build --release --target $T -p kompakt-capi
cargo build --profile qemu --target $T -p kompakt-cli
LIB="$CARGO_TARGET_DIR/$T/release"
CLI="$CARGO_TARGET_DIR/$T/qemu/kompakt"
so_bytes=$(stat -c %s "$LIB/libkompakt.so")
awk -v b="$so_bytes" 'BEGIN { printf "libkompakt.so (release, aarch64): %d bytes (%.2f MB)\n", b, b / 1e6 }'
[ "$so_bytes" -le 2500000 ] || { echo "FAIL: aarch64 libkompakt.so is over 2.5 MB" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
INC=bindings/c/include
aarch64-linux-gnu-gcc -std=c99 -Wall -Wextra -Werror -pedantic -I "$INC" \
    bindings/c/examples/translate.c -L "$LIB" -lkompakt -o "$TMP/translate_shared"
aarch64-linux-gnu-gcc -std=c99 -Wall -Wextra -Werror -pedantic -I "$INC" \
    bindings/c/examples/translate.c "$LIB/libkompakt.a" -lm -lpthread -ldl -lrt \
    -o "$TMP/translate_static"

MODEL="$TMP/m.kpk"
WAV=tests/fixtures/audio/short_16k_mono_s16.wav
"$KOMPAKT_X86" convert --checkpoint tests/fixtures/models/tiny-mha --out "$MODEL" --dtype q8_0 \
    > /dev/null
ids_of() { grep -o '"token_ids":\[[0-9,]*\]' | sed 's/"token_ids"://'; }
QEMU=(qemu-aarch64-static -cpu max)
for lang in de zh; do
    want=$("$KOMPAKT_X86" translate --model "$MODEL" --lang "$lang" --max-tokens 16 --json "$WAV" |
        ids_of)
    got_cli=$("${QEMU[@]}" "$CLI" translate --model "$MODEL" --lang "$lang" --max-tokens 16 \
        --json "$WAV" | ids_of)
    [ -n "$want" ] && [ "$want" = "$got_cli" ] ||
        { echo "FAIL: aarch64 CLI ($lang): $got_cli, x86_64: $want" >&2; exit 1; }
    for kind in shared static; do
        got=$(LD_LIBRARY_PATH="$LIB" "${QEMU[@]}" "$TMP/translate_$kind" "$MODEL" "$WAV" \
            "$lang" 16 2> /dev/null | sed -n 's/^token_ids: //p')
        [ "$want" = "$got" ] ||
            { echo "FAIL: aarch64 C example ($kind, $lang): $got, x86_64: $want" >&2; exit 1; }
    done
    echo "ok: aarch64 CLI and C example (shared, static), $lang: token ids identical to x86_64: $want"
done
