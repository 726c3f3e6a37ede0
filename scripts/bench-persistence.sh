#!/usr/bin/env bash
# The persistence tier against redis-server's AOF: installs redis-server when missing, then
# runs scripts/bench_persistence.py (writes docs/persistence-benchmarks.md).
# N=<requests per cell>, ROUNDS=<rounds>, KEYS=<keys for the recovery run>.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
exec python3 scripts/bench_persistence.py "$@"
