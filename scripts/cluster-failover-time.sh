#!/usr/bin/env bash
# Measures, over ROUNDS runs, kill -9 of one of 3 local members → the first write that
# succeeds to a key its slots held (and, separately, → both survivors agreeing on a
# 2-member table). Prints each round and the p50/p99. Needs redis-py (scripts/test
# installs it). Usage: scripts/cluster-failover-time.sh [ROUNDS] [BASE_PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin ringkv --bin ringkv-server
python3 -c "import redis" 2>/dev/null || python3 -m pip install --quiet "redis>=5"
exec python3 scripts/cluster_failover_time.py "${1:-10}" "${2:-7600}"
