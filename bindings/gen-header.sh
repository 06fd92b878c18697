#!/usr/bin/env bash
# Regenerates bindings/c/include/kompakt.h from the Rust sources with cbindgen
# (through the `header` test, which otherwise checks the header is current).
set -euo pipefail
cd "$(dirname "$0")/.."
KOMPAKT_BLESS_HEADER=1 cargo test -q -p kompakt-capi --test header
echo "wrote bindings/c/include/kompakt.h"
