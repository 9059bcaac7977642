#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (the wasm32-wasip2 target, Mosquitto, moto), then `cargo test`, then the smoke
# test of the Raspberry Pi build under qemu (scripts/pi-smoke.sh, which installs
# the cross toolchain and qemu-user). Arguments go to `cargo test` and leave out
# the smoke test, to run a selection.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq mosquitto >/dev/null
fi

if ! command -v moto_server >/dev/null || ! python3 -c 'import moto.server' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
    # Under pyenv a new console script needs its shim.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
fi
command -v moto_server >/dev/null || { echo "moto_server is not on PATH after installing moto" >&2; exit 1; }

cargo test --workspace "$@"

if [ $# -eq 0 ]; then
    # The runtime-only aarch64 binary, what a Pi runs, in the quick-to-build
    # `smoke` profile, on rules precompiled by the x86_64 binary `cargo test`
    # just built: that precompiling runs Cranelift's aarch64 backend, which is
    # what the full aarch64 binary would add. Building that one too took a
    # cold run 5 more minutes (BUILDS="runtime full" adds it).
    PROFILE=smoke BUILDS=runtime NATIVE_RULEGATE="${CARGO_TARGET_DIR:-target}/debug/rulegate" \
        bash scripts/pi-smoke.sh
fi
