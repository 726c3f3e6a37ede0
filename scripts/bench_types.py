#!/usr/bin/env python3
"""Data-type commands against redis-server, side by side, in one run (issue #14's table).

`redis-benchmark -t <test> -c 50 -P <p> -d 64` against a fresh ringkv node (persistence off)
and a fresh redis-server, both pinned and measured as scripts/bench_vs_redis.py does (its
Server and helpers), interleaved over ROUNDS rounds; medians. CPU per operation is the
server's utime + stime over the run divided by the requests. Then memory per element: one
list of ELEMENTS 8-byte elements, as the growth of `used_memory` and of RSS.
Usage: scripts/bench-types.sh
"""
import os, statistics, subprocess, time

from bench_vs_redis import TYPES_SECTION, Server, cpu_seconds, redis_benchmark, rss_bytes, write_doc

ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUESTS = int(os.environ.get("REQUESTS", "1000000"))
TESTS = os.environ.get("TESTS", "lpush,rpush,lpop,rpop,lrange_100,lrange_600").split(",")
ELEMENTS = int(os.environ.get("ELEMENTS", "1000000"))
# The pops and ranges need a list to read: redis-benchmark's own LPUSH fills `mylist`.
NEEDS_A_LIST = {"lpop", "rpop", "lrange_100", "lrange_300", "lrange_500", "lrange_600"}


def start(kind, port):
    return Server(kind, port, ("--persistence", "no") if kind == "ringkv" else ())


def measure(server, test, pipeline):
    if test in NEEDS_A_LIST:
        redis_benchmark(server.port, "lpush", 50, 16, REQUESTS)
    # redis-benchmark's lrange tests run an LPUSH phase of their own first; the command
    # itself keeps that out of the measured run.
    command = ()
    if test.startswith("lrange_"):
        command = ("lrange", "mylist", "0", str(int(test.split("_")[1]) - 1))
    before = cpu_seconds(server.proc.pid)
    ops = redis_benchmark(server.port, test, 50, pipeline, REQUESTS, command)["ops"]
    cpu = cpu_seconds(server.proc.pid) - before
    return ops, cpu / REQUESTS * 1e6


def element_memory(kind, port):
    server = start(kind, port)
    try:
        used, resident = server.info("used_memory"), rss_bytes(server.proc.pid)
        lines = []
        for first in range(0, ELEMENTS, 1000):
            items = " ".join(f"{i:08d}" for i in range(first, min(first + 1000, ELEMENTS)))
            lines.append(f"RPUSH biglist {items}")
        subprocess.run(["redis-cli", "-p", str(port)], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, check=True)
        if server.cli("LLEN", "biglist") != str(ELEMENTS):
            raise SystemExit(f"{kind}: the list did not fill")
        time.sleep(1)
        return ((server.info("used_memory") - used) / ELEMENTS,
                (rss_bytes(server.proc.pid) - resident) / ELEMENTS)
    finally:
        server.stop()


def main():
    lines = []
    out = lines.append
    results = {}
    port = 7400
    for _ in range(ROUNDS):
        for pipeline in (16, 1):
            for kind in ("ringkv", "redis"):
                port += 1
                server = start(kind, port)
                try:
                    for test in TESTS:
                        results.setdefault((test, pipeline, kind), []).append(
                            measure(server, test, pipeline))
                finally:
                    server.stop()
    out("## Data types (lists so far)\n")
    out(f"`redis-benchmark -t <test> -n {REQUESTS:,} -c 50 -P <p> -d 64` (LRANGE as `lrange mylist 0 "
        f"<n-1>` over a list filled first), servers pinned as above, median of {ROUNDS} interleaved "
        "round(s); CPU is the server's utime + stime per request.\n")
    out("| test | -P | ringkv ops/s | redis ops/s | ratio | ringkv µs/op | redis µs/op | CPU ratio |")
    out("|---|---|---|---|---|---|---|---|")
    for pipeline in (16, 1):
        for test in TESTS:
            ours, theirs = results[(test, pipeline, "ringkv")], results[(test, pipeline, "redis")]
            ops_o, ops_t = (statistics.median(o for o, _ in r) for r in (ours, theirs))
            cpu_o, cpu_t = (statistics.median(c for _, c in r) for r in (ours, theirs))
            out(f"| {test} | {pipeline} | {ops_o:,.0f} | {ops_t:,.0f} | {ops_o / ops_t:.2f} | "
                f"{cpu_o:.3f} | {cpu_t:.3f} | {cpu_o / cpu_t:.2f} |")
    out(f"\nOne list of {ELEMENTS:,} 8-byte elements:\n")
    out("| server | used_memory bytes/element | RSS bytes/element |")
    out("|---|---|---|")
    for kind in ("ringkv", "redis"):
        port += 1
        used, resident = element_memory(kind, port)
        out(f"| {kind} | {used:.1f} | {resident:.1f} |")
    out("\nCommand: `scripts/bench-types.sh`.")
    text = "\n".join(lines)
    write_doc(None, section=(TYPES_SECTION, text))
    print(text)

if __name__ == "__main__":
    main()
