#!/usr/bin/env bash
# Replication's cost on the write path. A 2-member cluster (no persistence); every key
# carries the hash tag {a}, so one member is the slot's primary and the other its replica
# (--cluster-replicas 1) or holds nothing (0). The primary runs on core 1, the other member
# and the load generator (ringkv bench) on core 0. For each case: SET ops/s at -P 16 and the
# primary's CPU per SET (utime + stime from /proc over the run), then latency at -P 1 of SET
# and of SET + WAIT 1 0 pipelined (-t setwait, replicas 1 only), with 1 and 10 clients, and
# (replicas 1) the replication lag a probe sees under the -P 16 load (bench_repl_lag.py).
# Usage: scripts/bench-replication.sh [SECONDS] [BASE_PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
base=${2:-7300}
cargo build --release -q --bin ringkv --bin ringkv-server
python3 -c "import redis" 2>/dev/null || python3 -m pip install --quiet "redis>=5"
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { python3 -c "import json,sys; r=json.load(sys.stdin)[0]; print(r['$1'])"; }

run() {
  local replicas=$1 p1=$((base + 10 * $1 + 1)) p2=$((base + 10 * $1 + 2)) n1 n2
  taskset -c 1 target/release/ringkv-server --port "$p1" --persistence no --cluster-enabled yes \
    --cluster-bus-port $((p1 + 10000)) --cluster-replicas "$replicas" --bind 127.0.0.1 \
    --cluster-replica-reads yes --loglevel warning >/dev/null 2>&1 &
  n1=$!
  taskset -c 0 target/release/ringkv-server --port "$p2" --persistence no --cluster-enabled yes \
    --cluster-bus-port $((p2 + 10000)) --cluster-replicas "$replicas" --bind 127.0.0.1 \
    --cluster-join 127.0.0.1:$((p1 + 10000)) --cluster-replica-reads yes --loglevel warning \
    >/dev/null 2>&1 &
  n2=$!
  trap 'kill -9 $n1 $n2 2>/dev/null; wait $n1 $n2 2>/dev/null || true' RETURN
  for _ in $(seq 100); do
    redis-cli -p "$p1" cluster info 2>/dev/null | grep -q known_nodes:2 && break
    sleep 0.1
  done
  sleep 2
  local port=$p1 pid=$n1 other=$n2 other_port=$p2 moved
  moved=$(redis-cli -p "$p1" set '{a}probe' 1 2>&1 || true)
  if [[ "$moved" == MOVED* ]]; then
    # The slot is the other member's: swap the cores so the primary has core 1.
    port=$p2; pid=$n2; other=$n1; other_port=$p1
    taskset -apc 1 "$n2" >/dev/null; taskset -apc 0 "$n1" >/dev/null
  fi
  local bench=(taskset -c 0 target/release/ringkv bench -p "$port" --key-tag '{a}' -r 100000 -d 64
               --warmup 1 --json)
  local before after other_before other_after out
  before=$(cpu "$pid"); other_before=$(cpu "$other")
  out=$(timeout $((seconds * 3)) "${bench[@]}" -t set -c 50 -P 16 --duration "$seconds")
  after=$(cpu "$pid"); other_after=$(cpu "$other")
  echo "  primary RSS after the run: $(($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) MB, $(redis-cli -p "$port" info replication | tr -d '\r' | grep -E 'repl_(full|partial)_syncs' | tr '\n' ' ')"
  local ops requests
  ops=$(field ops_per_sec <<<"$out"); requests=$(field requests <<<"$out")
  # The other member shares core 0 with the load generator: what it spends there, the
  # generator does not get.
  printf 'replicas=%s: SET -P 16 %.0f ops/s (reply errors %s), primary %.3f µs/SET, other member %.3f µs/SET\n' \
    "$replicas" "$ops" "$(field reply_errors <<<"$out")" \
    "$(echo "($after - $before) * 1000000 / $tick / $requests" | bc -l)" \
    "$(echo "($other_after - $other_before) * 1000000 / $tick / $requests" | bc -l)"
  if [ "$replicas" = 1 ]; then
    # The same load again, with a probe timing how long its writes take to show on the
    # replica.
    timeout $((seconds * 3)) "${bench[@]}" -t set -c 50 -P 16 --duration "$seconds" >/dev/null &
    local load=$!
    sleep 1
    taskset -c 0 python3 scripts/bench_repl_lag.py "$port" "$other_port" $((seconds - 2))
    wait "$load" || true
  fi
  for clients in 1 10; do
    for test in set setwait; do
      [ "$test" = setwait ] && [ "$replicas" = 0 ] && continue
      out=$(timeout $((seconds * 3)) "${bench[@]}" -t "$test" -c "$clients" -P 1 --duration "$seconds")
      printf '  %-8s -c %-2s -P 1: p50 %s ms, p99 %s ms, %.0f ops/s\n' "$test" "$clients" \
        "$(field p50_ms <<<"$out")" "$(field p99_ms <<<"$out")" "$(field ops_per_sec <<<"$out")"
    done
  done
}
run 0
run 1
