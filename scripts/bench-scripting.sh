#!/usr/bin/env bash
# EVALSHA of a 1-command and a 10-command script against redis-server in one run, plus the
# cost of SCRIPT LOAD and the script cache's memory; see bench_scripting.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
cargo build --release -p ringkv-server
exec python3 scripts/bench_scripting.py "$@"
