#!/usr/bin/env bash
# Cross-builds rulegate for Raspberry Pi OS 64-bit (Pi 3/4/5,
# aarch64-unknown-linux-gnu) with Debian's cross gcc: installs the Rust target and
# the cross toolchain when missing, then builds, in target/aarch64-unknown-linux-gnu/:
#   dist/rulegate                   full (with Cranelift)
#   dist-runtime/rulegate-runtime   runtime only: loads rules precompiled with
#                                   `rulegate rule compile --target aarch64`
# in the size-tuned profiles of the workspace's Cargo.toml. PROFILE builds both
# in another profile (the test suite's smoke test uses `smoke`); BUILDS (default
# "runtime full") picks the binaries. CARGO_TARGET_DIR moves `target/`;
# CARGO_BUILD_JOBS caps the parallel jobs (default: one per CPU). See
# docs/raspberry-pi.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
BUILDS="${BUILDS:-runtime full}"
full_profile="${PROFILE:-dist}"
runtime_profile="${PROFILE:-dist-runtime}"

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || [ ! -x /usr/lib/llvm-19/bin/ld.lld ]; then
    apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
    # Only makes the binary smaller (see scripts/aarch64-linker): not fatal when missing.
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq lld-19 >/dev/null ||
        echo "build-pi: lld-19 is not available; linking with GNU ld, about a megabyte larger" >&2
fi

# The linker (scripts/aarch64-linker) comes from .cargo/config.toml; the cc
# crate finds the C compiler for ring by the same prefix.

# Cargo writes the dev profile to `debug/`, every other one to a folder of its name.
out_dir() { echo "${CARGO_TARGET_DIR:-target}/$TARGET/$([ "$1" = dev ] && echo debug || echo "$1")"; }
build() { cargo build --profile "$1" --target "$TARGET" -p rulegate "${@:2}"; }
for kind in $BUILDS; do
    [[ "$kind" == runtime || "$kind" == full ]] ||
        { echo "build-pi: BUILDS names \`$kind\`; it takes \`runtime\` and \`full\`" >&2; exit 2; }
done
binaries=()
if [[ " $BUILDS " == *" runtime "* ]]; then
    build "$runtime_profile" --no-default-features --features mimalloc
    # Renamed, since a full build in the same profile writes `rulegate` too.
    cp "$(out_dir "$runtime_profile")/rulegate" "$(out_dir "$runtime_profile")/rulegate-runtime"
    binaries+=("$(out_dir "$runtime_profile")/rulegate-runtime")
fi
if [[ " $BUILDS " == *" full "* ]]; then
    build "$full_profile"
    binaries+=("$(out_dir "$full_profile")/rulegate")
fi
for binary in "${binaries[@]}"; do
    echo "$binary: $(stat -c %s "$binary") bytes"
done
