#!/usr/bin/env python3
"""The stall a big value's copy causes on its primary (issue #13: no event-loop stall > 5 ms
while a big value moves).

Two members (release binary, both persisting, so a restarted one keeps its node id). One
slot (hash tag `{b}`) holds a 100 MB string, a hash of 1,000,000 fields, a list of
2,000,000 elements, a set, a sorted set and a stream of 1,000,000 each; a probe process GETs
a key of the same slot (so the same shard) on its primary in a loop. The replica is then
killed and restarted ROUNDS times: each restart makes the primary copy the slot to it from
scratch, big values included. Prints the probe's p99 and max for each copy, and the same
with no big values (the cost of the restart itself).
Usage: python3 scripts/bench_big_resync.py   (ROUNDS=<n>, default 3; BASE=<first port>;
RINGKV_SERVER=<binary> to measure another build; EXTRA="<flags>" for both members, e.g.
EXTRA="--cluster-transfer-cpu-share 0.5")
"""
import os
import subprocess
import sys
import tempfile
import time

import redis

from bench_handoff import PROBE

ROUNDS = int(os.environ.get("ROUNDS", "3"))
BASE = int(os.environ.get("BASE", "7700"))
BIN = os.environ.get("RINGKV_SERVER") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "ringkv-server")
TAG = "{b}"
# Each restart's copy is over well within this: the probe's window.
COPY_SECONDS = 6


def cluster_info(port):
    raw = redis.Redis(port=port).execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


class Pair:
    def __init__(self, work):
        self.work = work
        self.ports = (BASE, BASE + 1)
        self.procs = {}
        self.start(BASE)
        self.start(BASE + 1, join=BASE)

    def start(self, port, join=None):
        args = [BIN, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-bus-port", str(port + 10000), "--loglevel", os.environ.get("LOGLEVEL", "warning"),
                "--dir", os.path.join(self.work, str(port)), "--cluster-replica-reads", "yes",
                *os.environ.get("EXTRA", "").split()]
        if join:
            args += ["--cluster-join", f"127.0.0.1:{join + 10000}"]
        log = open(os.environ["LOGS"] + f"/{port}.log", "a") if os.environ.get("LOGS") else subprocess.DEVNULL
        self.procs[port] = subprocess.Popen(args, stdout=log, stderr=log)

    def settled(self):
        """Both members agree, serve every slot and hold a synced copy of the other's."""
        try:
            infos = [cluster_info(port) for port in self.ports]
            repl = [redis.Redis(port=port).info("replication") for port in self.ports]
        except redis.RedisError:
            return False
        return all(i.get("cluster_known_nodes") == "2" and i.get("cluster_slots_not_ready") == "0"
                   and i.get("cluster_slots_catching_up") == "0" for i in infos) \
            and all(r.get("repl_wanted_slots") == r.get("repl_synced_slots") != 0 for r in repl)

    def wait_settled(self, timeout=60):
        deadline = time.time() + timeout
        while not self.settled():
            if time.time() > deadline:
                raise SystemExit("the two members never settled")
            time.sleep(0.05)

    def restart(self, port):
        self.procs[port].kill()
        self.procs[port].wait()
        other = self.ports[1] if port == self.ports[0] else self.ports[0]
        self.start(port, join=other)

    def stop(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


def retrying(call):
    """Runs `call` again while the member answers TRYAGAIN (refused, so nothing was
    applied), as a cluster client does; bounded."""
    for _ in range(600):
        try:
            return call()
        except redis.exceptions.TryAgainError:
            time.sleep(0.1)
    raise SystemExit("the member kept answering TRYAGAIN for a minute")


def fill(con):
    retrying(lambda: con.set(TAG + "string", b"x" * (100 << 20)))
    for start in range(0, 1_000_000, 10_000):
        r = range(start, start + 10_000)
        retrying(lambda: con.hset(TAG + "hash", mapping={f"f{i}": i for i in r}))
        retrying(lambda: con.sadd(TAG + "set", *(f"m{i}" for i in r)))
        retrying(lambda: con.zadd(TAG + "zset", {f"m{i}": i % 1000 for i in r}))
        left = list(r)
        while left:
            pipe = con.pipeline(transaction=False)
            for i in left:
                pipe.xadd(TAG + "stream", {"f": i}, id=f"{i + 1}-0")
            replies = pipe.execute(raise_on_error=False)
            left = [i for i, reply in zip(left, replies)
                    if isinstance(reply, redis.exceptions.TryAgainError)]
            if left:
                time.sleep(0.1)
    for start in range(0, 2_000_000, 10_000):
        retrying(lambda: con.rpush(TAG + "list", *range(start, start + 10_000)))


def measure(big):
    with tempfile.TemporaryDirectory() as work:
        pair = Pair(work)
        try:
            pair.wait_settled()
            # A founding pair may still change its table once both have seen each other.
            time.sleep(2)
            pair.wait_settled()
            primary_port = redis.RedisCluster(host="127.0.0.1", port=BASE) \
                .get_node_from_key(TAG + "probe").port
            replica_port = BASE + 1 if primary_port == BASE else BASE
            primary = redis.Redis(port=primary_port, socket_timeout=60)
            if big:
                fill(primary)
            primary.set(TAG + "probe", "v")
            pair.wait_settled()
            time.sleep(2)
            with tempfile.TemporaryFile("w+") as log:
                probe = subprocess.Popen([sys.executable, "-c", PROBE, "key", str(primary_port),
                                          TAG + "probe"], stdout=log)
                spans = []
                try:
                    time.sleep(1)
                    for _ in range(ROUNDS):
                        began = time.time()
                        pair.restart(replica_port)
                        time.sleep(COPY_SECONDS)
                        pair.wait_settled()
                        spans.append((began, time.time()))
                finally:
                    probe.kill()
                    probe.wait()
                log.seek(0)
                lines = [line.split(None, 1) for line in log if line.strip()]
                samples = [(float(t), float(rest)) for t, rest in lines
                           if not rest.startswith("error")]
                errors = [rest.strip() for _, rest in lines if rest.startswith("error")]
                if errors:
                    raise SystemExit(f"the probe failed {len(errors)} times, first: {errors[0]}")
            label = "big values" if big else "no big values"
            for i, (began, ended) in enumerate(spans):
                xs = sorted(lat for t, lat in samples if began <= t <= ended)
                p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000
                print(f"{label}, copy {i + 1}: primary GET p99 {p99:.2f} ms, "
                      f"max {xs[-1] * 1000:.2f} ms over {len(xs)} GETs", flush=True)
            if big:
                replica = redis.Redis(port=replica_port)
                replica.execute_command("READONLY")
                for name, con in (("primary", primary), ("replica", replica)):
                    sizes = {"list": con.llen(TAG + "list"), "set": con.scard(TAG + "set"),
                             "zset": con.zcard(TAG + "zset"), "hash": con.hlen(TAG + "hash"),
                             "stream": con.xlen(TAG + "stream"),
                             "string": con.strlen(TAG + "string")}
                    print(f"the {name}'s copy after the last one: {sizes}")
        finally:
            pair.stop()


if __name__ == "__main__":
    if os.environ.get("ONLY") != "big":
        measure(big=False)
    measure(big=True)
