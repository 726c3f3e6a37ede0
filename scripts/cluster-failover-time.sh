#!/usr/bin/env bash
# Measures, over ROUNDS runs, the milliseconds from SIGKILL of one of 3 local members to
# both survivors reporting a 2-member table with one epoch (CLUSTER INFO polled every 20 ms).
# Usage: scripts/cluster-failover-time.sh [ROUNDS] [BASE_PORT]
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
base=${2:-7600}
cargo build --release -q --bin ringkv --bin ringkv-server
info() { redis-cli -p "$1" cluster info | tr -d '\r' | grep -E "known_nodes|current_epoch" | cut -d: -f2 | tr '\n' ' '; }
for round in $(seq 1 "$rounds"); do
  port=$((base + round * 10))
  target/release/ringkv cluster up --nodes 3 --base-port "$port" --json >/dev/null 2>&1 &
  up=$!
  trap 'kill -INT "$up" 2>/dev/null' EXIT
  for _ in $(seq 1 300); do
    [[ "$(info "$port" 2>/dev/null)" == 3* ]] && break
    sleep 0.02
  done
  victim=$(pgrep -f "ringkv-server --port $((port + 2)) ")
  kill -9 "$victim"
  start=$(date +%s%N)
  for _ in $(seq 1 500); do
    a=$(info "$port"); b=$(info $((port + 1)))
    [[ "$a" == 2* && "$a" == "$b" ]] && break
    sleep 0.02
  done
  echo "round $round: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  kill -INT "$up"; wait "$up" 2>/dev/null || true
done
