#!/usr/bin/env python3
"""EVALSHA against redis-server, side by side, in one run (issue #15's floor).

`redis-benchmark -c 50 -P <p> evalsha <sha> 1 key:__rand_int__` for a script of one
command (`redis.call('INCR', KEYS[1])`) and of ten (INCR, then nine more reads and writes
of the same key), at -P 1 and -P 16. Both servers fresh, pinned and measured as
scripts/bench_vs_redis.py does (its Server and helpers), interleaved over ROUNDS rounds;
medians. CPU per operation is the server's utime + stime over the run divided by the
requests. Then SCRIPT LOAD of LOADS distinct scripts: µs per load as the client sees it
(pipelined) and the resident memory each adds (RSS before and after).
Usage: scripts/bench-scripting.sh
"""
import os, socket, statistics, subprocess, sys, time

from bench_vs_redis import (SCRIPTING_SECTION, Server, comparison_rows, cpu_seconds, redis_benchmark,
                            rss_bytes, write_doc)

ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUESTS = int(os.environ.get("REQUESTS", "200000"))
LOADS = int(os.environ.get("LOADS", "10000"))
PIPELINES = [int(p) for p in os.environ.get("PIPELINES", "1,16").split(",")]
SCRIPTS = {
    "1 command": "return redis.call('INCR', KEYS[1])",
    "10 commands": "redis.call('INCR', KEYS[1]) redis.call('GET', KEYS[1]) "
                   "redis.call('INCRBY', KEYS[1], 2) redis.call('EXISTS', KEYS[1]) "
                   "redis.call('DECR', KEYS[1]) redis.call('STRLEN', KEYS[1]) "
                   "redis.call('TYPE', KEYS[1]) redis.call('PEXPIRE', KEYS[1], 100000) "
                   "redis.call('PTTL', KEYS[1]) return redis.call('INCR', KEYS[1])",
}


def command(*args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


def script_loads(server):
    """µs per SCRIPT LOAD (pipelined, 1,000 at a time) and the process's resident memory
    per script (compiled code and the cache together, as the operating system sees it)."""
    before = rss_bytes(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", server.port))
    started = time.perf_counter()
    for batch in range(0, LOADS, 1000):
        payload = b"".join(command("SCRIPT", "LOAD", f"return {n} + #KEYS")
                           for n in range(batch, min(batch + 1000, LOADS)))
        sock.sendall(payload)
        wanted, got = min(1000, LOADS - batch), b""
        while got.count(b"\r\n") < 2 * wanted:
            got += sock.recv(1 << 20)
    elapsed = time.perf_counter() - started
    sock.close()
    return elapsed / LOADS * 1e6, (rss_bytes(server.proc.pid) - before) / LOADS


def main():
    results, loads = {}, {}
    for _ in range(ROUNDS):
        for kind, port in (("redis", 7611), ("ringkv", 7612)):
            server = Server(kind, port, ("--persistence", "no") if kind == "ringkv" else ())
            try:
                for name, body in SCRIPTS.items():
                    sha = server.cli("SCRIPT", "LOAD", body)
                    for pipeline in PIPELINES:
                        before = cpu_seconds(server.proc.pid)
                        ops = redis_benchmark(server.port, "evalsha", 50, pipeline, REQUESTS,
                                              ("evalsha", sha, "1", "key:__rand_int__"))["ops"]
                        cpu = (cpu_seconds(server.proc.pid) - before) / REQUESTS * 1e6
                        results.setdefault((name, pipeline, kind), []).append((ops, cpu))
                loads.setdefault(kind, []).append(script_loads(server))
            finally:
                server.stop()
    lines = [
        "## Scripting",
        "",
        f"`redis-benchmark -c 50 -P <p> -n {REQUESTS} -r 100000 evalsha <sha> 1 key:__rand_int__`,",
        "server and load pinned to different cores; medians of "
        f"{ROUNDS} interleaved rounds. CPU is the server's utime + stime per EVALSHA.",
        "",
        *comparison_rows("script", results, SCRIPTS, PIPELINES),
    ]
    lines += ["", f"SCRIPT LOAD of {LOADS:,} distinct scripts, pipelined 1,000 at a time:", "",
              "| server | µs per load | resident bytes per script |", "|---|---|---|"]
    for kind in ("redis", "ringkv"):
        us = statistics.median(x[0] for x in loads[kind])
        per = statistics.median(x[1] for x in loads[kind])
        lines.append(f"| {kind} | {us:.1f} | {per:,.0f} |")
    lines += ["", "Command: `scripts/bench-scripting.sh`."]
    print("\n".join(lines))
    write_doc(None, section=(SCRIPTING_SECTION, "\n".join(lines)))


if __name__ == "__main__":
    main()
