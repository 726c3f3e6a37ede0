#!/usr/bin/env bash
# Sends the same commands to redis-server and to a fresh ringkv node and fails on any reply
# that is not byte-equal (scripts/fidelity.py: streams, logical databases, Lua scripting and
# libraries' verbatim scripts, in RESP2 and RESP3). Installs redis-server when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
cargo build -q -p ringkv-server
redis_port=${FIDELITY_REDIS_PORT:-6396}
ringkv_port=${FIDELITY_RINGKV_PORT:-6397}
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
redis=$!
"${CARGO_TARGET_DIR:-target}"/debug/ringkv-server --port "$ringkv_port" --persistence no --loglevel warning &
ringkv=$!
trap 'kill $redis $ringkv 2>/dev/null; wait $redis $ringkv 2>/dev/null' EXIT
for port in "$redis_port" "$ringkv_port"; do
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
done
python3 scripts/fidelity.py "$redis_port" "$ringkv_port"
