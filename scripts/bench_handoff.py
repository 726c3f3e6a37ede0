#!/usr/bin/env python3
"""Handoff figures: a 4th member joining a loaded 3-member cluster, then draining.

Starts 3 members (release binary, no persistence, --cluster-replicas 1), loads KEYS keys
of 16 + 64 bytes through their primaries, starts a 4th member and times until every
member agrees it serves its share (no member joining or learning, every table judged),
then stops it with SIGTERM (a drain) and times until the other three agree again.
Checks that every key is still readable with its value and prints the figures.
KEYS=<n> (default 1000000), BASE=<first port> (default 7800).
"""
import os
import signal
import subprocess
import sys
import time

import redis
from redis.crc import key_slot

KEYS = int(os.environ.get("KEYS", "1000000"))
BASE = int(os.environ.get("BASE", "7800"))
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "ringkv-server")


def start(i, seed):
    port = BASE + i
    args = [BIN, "--port", str(port), "--cluster-enabled", "yes", "--persistence", "no",
            "--cluster-bus-port", str(port + 1000), "--cluster-replicas", "1"]
    if seed is not None:
        args += ["--cluster-join", f"127.0.0.1:{seed + 1000}"]
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
    try:
        t = time.monotonic()
        procs.append(start(3, BASE + 1))
        wait_agreed(ports + [BASE + 3], 4)
        joined = time.monotonic() - t
        share = redis.Redis(port=BASE + 3).dbsize()
        print(f"join: the 4th member serves {share} keys ({share / KEYS:.1%}) "
              f"{joined:.2f} s after it was started")
        t = time.monotonic()
        procs[3].send_signal(signal.SIGTERM)
        wait_agreed(ports, 3)
        drained = time.monotonic() - t
        procs[3].wait(timeout=30)
        print(f"drain: {share} keys handed back, the other 3 agree {drained:.2f} s after SIGTERM")
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
        return 1 if missing else 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
