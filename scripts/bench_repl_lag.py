"""Replication lag as a client sees it: while a load runs against the primary, a probe
writes a fresh key there every few milliseconds and reads it on the replica (a READONLY
connection to a member started with --cluster-replica-reads yes) until it is there; the
time from the write's reply to the first read that finds it is the lag. Prints p50, p99
and max over the probes.

Usage: python3 scripts/bench_repl_lag.py PRIMARY_PORT REPLICA_PORT SECONDS
"""

import sys
import time

import redis


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def main():
    primary_port, replica_port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    primary = redis.Redis(port=primary_port, socket_timeout=5)
    replica = redis.Redis(port=replica_port, socket_timeout=5)
    replica.execute_command("READONLY")
    lags, missing = [], 0
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        key = f"{{a}}lag:{i}"
        i += 1
        primary.set(key, "1")
        written = time.perf_counter()
        # Bounded: a copy not there after a second counts as missing.
        while True:
            if replica.exists(key):
                lags.append((time.perf_counter() - written) * 1000)
                break
            if time.perf_counter() - written > 1.0:
                missing += 1
                break
        time.sleep(0.005)
    lags.sort()
    if not lags:
        print(f"  replication lag: no probe seen on the replica ({missing} missing)")
        return
    print(
        f"  replication lag under the load ({len(lags)} probes, {missing} not seen within 1 s): "
        f"p50 {percentile(lags, 0.5):.3f} ms, p99 {percentile(lags, 0.99):.3f} ms, max {lags[-1]:.3f} ms"
    )


if __name__ == "__main__":
    main()
