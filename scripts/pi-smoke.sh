#!/usr/bin/env bash
# Smoke test of the Raspberry Pi build under qemu-user, on an x86_64 machine:
#  1. cross-builds the aarch64 binaries (scripts/build-pi.sh, which reads PROFILE
#     and BUILDS: by default both, in their release profiles) and, unless
#     NATIVE_RULEGATE names one, the native one;
#  2. precompiles the humidity-alert rule here with `rule compile --target aarch64`;
#  3. under qemu-aarch64, runs `rule test` on that artifact with each aarch64
#     binary and checks the output line; checks that the runtime-only binary
#     refuses the .wasm with its "built without the compiler" error, and
#     `rule compile` with a pointer to a full build;
#  4. under qemu-aarch64, runs the demo for DEMO_SECS seconds (default 5) with
#     the full binary on the .wasm and the runtime-only one on the artifact, and
#     checks that every reading was archived and some alerts were raised.
# Any failure stops it with a line starting `pi-smoke: FAIL`. Installs qemu-user
# when missing. CARGO_TARGET_DIR is honoured. The test suite (scripts/test.sh)
# runs it on the runtime-only binary in the quick-to-build `smoke` profile.
# See docs/raspberry-pi.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_SECS="${DEMO_SECS:-5}"
TARGET=aarch64-unknown-linux-gnu
export BUILDS="${BUILDS:-runtime full}"
target_dir="${CARGO_TARGET_DIR:-target}"
out_dir() { echo "$target_dir/$TARGET/$([ "$1" = dev ] && echo debug || echo "$1")"; }
pi_full="$(out_dir "${PROFILE:-dist}")/rulegate"
pi_runtime="$(out_dir "${PROFILE:-dist-runtime}")/rulegate-runtime"
native="${NATIVE_RULEGATE:-$target_dir/debug/rulegate}"
built() { [[ " $BUILDS " == *" $1 "* ]]; }

fail() {
    echo "pi-smoke: FAIL: $*" >&2
    exit 1
}
step() { echo "pi-smoke: $*"; }

if ! command -v qemu-aarch64 >/dev/null; then
    apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq qemu-user >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

bash scripts/build-pi.sh
if [ -z "${NATIVE_RULEGATE:-}" ]; then
    cargo build --quiet -p rulegate
fi
cargo build-rules --quiet

# The aarch64 loader and libc come from Debian's cross libc (libc6-arm64-cross).
on_pi() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export XDG_CACHE_HOME="$work/cache"
rules="$PWD/rules/target/wasm32-wasip2/release"
wasm="$rules/humidity_alert.wasm"
artifact="$work/humidity_alert.cwasm"

step "precompiling humidity-alert on $(uname -m) for aarch64"
"$native" rule compile --target aarch64 --out "$artifact" "$wasm" ||
    fail "rule compile --target aarch64"

# qemu-user translates each aarch64 instruction, and the smoke profile leaves
# the dependencies unoptimised: here the rule's start alone overran the default
# 100 ms limit. The limits themselves are tested natively by `cargo test`.
time_limit_ms=10000
expected='{"type":"emit","payload":"Humidity 32 under threshold for device name soilSensor2","attributes":{"subject":"Attention:Humidity Under Threshold"}}'
rule_test() {
    on_pi "$1" rule test "$2" --no-cache --topic device/soilSensor2/devicePayload \
        --payload '{"name":"soilSensor2","humidity":32}' --config threshold=35 --time-limit-ms "$time_limit_ms"
}
binaries=()
if built full; then binaries+=("$pi_full"); fi
if built runtime; then binaries+=("$pi_runtime"); fi
[ "${#binaries[@]}" -gt 0 ] || fail "BUILDS='$BUILDS' names no binary"
for binary in "${binaries[@]}"; do
    step "$(basename "$binary"): rule test on the precompiled artifact"
    output="$(rule_test "$binary" "$artifact")" || fail "$binary rule test $artifact"
    [ "$output" = "$expected" ] || fail "$binary rule test printed '$output', expected '$expected'"
done

if built runtime; then
    step "rulegate-runtime: refuses the .wasm"
    if refusal="$(rule_test "$pi_runtime" "$wasm" 2>&1)"; then
        fail "the runtime-only binary ran a .wasm: $refusal"
    fi
    [[ "$refusal" == *"built without the compiler"*"rule compile --target aarch64"* ]] ||
        fail "the runtime-only binary's refusal does not say how to precompile: $refusal"
    step "rulegate-runtime: rule compile says where to precompile"
    if refusal="$(on_pi "$pi_runtime" rule compile --target aarch64 "$wasm" 2>&1)"; then
        fail "the runtime-only binary ran rule compile: $refusal"
    fi
    [[ "$refusal" == *"built without it"*"full build"* ]] ||
        fail "the runtime-only binary's rule compile does not say where to precompile: $refusal"
fi

# The demo's configuration on a free port, with the module and sinks in $work.
demo_config() {
    local module="$1" dir="$work/demo-$2" port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$dir"
    sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
        -e "s|^module = .*|module = \"$module\"\nlimits = { time_ms = $time_limit_ms }|" \
        -e "s|^directory = \"../rulegate-demo/|directory = \"$dir/|" \
        gateway-config/demo.toml >"$dir/demo.toml"
    echo "$dir/demo.toml"
}
run_demo() {
    local binary="$1" config="$2" summary published archived alerts
    step "$(basename "$binary"): demo for $DEMO_SECS s with $(grep '^module' "$config")"
    summary="$(on_pi "$binary" demo --config "$config" --duration-secs "$DEMO_SECS" --seed 7 </dev/null)" ||
        fail "$binary demo --config $config"
    summary="$(grep '^published' <<<"$summary")" || fail "$binary demo printed no summary"
    read -r published archived alerts < <(sed -E 's/published ([0-9]+) readings; archived ([0-9]+), alerts ([0-9]+)/\1 \2 \3/' <<<"$summary")
    step "  $summary"
    [ "$published" -gt 0 ] || fail "the demo published nothing"
    [ "$archived" -eq "$published" ] || fail "the demo archived $archived of $published readings"
    [ "$alerts" -gt 0 ] || fail "the demo raised no alert"
}
if built full; then run_demo "$pi_full" "$(demo_config "$wasm" full)"; fi
if built runtime; then run_demo "$pi_runtime" "$(demo_config "$artifact" runtime)"; fi

step "ok"
