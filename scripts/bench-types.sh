#!/usr/bin/env bash
# Data-type commands (lists so far) against redis-server in one run; see bench_types.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
cargo build --release -p ringkv-server
exec python3 scripts/bench_types.py "$@"
