"""Libraries from PyPI that run Lua scripts, against a ringkv cluster through redis-py's
`RedisCluster`: redis-py's `Lock` and limits' fixed, moving and sliding windows (the
sliding one runs a script over two hash-tagged keys), with keys on every member.

usage: script_libraries_cluster.py PORT [PORT ...]

Exits non-zero with the reason on the first thing that goes wrong.
"""
import sys

from limits import parse, storage, strategies
from redis.cluster import ClusterNode, RedisCluster

PORTS = [int(p) for p in sys.argv[1:]]
cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in PORTS])

members = set()
for i in range(40):
    name = f"lock:{i}"
    lock = cluster.lock(name, timeout=5)
    assert lock.acquire(blocking=False), f"{name}: a free lock is acquired"
    assert not cluster.lock(name, timeout=5).acquire(blocking=False), f"{name}: a held one is not"
    assert lock.extend(10), f"{name}: extend"
    ttl = cluster.pttl(name)
    assert 14000 < ttl <= 15000, f"{name}: extend adds to the TTL: {ttl}"
    lock.release()
    assert not cluster.exists(name), f"{name}: released"
    members.add(cluster.get_node_from_key(name).port)
assert members == set(PORTS), f"the locks' keys live on {members}, not on every member"
print(f"redis-py Lock on RedisCluster: 40 locks over {len(members)} members")

uri = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in PORTS)
store = storage.RedisClusterStorage(uri)
item = parse("5/minute")
for name, strategy in [
    ("fixed", strategies.FixedWindowRateLimiter),
    ("moving", strategies.MovingWindowRateLimiter),
    ("sliding", strategies.SlidingWindowCounterRateLimiter),
]:
    limiter = strategy(store)
    for user in range(12):
        who = f"user-{user}"
        allowed = sum(limiter.hit(item, who, name) for _ in range(8))
        assert allowed == 5, f"{name} window let {allowed} of 8 hits of {who} through, not 5"
        assert limiter.get_window_stats(item, who, name).remaining == 0, f"{name}, {who}"
        limiter.clear(item, who, name)
        assert limiter.hit(item, who, name), f"{name}, {who}: cleared, a hit passes"
print("limits on a cluster: fixed, moving and sliding windows let 5 of 8 hits through for 12 users")
