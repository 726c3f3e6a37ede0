"""redis-py's RedisCluster against a ringkv cluster, as an application uses it.

Usage: redis_py_cluster.py PID_TO_KILL PORT...
Checks that the client sees every member as a primary, that a cluster-wide scan_iter and
dbsize find every key, then kills one member (SIGKILL) and checks that the same client
object writes again without the application doing anything beyond retrying. Prints the
figures; exits non-zero on any failed check.
"""
import os
import signal
import sys
import time

from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

victim = int(sys.argv[1])
ports = [int(p) for p in sys.argv[2:]]
rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports],
                  socket_timeout=2, socket_connect_timeout=1)

primaries = rc.get_primaries()
assert len(primaries) == len(ports), f"primaries {primaries}"

pipe = rc.pipeline()
for i in range(10_000):
    pipe.set(f"key:{i}", i)
pipe.execute()
found = set(rc.scan_iter(count=500))
assert len(found) == 10_000, f"scan_iter found {len(found)} of 10000 keys"
# redis-py sends DBSIZE to one random node unless asked for the primaries' sum.
total = rc.dbsize(target_nodes=RedisCluster.PRIMARIES)
assert total == 10_000, f"dbsize over the primaries {total}"
print(f"scan_iter found {len(found)} keys, dbsize {total}, {len(primaries)} primaries")

os.kill(victim, signal.SIGKILL)
killed = time.monotonic()
written, failures, resumed = 0, 0, None
while time.monotonic() - killed < 20 and written < 2_000:
    try:
        rc.set(f"after:{written}", written)
        written += 1
        if resumed is None and failures:
            resumed = time.monotonic() - killed
    except RedisError:
        failures += 1
        time.sleep(0.05)
assert written == 2_000, f"only {written} writes after the kill"
for i in range(0, 2_000, 97):
    assert rc.get(f"after:{i}") == str(i).encode(), f"after:{i}"
kept = sum(1 for i in range(0, 10_000, 10) if rc.get(f"key:{i}") == str(i).encode())
print(f"after the kill: {failures} failed attempts, writable again after "
      f"{(resumed or 0):.2f} s, {kept} of 1000 sampled earlier keys kept")
assert len(rc.get_primaries()) == len(ports) - 1
