#!/usr/bin/env bash
# Cross-builds rulegate for Raspberry Pi OS 64-bit (Pi 3/4/5,
# aarch64-unknown-linux-gnu) with Debian's cross gcc: installs the Rust target and
# the cross toolchain when missing, then builds two release binaries:
#   target/aarch64-unknown-linux-gnu/release/rulegate           full (with Cranelift)
#   target/aarch64-unknown-linux-gnu/release/rulegate-runtime   runtime only: loads
#       rules precompiled with `rulegate rule compile --target aarch64`
# Both come from one profile, so the second build reuses every dependency the
# features leave alone. CARGO_TARGET_DIR moves `target/`; CARGO_BUILD_JOBS caps
# the parallel jobs (default 2). See docs/raspberry-pi.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi

# The linker comes from .cargo/config.toml; the cc crate finds the C compiler for
# ring and aws-lc by the same prefix.
jobs=(--jobs "${CARGO_BUILD_JOBS:-2}")
out="${CARGO_TARGET_DIR:-target}/$TARGET/release"
cargo build --release --target "$TARGET" -p rulegate --no-default-features "${jobs[@]}"
cp "$out/rulegate" "$out/rulegate-runtime"
cargo build --release --target "$TARGET" -p rulegate "${jobs[@]}"

for binary in "$out/rulegate" "$out/rulegate-runtime"; do
    echo "$binary: $(stat -c %s "$binary") bytes"
done
