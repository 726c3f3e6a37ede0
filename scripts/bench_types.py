#!/usr/bin/env python3
"""Data-type commands against redis-server, side by side, in one run (issue #14's table).

`redis-benchmark -t <test> -c 50 -P <p> -d 64` against a fresh ringkv node (persistence off)
and a fresh redis-server, both pinned and measured as scripts/bench_vs_redis.py does (its
Server and helpers), interleaved over ROUNDS rounds; medians. CPU per operation is the
server's utime + stime over the run divided by the requests. Then memory per element: one
list, one set and one sorted set of ELEMENTS 8-byte elements each, as the growth of
`used_memory` and of RSS; then the server CPU of ZADD and of ZRANGE … BYSCORE LIMIT on
sorted sets of 10^3, 10^5 and 10^6 members (they must stay O(log n)).
Usage: scripts/bench-types.sh
"""
import os, statistics, subprocess, time

from bench_vs_redis import TYPES_SECTION, Server, cpu_seconds, redis_benchmark, rss_bytes, write_doc

ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUESTS = int(os.environ.get("REQUESTS", "1000000"))
TESTS = os.environ.get(
    "TESTS", "lpush,rpush,lpop,rpop,sadd,spop,zadd,zpopmin,lrange_100,lrange_600").split(",")
ELEMENTS = int(os.environ.get("ELEMENTS", "1000000"))
SETTLE = int(os.environ.get("SETTLE", "15"))
# The pops and ranges need a list to read: redis-benchmark's own LPUSH fills `mylist`.
# redis-benchmark's own sequence: SPOP after SADD, ZPOPMIN after ZADD.
FILL_FIRST = {"lpop": "lpush", "rpop": "lpush", "lrange_100": "lpush", "lrange_300": "lpush",
              "lrange_500": "lpush", "lrange_600": "lpush", "spop": "sadd", "zpopmin": "zadd"}
SIZES = [int(n) for n in os.environ.get("SIZES", "1000,100000,1000000").split(",")]


def start(kind, port):
    return Server(kind, port, ("--persistence", "no") if kind == "ringkv" else ())


def measure(server, test, pipeline):
    if test in FILL_FIRST:
        redis_benchmark(server.port, FILL_FIRST[test], 50, 16, REQUESTS)
    # redis-benchmark's lrange tests run an LPUSH phase of their own first; the command
    # itself keeps that out of the measured run.
    command = ()
    if test.startswith("lrange_"):
        command = ("lrange", "mylist", "0", str(int(test.split("_")[1]) - 1))
    before = cpu_seconds(server.proc.pid)
    ops = redis_benchmark(server.port, test, 50, pipeline, REQUESTS, command)["ops"]
    cpu = cpu_seconds(server.proc.pid) - before
    return ops, cpu / REQUESTS * 1e6


def fill(port, command, key, count, member=lambda i: f"{i:08d}"):
    """`command key members...` in batches of 1000 through one redis-cli pipe."""
    lines = []
    for first in range(0, count, 1000):
        items = " ".join(member(i) for i in range(first, min(first + 1000, count)))
        lines.append(f"{command} {key} {items}")
    subprocess.run(["redis-cli", "-p", str(port)], input="\n".join(lines) + "\n",
                   capture_output=True, text=True, check=True)


# One big value of each type: how it is filled and how its size is read back.
BIG_VALUES = [
    ("list", "RPUSH", "LLEN", lambda i: f"{i:08d}"),
    ("set", "SADD", "SCARD", lambda i: f"{i:08d}"),
    ("sorted set", "ZADD", "ZCARD", lambda i: f"{i} {i:08d}"),
]


def element_memory(kind, port, command, length, member):
    server = start(kind, port)
    try:
        used, resident = server.info("used_memory"), rss_bytes(server.proc.pid)
        fill(port, command, "big", ELEMENTS, member)
        if server.cli(length, "big") != str(ELEMENTS):
            raise SystemExit(f"{kind}: {command} did not fill the value")
        time.sleep(1)
        early = (rss_bytes(server.proc.pid) - resident) / ELEMENTS
        # The allocator gives pages freed while the value grew back to the system over its
        # decay time (jemalloc: 10 s for both servers); #11 measures RSS after settling too.
        time.sleep(SETTLE)
        return ((server.info("used_memory") - used) / ELEMENTS, early,
                (rss_bytes(server.proc.pid) - resident) / ELEMENTS)
    finally:
        server.stop()


def zset_scaling(kind, port, size):
    """Server µs per ZADD (an update of a random member) and per ZRANGE BYSCORE LIMIT 0 10
    on a sorted set of `size` members (member i scores i)."""
    server = start(kind, port)
    try:
        fill(port, "ZADD", "z", size, lambda i: f"{i} {i:012d}")
        costs = []
        for command in (("zadd", "z", "__rand_int__", "__rand_int__"),
                        ("zrange", "z", "__rand_int__", "+inf", "BYSCORE", "LIMIT", "0", "10")):
            before = cpu_seconds(server.proc.pid)
            redis_benchmark(port, "", 50, 16, REQUESTS // 2, command, keyspace=size)
            costs.append((cpu_seconds(server.proc.pid) - before) / (REQUESTS // 2) * 1e6)
        if int(server.cli("ZCARD", "z")) != size:
            raise SystemExit(f"{kind}: ZADD of existing members changed the size")
        return costs
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
    out("## Data types\n")
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
    out(f"\nOne value of {ELEMENTS:,} 8-byte elements (a sorted set's scores are integers):\n")
    out(f"RSS is read 1 s after the fill and again {SETTLE} s later, once the allocators have "
        "returned the pages freed while the value grew.\n")
    out("| type | ringkv used_memory B/elem | redis used_memory B/elem | ringkv RSS at 1 s | redis RSS at 1 s "
        f"| ringkv RSS at {SETTLE + 1} s | redis RSS at {SETTLE + 1} s |")
    out("|---|---|---|---|---|---|---|")
    for name, command, length, member in BIG_VALUES:
        measured = {}
        for kind in ("ringkv", "redis"):
            port += 1
            measured[kind] = element_memory(kind, port, command, length, member)
        (ou, oearly, orss), (tu, tearly, trss) = measured["ringkv"], measured["redis"]
        out(f"| {name} | {ou:.1f} | {tu:.1f} | {oearly:.1f} | {tearly:.1f} | {orss:.1f} | {trss:.1f} |")
    out(f"\nServer CPU per operation on one sorted set, `-P 16`, {REQUESTS // 2:,} requests each: "
        "ZADD updates a random member, ZRANGE reads 10 members from a random score on.\n")
    out("| members | ringkv ZADD µs | redis ZADD µs | ringkv ZRANGE µs | redis ZRANGE µs |")
    out("|---|---|---|---|---|")
    for size in SIZES:
        costs = {}
        for kind in ("ringkv", "redis"):
            port += 1
            costs[kind] = zset_scaling(kind, port, size)
        out(f"| {size:,} | {costs['ringkv'][0]:.3f} | {costs['redis'][0]:.3f} | "
            f"{costs['ringkv'][1]:.3f} | {costs['redis'][1]:.3f} |")
    out("\nCommand: `scripts/bench-types.sh`.")
    text = "\n".join(lines)
    write_doc(None, section=(TYPES_SECTION, text))
    print(text)

if __name__ == "__main__":
    main()
