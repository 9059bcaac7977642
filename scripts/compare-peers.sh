#!/usr/bin/env bash
# rulegate beside Node-RED on the same load, broker and machine: `rulegate
# bench` with both as peers, processes of their own behind Mosquitto, each
# turning every soil reading under 35 % humidity into an alert — rulegate with
# the SQL `WHERE` and the humidity-alert Wasm rule (bench/peers/rulegate/),
# Node-RED 4 with an mqtt-in → function → mqtt-out flow (bench/peers/node-red/).
# A third peer is the floor under any engine: Mosquitto's own C clients piped
# into each other, relaying every reading at QoS 1 with no rule and nothing
# kept. The report has them beside the broker alone and the in-process stages.
#
#   scripts/compare-peers.sh [more `rulegate bench` options, e.g. --messages 50000]
#
# Needs Node.js 18 or newer with npm, Mosquitto and its clients (apt-get install
# mosquitto mosquitto-clients), and the wasm32-wasip2 target.
set -euo pipefail
command -v mosquitto_sub >/dev/null && command -v mosquitto_pub >/dev/null ||
    { echo "needs mosquitto_sub and mosquitto_pub: apt-get install mosquitto-clients" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -p rulegate -j2
cargo build-rules
npm ci --prefix bench/peers/node-red --no-audit --no-fund --loglevel=error

bin="$root/target/release/rulegate"
rules="$root/rules/target/wasm32-wasip2/release"
node_red="$root/bench/peers/node-red"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# humidity-alert precompiled, as a gateway on a Pi loads it: no compiling at
# start, which the idle memory would count.
"$bin" rule compile "$rules/humidity_alert.wasm" --out "$work/humidity_alert.cwasm"
sed -e "s|@MODULE@|$work/humidity_alert.cwasm|" -e "s|@CACHE@|$work/cache|" \
    bench/peers/rulegate/gateway.toml > "$work/gateway.toml.in"

# Each peer command runs under `sh -c` in an empty directory of its own, with
# the broker's port in RULEGATE_BENCH_PORT; `exec` makes the engine the
# process that is measured. Paths are quoted for that shell.
q() { printf '%q' "$1"; }
"$bin" bench --rules-dir "$rules" "$@" \
    --peer "rulegate=sed \"s/@PORT@/\$RULEGATE_BENCH_PORT/\" $(q "$work/gateway.toml.in") > gateway.toml && exec $(q "$bin") run --config gateway.toml" \
    --peer "node-red=cp $(q "$node_red/flows.json") . && exec node $(q "$node_red/node_modules/node-red/red.js") --settings $(q "$node_red/settings.js") --userDir . flows.json" \
    --peer "mosquitto-relay=mosquitto_sub -p \$RULEGATE_BENCH_PORT -i relay-in -q 1 -t 'device/+/devicePayload' | exec mosquitto_pub -p \$RULEGATE_BENCH_PORT -i relay-out -q 1 -t bench/out/relay -l"
