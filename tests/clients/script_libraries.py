"""Libraries from PyPI that run Lua scripts, against a ringkv node.

usage: script_libraries.py PORT

redis-py's Lock (its release, extend and reacquire scripts), limits (the library under
Flask-Limiter: fixed, moving and sliding windows) and python-rq (a burst worker completes
300 jobs). Exits non-zero with the reason on the first thing that goes wrong.
"""
import logging
import sys

import redis
from limits import parse, storage, strategies
from rq import Queue, SimpleWorker

PORT = int(sys.argv[1])

r = redis.Redis(port=PORT, db=2)
r.flushdb()
lock = r.lock("res", timeout=5)
assert lock.acquire(blocking=False), "a free lock is acquired"
other = r.lock("res", timeout=5)
assert not other.acquire(blocking=False), "a held lock is not"
assert lock.extend(10)
ttl = r.pttl("res")
assert 14000 < ttl <= 15000, f"extend adds to the TTL: {ttl}"
assert lock.reacquire()
ttl = r.pttl("res")
assert 4000 < ttl <= 5000, f"reacquire resets the TTL: {ttl}"
lock.release()
assert other.acquire(blocking=False), "a released lock is free again"
thief = r.lock("res", timeout=5)
thief.local.token = b"not-the-token"
try:
    thief.release()
    sys.exit("the release script let another token release the lock")
except redis.exceptions.LockNotOwnedError:
    pass
other.release()
assert not r.exists("res")
print("redis-py Lock: acquire, extend, reacquire, release, refuse a foreign token")

redis.Redis(port=PORT, db=3).flushdb()
store = storage.RedisStorage(f"redis://127.0.0.1:{PORT}/3")
for name, strategy in [
    ("fixed", strategies.FixedWindowRateLimiter),
    ("moving", strategies.MovingWindowRateLimiter),
    ("sliding", strategies.SlidingWindowCounterRateLimiter),
]:
    limiter = strategy(store)
    item = parse("5/minute")
    allowed = sum(limiter.hit(item, "user", name) for _ in range(8))
    assert allowed == 5, f"{name} window let {allowed} of 8 hits through, not 5"
    stats = limiter.get_window_stats(item, "user", name)
    assert stats.remaining == 0, f"{name}: {stats}"
    limiter.clear(item, "user", name)
    assert limiter.hit(item, "user", name), f"{name}: cleared, a hit passes"
print("limits: fixed, moving and sliding windows each let 5 of 8 hits through")

logging.getLogger("rq").setLevel(logging.WARNING)
redis.Redis(port=PORT, db=4).flushdb()
queue = Queue("jobs", connection=redis.Redis(port=PORT, db=4))
jobs = [queue.enqueue("operator.add", i, 1) for i in range(300)]
# The worker listens on its pub/sub command channel while it works.
worker = SimpleWorker([queue], connection=queue.connection)
worker.work(burst=True, logging_level="WARNING")
results = [job.return_value(refresh=True) for job in jobs]
assert results == [i + 1 for i in range(300)], f"results: {results[:10]}..."
print("python-rq: a burst worker completed 300 jobs with their results")
