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

cargo test --workspace --jobs "${CARGO_BUILD_JOBS:-2}" "$@"

if [ $# -eq 0 ]; then
    # Both aarch64 binaries, in the quick-to-build `smoke` profile; rules are
    # precompiled with the x86_64 binary `cargo test` just built.
    PROFILE=smoke NATIVE_RULEGATE="${CARGO_TARGET_DIR:-target}/debug/rulegate" bash scripts/pi-smoke.sh
fi
