#!/usr/bin/env bash
# Builds the `dist` binary with profile-guided optimisation (PGO): an
# instrumented build runs a training load on loopback, and the final build is
# optimised and laid out by what ran: code that never ran (error paths, code
# the training did not reach) is optimised for size, so a running gateway keeps
# fewer pages of code resident (docs/performance.md has what this gains).
#
# Training: the soil-moisture demo (embedded broker, simulator, file sinks, the
# humidity-alert rule), then the end-to-end bench through Mosquitto (every
# scenario: SQL and Wasm rules, file archive, 1,000 rules, 10 KB payloads), so
# Mosquitto must be installed (scripts/test.sh installs it). The S3 and SNS
# sinks are not trained: they need an endpoint, so their code counts as cold
# and is optimised for size.
#
# Writes target/<host triple>/dist/rulegate; the instrumented build, the
# profiles and the training's reports go to target/pgo/. CARGO_TARGET_DIR moves
# `target/`; CARGO_BUILD_JOBS caps the parallel jobs (default: one per CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

triple="$(rustc -vV | sed -n 's/^host: //p')"
# llvm-profdata must match rustc's LLVM: the distribution's would not read the profiles.
profdata="$(rustc --print sysroot)/lib/rustlib/$triple/bin/llvm-profdata"
[ -x "$profdata" ] || rustup component add llvm-tools
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
work="$target_dir/pgo"
rm -rf "$work/profiles" "$work/training" "$work"/rulegate-*.profdata
mkdir -p "$work/profiles" "$work/training"

# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros.
build() {
    cargo build --profile dist --target "$triple" -p rulegate
}

echo "build-pgo: instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$work/profiles" CARGO_TARGET_DIR="$work/instrumented" build
cargo build-rules --quiet

trainee="$work/instrumented/$triple/dist/rulegate"
echo "build-pgo: training" >&2
"$trainee" demo --duration-secs 10 --sensors 20 --rate 500 >/dev/null
"$trainee" bench --messages 20000 --large-messages 2000 --out "$work/training" >/dev/null
# Named by its content: cargo rebuilds with a new profile only when RUSTFLAGS
# changes, not when the file it names does.
merged="$work/profiles/merged.profdata"
"$profdata" merge -o "$merged" "$work/profiles"/*.profraw
profile="$work/rulegate-$(sha256sum "$merged" | cut -c1-16).profdata"
mv "$merged" "$profile"

echo "build-pgo: optimised build" >&2
RUSTFLAGS="-Cprofile-use=$profile" CARGO_TARGET_DIR="$target_dir" build
echo "$target_dir/$triple/dist/rulegate: $(stat -c %s "$target_dir/$triple/dist/rulegate") bytes"
