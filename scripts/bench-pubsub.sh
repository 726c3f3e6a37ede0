#!/usr/bin/env bash
# PUBLISH to 1 and to 100 subscribers against redis-server in one run; see bench_pubsub.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
cargo build --release -p ringkv-server
exec python3 scripts/bench_pubsub.py "$@"
