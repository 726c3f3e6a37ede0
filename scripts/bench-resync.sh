#!/usr/bin/env bash
# Snapshot throughput of a full resync: a 2-member cluster (the replica persists, so it
# keeps its node id), KEYS keys (16-byte names, 64-byte values) under one hash tag (one slot, one primary),
# then the replica is killed and restarted: its link position is gone with the process, so
# it resyncs the slot from scratch (over its own copy, which it never clears). Reports the
# time from the replica having loaded its data to the slot synced, as keys/s and MB/s.
# Usage: scripts/bench-resync.sh [KEYS] [BASE_PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
base=${2:-7400}
cargo build --release -q --bin ringkv-server
work=$(mktemp -d)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
member() { # port, extra...
  local port=$1; shift
  target/release/ringkv-server --port "$port" --cluster-enabled yes --bind 127.0.0.1 \
    --cluster-bus-port $((port + 10000)) --loglevel warning "$@" >/dev/null 2>&1 &
  pids+=($!)
}
field() { redis-cli -p "$1" info "$2" | tr -d '\r' | awk -F: -v k="$3" '$1 == k {print $2}'; }
a=$base b=$((base + 1))
member "$a" --persistence no
member "$b" --persistence yes --dir "$work/b" --cluster-join 127.0.0.1:$((a + 10000))
for _ in $(seq 200); do
  [ "$(redis-cli -p "$a" cluster info 2>/dev/null | tr -d '\r' | grep known_nodes)" = cluster_known_nodes:2 ] && break
  sleep 0.05
done
sleep 1
primary=$a
# A hash tag whose slot the non-persisting member serves.
tag=
for i in $(seq 0 200); do
  if ! redis-cli -p "$a" set "{t$i}probe" 1 | grep -q MOVED; then tag="t$i"; break; fi
done
[ -n "$tag" ] || { echo "no tag found on the first member" >&2; exit 1; }
python3 - "$keys" "$tag" <<'PY' | redis-cli -p "$primary" --pipe | tail -1
import sys
value = "v" * 64
out = sys.stdout
for i in range(int(sys.argv[1])):
    key = f"{{{sys.argv[2]}}}:{i:012d}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n$64\r\n{value}\r\n")
PY
redis-cli -p "$primary" wait 1 10000 >/dev/null
bytes=$(( keys * (16 + 64) ))
kill -9 "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
member "$b" --persistence yes --dir "$work/b" --cluster-join 127.0.0.1:$((a + 10000))
until [ "$(field "$b" persistence loading 2>/dev/null)" = 0 ]; do sleep 0.01; done
loaded=$(date +%s.%N)
for _ in $(seq 6000); do
  wanted=$(field "$b" replication repl_wanted_slots) synced=$(field "$b" replication repl_synced_slots)
  [ -n "$wanted" ] && [ "$wanted" != 0 ] && [ "$wanted" = "$synced" ] && break
  sleep 0.01
done
done_at=$(date +%s.%N)
full=$(field "$primary" replication repl_full_syncs)
python3 - "$loaded" "$done_at" "$keys" "$bytes" "$full" <<'PY'
import sys
start, end, keys, nbytes, full = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = end - start
print(f"restarted replica: loaded → rejoined and resynced {keys:,} keys ({nbytes / 1e6:.0f} MB of keys and values) in {s * 1000:.0f} ms: "
      f"{keys / s:,.0f} keys/s, {nbytes / 1e6 / s:.0f} MB/s (primary's full syncs: {full})")
PY
