#!/usr/bin/env bash
# ringkv vs redis-server in one command: installs what the comparison needs (redis-server,
# redis-tools, matplotlib for the chart) when missing, then runs scripts/bench_vs_redis.py,
# which writes docs/benchmarks.md and docs/benchmarks.png. ROUNDS=5 for more rounds,
# QUICK=1 for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/ensure-redis.sh
# Debian's redis-server package starts a service on 6379; the comparison uses its own ports.
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib
exec python3 scripts/bench_vs_redis.py "$@"
