"""kill -9 → writable again, for scripts/cluster-failover-time.sh."""
import os
import signal
import statistics
import subprocess
import sys
import time

import redis

rounds, base = int(sys.argv[1]), int(sys.argv[2])
writable, agreed = [], []


def info(port):
    try:
        text = redis.Redis(port=port, socket_timeout=0.5).execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return {}
    text = text.decode() if isinstance(text, bytes) else text
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)


for round_ in range(rounds):
    port = base + round_ * 10
    up = subprocess.Popen(["target/release/ringkv", "cluster", "up", "--nodes", "3",
                           "--base-port", str(port), "--json"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            i = info(port)
            if i.get("cluster_known_nodes") == "3" and i.get("cluster_members_joining") == "0":
                break
            time.sleep(0.02)
        victim = port + 2
        # A key the victim serves as primary.
        slots = redis.Redis(port=port).execute_command("CLUSTER", "SLOTS")
        served = [(s[0], s[1]) for s in slots if s[2][1] == victim]
        r = redis.Redis(port=port)
        key = next(f"k{i}" for i in range(100_000)
                   if any(a <= r.execute_command("CLUSTER", "KEYSLOT", f"k{i}") <= b
                          for a, b in served))
        pid = int(subprocess.check_output(
            ["pgrep", "-f", f"ringkv-server --port {victim} "]).split()[0])
        survivors = [port, port + 1]
        clients = [redis.Redis(port=p, socket_timeout=0.5, socket_connect_timeout=0.5)
                   for p in survivors]
        # The clock starts before the signal: the failover can finish before a `kill`
        # process would even have exited.
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        done_write = done_table = None
        while time.monotonic() - killed < 30 and (done_write is None or done_table is None):
            now = time.monotonic() - killed
            if done_write is None:
                for c in clients:
                    try:
                        if c.set(key, "v"):
                            done_write = now
                            break
                    except redis.RedisError:
                        pass
            if done_table is None:
                a, b = info(survivors[0]), info(survivors[1])
                if a.get("cluster_known_nodes") == "2" and b.get("cluster_known_nodes") == "2" \
                        and a.get("cluster_current_epoch") == b.get("cluster_current_epoch"):
                    done_table = now
            time.sleep(0.005)
        writable.append(done_write * 1000)
        agreed.append(done_table * 1000)
        print(f"round {round_ + 1}: writable after {done_write * 1000:.1f} ms, "
              f"2-member table after {done_table * 1000:.1f} ms", flush=True)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


print(f"kill -9 → writable: p50 {statistics.median(writable):.1f} ms, "
      f"p99 {pct(writable, 0.99):.1f} ms over {len(writable)} kills; "
      f"→ agreed table: p50 {statistics.median(agreed):.1f} ms")
