#!/usr/bin/env bash
# Runs Redis's own Tcl units for the data types (../shared/redis-tests, tag 7.0.15, never
# copied into this project) against a fresh ringkv node with its default persistence, and
# fails when a unit passes fewer than 95 % of the tests Redis itself passes there.
# Installs tclsh when missing. Skips (and says so) when the units are not on this machine.
# usage: scripts/tcl-units.sh [UNIT...]    (default: every unit the runner knows)
set -euo pipefail
cd "$(dirname "$0")/.."
units_dir=${REDIS_TESTS_DIR:-../shared/redis-tests}
if [ ! -x "$units_dir/run-units.sh" ]; then
  echo "tcl-units: $units_dir/run-units.sh is not here; Redis's units were not run"
  exit 0
fi
if ! command -v tclsh >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq tcl >/dev/null
fi
cargo build --release -p ringkv-server
port=${TCL_UNITS_PORT:-6395}
data=$(mktemp -d)
"${CARGO_TARGET_DIR:-target}"/release/ringkv-server --port "$port" --dir "$data" --loglevel warning &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
out=$("$units_dir/run-units.sh" 127.0.0.1 "$port" "$@" || true)
echo "$out"
# "unit/type/set: passed 94 of the 94 tests Redis 7.0.15 passes here; ..."
echo "$out" | awk '
  /: passed [0-9]+ of the [0-9]+ tests/ {
    units++; passed = $3; want = $6
    if (passed * 100 < want * 95) { printf "tcl-units: %s passed %d of %d, under 95%%\n", $1, passed, want; bad++ }
  }
  END { if (units == 0) { print "tcl-units: the runner reported no unit"; exit 1 } exit bad > 0 }'
