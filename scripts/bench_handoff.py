#!/usr/bin/env python3
"""Handoff figures: a 4th member joining a loaded 3-member cluster, then draining.

Starts 3 members (release binary, no persistence, --cluster-replicas 1), loads KEYS keys
of 16 + 64 bytes through their primaries, starts a 4th member and times until every
member agrees it serves its share (no member joining or learning, every table judged),
then stops it with SIGTERM (a drain) and times until the other three agree again.
Checks that every key is still readable with its value and prints the figures: the
handoff throughput (keys and bytes the joiner copied in, over the join's time), and a
probe client's GET latency (p50, p99, max) before, during the join and during the drain.
BIG=1 also stores a 100 MB string, a hash of 1,000,000 fields, a list of 2,000,000
elements, a set and a sorted set of 1,000,000 members first, and says which of them the
join moved (the slots that move depend on the members' random ids).
KEYS=<n> (default 1000000), BASE=<first port> (default 7800), EXTRA="<flags>" adds flags
to every member (a transfer budget, say).
"""
import os
import signal
import subprocess
import sys
import time

import redis
from redis.crc import key_slot

BIG = os.environ.get("BIG") == "1"
# The elements of each big aggregate BIG=1 stores.
BIG_SIZES = {"big:hash": 1_000_000, "big:list": 2_000_000, "big:set": 1_000_000,
             "big:zset": 1_000_000}


# A probe process: GETs in a loop, each latency stamped. `cluster PORT...`: one cluster
# client over every member (redirects and table refreshes included). `direct PORT...`:
# plain connections GET the same keys from each member, a -MOVED counting as an answer:
# the members' own time. `key PORT KEY`: one key on one member, every error counted.
# `write PORT...`: a cluster client SETs 1024 keys over the slots in turn, so some wait at
# their new primary for the handoff's fence (the holds CLUSTER INFO counts).
PROBE = """
import sys, time, redis
from redis.cluster import ClusterNode, RedisCluster
mode, args = sys.argv[1], sys.argv[2:]
keys = [f"probe:{i}" for i in range(64)]  # spread over the slots, so over every member
if mode in ("cluster", "write"):
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", int(p)) for p in args],
                      socket_timeout=5)
    rounds = [(rc, keys if mode == "cluster" else [f"write:{i}" for i in range(1024)])]
elif mode == "direct":
    rounds = [(redis.Redis(port=int(p), socket_timeout=5), keys[:16]) for p in args]
else:
    rounds = [(redis.Redis(port=int(args[0]), socket_timeout=10), [args[1]])]
out = sys.stdout
while True:
    for con, batch in rounds:
        for key in batch:
            t = time.time()
            try:
                if mode == "write":
                    con.set(key, "x")
                else:
                    con.get(key)
            except redis.ResponseError if mode == "direct" else ():
                pass
            except redis.RedisError as error:
                out.write(f"{t} error {error!r}\\n")
                continue
            out.write(f"{t} {time.time() - t}\\n")
    out.flush()
    time.sleep(0.001)
"""


class Probe:
    """A separate process GETting one key per member in a loop (its own interpreter: a
    thread here would measure this script's own work), each latency stamped; phases are
    labelled by wall-clock spans afterwards."""

    def __init__(self, ports, mode="cluster", name="probe GET latency"):
        self.file = open(f"/tmp/ringkv-probe-{os.getpid()}-{len(name)}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE, mode] + [str(p) for p in ports],
                                     stdout=self.file)
        self.name = name
        self.spans = []
        self.label = None

    def phase(self, label):
        now = time.time()
        if self.spans:
            self.spans[-1][2] = now
        self.spans.append([label, now, None])

    def report(self):
        self.phase("end")
        self.proc.kill()
        self.proc.wait()
        self.file.seek(0)
        lines = [line.split(None, 1) for line in self.file if line.strip()]
        samples = [(float(t), float(rest)) for t, rest in lines if not rest.startswith("error")]
        errors = [(float(t), rest.strip()) for t, rest in lines if rest.startswith("error")]
        for label, begin, end in self.spans[:-1]:
            xs = sorted(lat for t, lat in samples if begin <= t < end)
            failed = [e for t, e in errors if begin <= t < end]
            if not xs:
                continue
            pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000
            print(f"{self.name} {label}: p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, "
                  f"max {xs[-1] * 1000:.2f} ms over {len(xs)} commands, {len(failed)} errors"
                  + (f" (first: {failed[0]})" if failed else ""))


class Probes:
    def __init__(self, probes):
        self.probes = probes

    def phase(self, label):
        for probe in self.probes:
            probe.phase(label)

    def report(self):
        for probe in self.probes:
            probe.report()


KEYS = int(os.environ.get("KEYS", "1000000"))
BASE = int(os.environ.get("BASE", "7800"))
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "ringkv-server")


def start(i, seed):
    port = BASE + i
    args = [BIN, "--port", str(port), "--cluster-enabled", "yes", "--persistence", "no",
            "--cluster-bus-port", str(port + 1000), "--cluster-replicas", "1"]
    if seed is not None:
        args += ["--cluster-join", f"127.0.0.1:{seed + 1000}"]
    args += os.environ.get("EXTRA", "").split()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return proc
        except redis.RedisError:
            time.sleep(0.02)
    sys.exit(f"member on {port} never answered")


def info(port):
    text = redis.Redis(port=port, socket_timeout=2).execute_command("CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else text
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)


def agreed(ports, members):
    infos = [info(p) for p in ports]
    return all(i.get("cluster_known_nodes") == str(members)
               and i.get("cluster_members_joining") == "0"
               and i.get("cluster_slots_learning", "0") == "0"
               and i.get("cluster_table_judged") == "1" for i in infos) \
        and len({i.get("cluster_table_version") for i in infos}) == 1


def wait_agreed(ports, members, limit=120):
    started = time.monotonic()
    while not agreed(ports, members):
        if time.monotonic() - started > limit:
            sys.exit(f"no agreement on {members} members within {limit} s")
        time.sleep(0.01)
    return time.monotonic() - started


def holds_text(label, ports):
    """The commands held for a handoff fence at `ports`, and the worst p99 and max."""
    infos = [info(p) for p in ports]
    count = sum(int(i.get("cluster_handoff_holds", 0)) for i in infos)
    p99 = max(int(i.get("cluster_handoff_hold_p99_us", 0)) for i in infos)
    most = max(int(i.get("cluster_handoff_hold_max_us", 0)) for i in infos)
    return f"{label}: {count} commands held, p99 {p99 / 1000:.2f} ms, max {most / 1000:.2f} ms"


def wait_old_copies_dropped(ports, limit=120):
    """Seconds until no member keeps a copy of a slot it gave away."""
    t = time.monotonic()
    while time.monotonic() - t < limit:
        if all(info(p).get("cluster_handoff_slots_left_over") == "0" for p in ports):
            return time.monotonic() - t
        time.sleep(0.05)
    raise SystemExit(f"old copies still kept after {limit} s")


def owners(port):
    table = [None] * 16384
    for first, last, primary, *_ in redis.Redis(port=port).execute_command("CLUSTER", "SLOTS"):
        for slot in range(first, last + 1):
            table[slot] = primary[1]
    return table


def key(i):
    return f"key:{i:012d}"


def value(i):
    return f"{i:064d}"


def main():
    procs = [start(0, None)]
    procs += [start(i, BASE) for i in (1, 2)]
    ports = [BASE + i for i in range(3)]
    wait_agreed(ports, 3)
    table = owners(BASE)
    pipes = {p: redis.Redis(port=p).pipeline(transaction=False) for p in ports}
    t = time.monotonic()
    for i in range(KEYS):
        k = key(i)
        pipe = pipes[table[key_slot(k.encode())]]
        pipe.set(k, value(i))
        if len(pipe) >= 10000:
            pipe.execute()
    for pipe in pipes.values():
        pipe.execute()
    print(f"loaded {KEYS} keys in {time.monotonic() - t:.1f} s")
    if BIG:
        rc = {p: redis.Redis(port=p, socket_timeout=60) for p in ports}
        rc[table[key_slot(b"big:string")]].set("big:string", b"x" * (100 << 20))
        fill = {
            "big:hash": lambda con, r: con.hset("big:hash", mapping={f"f{i}": i for i in r}),
            "big:list": lambda con, r: con.rpush("big:list", *r),
            "big:set": lambda con, r: con.sadd("big:set", *(f"m{i}" for i in r)),
            "big:zset": lambda con, r: con.zadd("big:zset", {f"m{i}": i % 1000 for i in r}),
        }
        for name, add in fill.items():
            con = rc[table[key_slot(name.encode())]]
            for start_at in range(0, BIG_SIZES[name], 10_000):
                add(con, range(start_at, start_at + 10_000))
        print("stored a 100 MB string, a hash of 1,000,000 fields, a list of 2,000,000 "
              "elements, a set and a sorted set of 1,000,000 members")
    probe = Probes([Probe(ports),
                    Probe(ports, "direct", "member answer latency (plain GET, any reply)"),
                    Probe(ports, "write", "writer SET latency (cluster client)")])
    probe.phase("before")
    time.sleep(2)
    try:
        t = time.monotonic()
        probe.phase("during the join")
        procs.append(start(3, BASE + 1))
        wait_agreed(ports + [BASE + 3], 4)
        joined = time.monotonic() - t
        share = redis.Redis(port=BASE + 3).dbsize()
        if BIG:
            after = owners(BASE + 3)
            big_moved = [name for name in ["big:string", *BIG_SIZES]
                     if after[key_slot(name.encode())] == BASE + 3]
            print(f"big values the join moved to the 4th member: {', '.join(big_moved) or 'none'}")
        print(f"join: the 4th member serves {share} keys ({share / KEYS:.1%}) "
              f"{joined:.2f} s after it was started")
        moved = info(BASE + 3)
        keys_in = int(moved.get("cluster_handoff_keys_in", 0))
        bytes_in = int(moved.get("cluster_handoff_bytes_in", 0))
        print(f"handoff into the joiner: {keys_in} keys, {bytes_in / 1e6:.1f} MB: "
              f"{keys_in / joined:,.0f} keys/s, {bytes_in / 1e6 / joined:.1f} MB/s over the join")
        print(holds_text("cutover holds at the joiner", [BASE + 3]))
        dropped_after = wait_old_copies_dropped(ports + [BASE + 3])
        print(f"old copies dropped by the 3 first members {dropped_after:.2f} s after the join: "
              + ", ".join(info(p).get("cluster_handoff_keys_dropped", "?") for p in ports)
              + " keys")
        links = info(BASE + 3)
        print(f"links from the joiner to its replicas: {links.get('cluster_repl_full_syncs')} "
              f"synced whole, {links.get('cluster_repl_partial_syncs')} resumed, "
              f"{links.get('cluster_repl_snapshot_windows')} snapshot windows sent")
        probe.phase("after the join")
        time.sleep(2)
        t = time.monotonic()
        probe.phase("during the drain")
        procs[3].send_signal(signal.SIGTERM)
        wait_agreed(ports, 3)
        drained = time.monotonic() - t
        probe.phase("after the drain")
        time.sleep(1)
        probe.phase("verifying")
        procs[3].wait(timeout=30)
        print(f"drain: {share} keys handed back, the other 3 agree {drained:.2f} s after SIGTERM")
        print(holds_text("cutover holds at the 3 members taking the drained slots", ports))
        table = owners(BASE)
        cons = {p: redis.Redis(port=p) for p in ports}
        missing = 0
        for start_at in range(0, KEYS, 10000):
            batch = range(start_at, min(KEYS, start_at + 10000))
            by_port = {}
            for i in batch:
                by_port.setdefault(table[key_slot(key(i).encode())], []).append(i)
            for port, items in by_port.items():
                pipe = cons[port].pipeline(transaction=False)
                for i in items:
                    pipe.get(key(i))
                got = pipe.execute()
                missing += sum(1 for i, v in zip(items, got) if v != value(i).encode())
        print(f"keys missing or wrong after join and drain: {missing}")
        if BIG:
            rc = redis.Redis(port=BASE)
            ok = redis.RedisCluster(host="127.0.0.1", port=BASE)
            big = (ok.strlen("big:string") == (100 << 20)
                   and ok.hlen("big:hash") == BIG_SIZES["big:hash"]
                   and ok.llen("big:list") == BIG_SIZES["big:list"]
                   and ok.scard("big:set") == BIG_SIZES["big:set"]
                   and ok.zcard("big:zset") == BIG_SIZES["big:zset"])
            print(f"big values intact after join and drain: {big}")
            missing += 0 if big else 1
        probe.report()
        return 1 if missing else 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
