#!/usr/bin/env bash
# The near-cache against a plain RESP client on a 3-member cluster (benches/near_cache.rs):
# Zipf(0.99) reads over KEYS keys with 1 % writes from another client. The members share
# core 1 with the other client (the writer) and the invalidation checker; the reading client
# has core 0 to itself (the bench pins its own threads). Writes docs/near-cache-benchmarks.md.
# Usage: scripts/bench-near-cache.sh   (KEYS=1000000 SECONDS=10 READERS=64 to change)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-redis.sh
cargo build -q --release -p ringkv-server
cargo build -q --release --bench near_cache
target_dir=${CARGO_TARGET_DIR:-target}
bench=$(ls -t "$target_dir"/release/deps/near_cache-* | grep -v '\.d$' | head -1)

base=${BASE_PORT:-7510}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
for i in 0 1 2; do
  port=$((base + i)); bus=$((base + 100 + i))
  join=()
  [ "$i" -gt 0 ] && join=(--cluster-join "127.0.0.1:$((base + 100))")
  taskset -c 1 "$target_dir"/release/ringkv-server --port "$port" --persistence no \
    --cluster-enabled yes --cluster-bus-port "$bus" "${join[@]}" --loglevel warning &
  pids+=($!)
done
for _ in $(seq 1 300); do
  ok=0
  for i in 0 1 2; do
    info=$(redis-cli -p $((base + i)) cluster info 2>/dev/null || true)
    echo "$info" | grep -q "cluster_state:ok" && echo "$info" | grep -q "cluster_known_nodes:3" \
      && echo "$info" | grep -q "cluster_members_joining:0" && ok=$((ok + 1))
  done
  [ "$ok" -eq 3 ] && break
  sleep 0.1
done

out=docs/near-cache-benchmarks.md
commit=$(git rev-parse --short HEAD)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
seeds="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
{
  echo "# The near-cache against a plain RESP client"
  echo
  echo "Commit $commit, $cpu, $(nproc) cores: a 3-member ringkv cluster (release build,"
  echo "persistence off) shares core 1 with the writing client and the invalidation checker;"
  echo "the reading client (one tokio worker) has core 0 to itself. The plain client is"
  echo "redis-rs's multiplexed connection, one per member, routed by CLUSTER SLOTS; the"
  echo "near-cache holds values as \`Arc<[u8]>\`. Command: \`scripts/bench-near-cache.sh\`"
  echo "(benches/near_cache.rs)."
  for writes in zipf uniform; do
    echo
    echo "## Writes: $writes"
    echo
    WRITES=$writes RINGKV_SEEDS=$seeds taskset -c 0,1 "$bench" --bench
  done
} > "$out"
cat "$out"
