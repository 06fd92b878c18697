#!/usr/bin/env bash
# Builds a fully static `kompakt` CLI for x86_64 Linux: no shared library at
# all (glibc linked statically, `-C target-feature=+crt-static`), so the one
# file runs on any x86_64 Linux machine, with or without Rust. Then checks
# that it is static and that it converts and translates the fixture with no
# environment at all (`env -i`).
#
# musl would be the usual route; this toolchain has no musl standard library
# (rustup here cannot download targets, and Debian ships none), so the static
# build uses glibc, whose static libc.a is in libc6-dev. (glibc's static NSS
# caveats do not matter: kompakt resolves no host or user names.)
#
# Output: target/x86_64-unknown-linux-gnu/release/kompakt
set -euo pipefail
cd "$(dirname "$0")/.."
T=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target $T -p kompakt-cli
BIN="${CARGO_TARGET_DIR:-target}/$T/release/kompakt"
file "$BIN" 2> /dev/null || true
if ldd "$BIN" 2>&1 | grep -q '=>'; then
    ldd "$BIN"
    echo "FAIL: $BIN links shared libraries" >&2
    exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp "$BIN" "$TMP/kompakt"
env -i "$TMP/kompakt" convert --checkpoint "$PWD/tests/fixtures/models/tiny-mha" \
    --out "$TMP/m.kpk" --dtype q8_0 > /dev/null
env -i "$TMP/kompakt" translate --model "$TMP/m.kpk" --max-tokens 8 --json \
    "$PWD/tests/fixtures/audio/short_16k_mono_s16.wav" | grep -q '"token_ids":\[' ||
    { echo "FAIL: the static CLI did not translate" >&2; exit 1; }
printf 'ok: %s: static, %d bytes; converts and translates with an empty environment\n' \
    "$BIN" "$(stat -c %s "$BIN")"
