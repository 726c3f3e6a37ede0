#!/usr/bin/env bash
# The persistence tier against redis-server's AOF: installs redis-server (and strace) when
# missing, then runs scripts/bench_persistence.py (writes docs/persistence-benchmarks.md).
# DURATION=<seconds per run> ROUNDS=<rounds> SETTLE=<seconds> KEYS=<keys>; QUICK=1 for a
# short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
if ! command -v strace >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq strace >/dev/null || true
fi
exec python3 scripts/bench_persistence.py "$@"
