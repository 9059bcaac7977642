#!/usr/bin/env bash
# Runs the soil-moisture demo on a fresh machine: installs the wasm32-wasip2
# target when missing, builds the example rules, then `rulegate demo`.
# Extra arguments go to `rulegate demo` (e.g. --sensors 10 --rate 50).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build-rules --quiet
cargo run --quiet -- demo "$@"
