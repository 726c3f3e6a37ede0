#!/usr/bin/env python3
"""PUBLISH against redis-server, side by side, in one run (issue #16's floor).

SUBSCRIBERS (1 and 100) connections subscribe to one channel and read everything, in a
reader process pinned with the load generator; `redis-benchmark -c 50 -P <p> publish`
then publishes to it. Both servers fresh, pinned and measured as scripts/bench_vs_redis.py
does (its Server and helpers), interleaved over ROUNDS rounds; medians. CPU per operation
is the server's utime + stime over the run divided by the requests. The reader checks it
received every message (requests × subscribers), so a server that drops or stalls fails.
Usage: scripts/bench-pubsub.sh
"""
import os, selectors, socket, subprocess, sys, time

from bench_vs_redis import (LOAD_CORE, PUBSUB_SECTION, Server, comparison_rows, cpu_seconds,
                            redis_benchmark, write_doc)

ROUNDS = int(os.environ.get("ROUNDS", "3"))
REQUESTS = int(os.environ.get("REQUESTS", "200000"))
SUBSCRIBERS = [int(n) for n in os.environ.get("SUBSCRIBERS", "1,100").split(",")]
PIPELINES = [int(p) for p in os.environ.get("PIPELINES", "1,16").split(",")]


def reader(port, count, expected):
    """Run as a child: `count` subscribers that read until `expected` messages each."""
    selector = selectors.DefaultSelector()
    pending = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        pending[sock] = 0
    print("ready", flush=True)
    marker, done = b"$7\r\nmessage\r\n", 0
    tails = {sock: b"" for sock in pending}
    deadline = time.monotonic() + 300
    while done < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            data = sock.recv(1 << 20)
            if not data:
                raise SystemExit("a subscriber was disconnected")
            chunk = tails[sock] + data
            pending[sock] += chunk.count(marker)
            tails[sock] = chunk[-(len(marker) - 1):]
            if pending[sock] >= expected:
                selector.unregister(sock)
                done += 1
    got = sorted(pending.values())
    if got[0] < expected:
        raise SystemExit(f"subscribers received {got[0]}..{got[-1]} of {expected} messages")
    print("all", flush=True)


def measure(server, subscribers, pipeline):
    child = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, __file__, "--reader",
                              str(server.port), str(subscribers), str(REQUESTS)],
                             stdout=subprocess.PIPE, text=True)
    if child.stdout.readline().strip() != "ready":
        raise SystemExit("the reader did not start")
    time.sleep(0.2)
    before = cpu_seconds(server.proc.pid)
    ops = redis_benchmark(server.port, "publish", 50, pipeline, REQUESTS,
                          ("publish", "bench", "x" * 64))["ops"]
    if child.stdout.readline().strip() != "all":
        raise SystemExit("the subscribers did not receive every message")
    child.wait()
    cpu = cpu_seconds(server.proc.pid) - before
    return ops, cpu / REQUESTS * 1e6


def main():
    results = {}
    for _ in range(ROUNDS):
        for kind, port in (("redis", 7601), ("ringkv", 7602)):
            server = Server(kind, port, ("--persistence", "no") if kind == "ringkv" else ())
            try:
                for subscribers in SUBSCRIBERS:
                    for pipeline in PIPELINES:
                        ops, cpu = measure(server, subscribers, pipeline)
                        results.setdefault((subscribers, pipeline, kind), []).append((ops, cpu))
            finally:
                server.stop()
    lines = [
        "## Pub/sub",
        "",
        f"`redis-benchmark -c 50 -P <p> -n {REQUESTS} publish bench <64 bytes>` with that many",
        "subscribers reading every message (checked), server and load pinned to different",
        f"cores; medians of {ROUNDS} interleaved rounds. CPU is the server's utime + stime per",
        "PUBLISH.",
        "",
        *comparison_rows("subscribers", results, SUBSCRIBERS, PIPELINES),
    ]
    lines += ["", "Command: `scripts/bench-pubsub.sh`."]
    print("\n".join(lines))
    write_doc(None, section=(PUBSUB_SECTION, "\n".join(lines)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--reader":
        reader(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
