#!/usr/bin/env bash
# ringkv vs redis-server, measured in the same run: both servers pinned to the same core
# (SERVER_CORE), redis-benchmark pinned to another (LOAD_CORE). GET and SET with 50
# clients at pipeline depth 1 and 16, servers interleaved run by run over ROUNDS rounds.
# Reports median throughput and the server's CPU time per operation (utime + stime from
# /proc/PID/stat over the run, divided by the requests), which separates two servers even
# when redis-benchmark saturates its own core first.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
ROUNDS=${ROUNDS:-3}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_P16=${REQUESTS_P16:-2000000}
RINGKV_PORT=${RINGKV_PORT:-7379}
REDIS_PORT=${REDIS_PORT:-7380}

command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
cargo build --release --bin ringkv-server >/dev/null

taskset -c "$SERVER_CORE" target/release/ringkv-server --port "$RINGKV_PORT" --io-threads 1 --loglevel warning &
RINGKV_PID=$!
taskset -c "$SERVER_CORE" redis-server --port "$REDIS_PORT" --save '' --appendonly no --loglevel warning &
REDIS_PID=$!
trap 'kill $RINGKV_PID $REDIS_PID 2>/dev/null || true' EXIT
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

results=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for pipeline in 1 16; do
    requests=$REQUESTS_P1
    [ "$pipeline" = 16 ] && requests=$REQUESTS_P16
    for test in get set; do
      for server in ringkv redis; do
        if [ "$server" = ringkv ]; then port=$RINGKV_PORT pid=$RINGKV_PID; else port=$REDIS_PORT pid=$REDIS_PID; fi
        before=$(cpu_ticks "$pid")
        rps=$(taskset -c "$LOAD_CORE" redis-benchmark -p "$port" -c 50 -P "$pipeline" -n "$requests" -t "$test" -r 100000 -d 64 --csv -q \
          | awk -F, 'NR==2 {gsub(/"/,"",$2); print $2}')
        after=$(cpu_ticks "$pid")
        echo "$server $test $pipeline $rps $(( after - before )) $requests" >> "$results"
      done
    done
  done
done

python3 - "$results" "$ticks_per_second" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    server, test, pipeline, rps, ticks, requests = line.split()
    rows[(test, int(pipeline), server)].append((float(rps), int(ticks) / int(sys.argv[2]) / int(requests) * 1e6))
print("| test | -P | ringkv ops/s | redis ops/s | ratio | ringkv CPU µs/op | redis CPU µs/op | CPU ratio |")
print("|---|---|---|---|---|---|---|---|")
for test in ("get", "set"):
    for pipeline in (1, 16):
        r = rows[(test, pipeline, "ringkv")]; d = rows[(test, pipeline, "redis")]
        r_rps = statistics.median(x[0] for x in r); d_rps = statistics.median(x[0] for x in d)
        r_cpu = statistics.median(x[1] for x in r); d_cpu = statistics.median(x[1] for x in d)
        print(f"| {test.upper()} | {pipeline} | {r_rps:,.0f} | {d_rps:,.0f} | {r_rps/d_rps:.2f} | {r_cpu:.2f} | {d_cpu:.2f} | {r_cpu/d_cpu:.2f} |")
PY
