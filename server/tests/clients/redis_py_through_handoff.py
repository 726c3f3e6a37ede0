"""redis-py's RedisCluster writing and reading while the cluster changes under it.

Usage: redis_py_through_handoff.py STOP_FILE PORT...
Writes `py:<i>` keys and reads back earlier ones, one command at a time as an application
does, until STOP_FILE exists (the test joins, drains and stops members meanwhile). Any
exception is an application error: it is printed and the script exits 1. At the end every
key written is read back with its value. Prints the figures as one JSON line.
"""
import json
import os
import random
import sys
import time

from redis.cluster import ClusterNode, RedisCluster

stop_file = sys.argv[1]
ports = [int(p) for p in sys.argv[2:]]
rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports],
                  socket_timeout=5, socket_connect_timeout=2)

written, reads, slowest = 0, 0, 0.0
started = time.monotonic()
# Bounded: the test creates the stop file within a minute or two.
while not os.path.exists(stop_file) and time.monotonic() - started < 300:
    began = time.monotonic()
    try:
        rc.set(f"py:{written}", f"v{written}")
        written += 1
        i = random.randrange(written)
        got = rc.get(f"py:{i}")
        reads += 1
    except Exception as error:  # noqa: BLE001 - any error is the application's failure
        import traceback
        traceback.print_exc()
        print(f"application error after {written} writes, {time.monotonic() - started:.2f} s in: "
              f"{type(error).__name__}: {error}")
        sys.exit(1)
    if got != f"v{i}".encode():
        print(f"py:{i} read back {got!r}")
        sys.exit(1)
    slowest = max(slowest, time.monotonic() - began)

missing = [i for i in range(written) if rc.get(f"py:{i}") != f"v{i}".encode()]
print(json.dumps({"written": written, "reads": reads, "missing": len(missing),
                  "slowest_ms": round(slowest * 1000, 1)}))
sys.exit(1 if missing or written == 0 else 0)
