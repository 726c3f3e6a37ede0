"""Client-side caching through redis-py from PyPI, against a ringkv node.

usage: tracking_clients.py PORT

redis-py's `client_tracking_on(clientid=…)` sends a RESP2 reading connection's
invalidations to a PubSub connection subscribed to `__redis__:invalidate` (with `bcast`
and a prefix, any write under the prefix is told); a RESP3 connection receives them as
pushes through redis-py's invalidation handler. redis-py's own cache
(`cache_config`) refuses servers below 7.4, and ringkv reports 7.2.4: that refusal is
checked too, as the README says. Exits non-zero with the reason on the first failure.
"""
import sys
import time

import redis

PORT = int(sys.argv[1])


def invalidations(pubsub, wanted, timeout=5.0):
    """Keys told on __redis__:invalidate until `wanted` arrived (or the timeout)."""
    keys = []
    deadline = time.monotonic() + timeout
    while len(keys) < len(wanted) and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None and message["channel"] == b"__redis__:invalidate":
            keys.extend(message["data"] or [])
    return keys


# RESP2: the reader's invalidations go to a PubSub connection (REDIRECT), as messages on
# __redis__:invalidate.
admin = redis.Redis(port=PORT)
listener = admin.pubsub()
listener.subscribe("__redis__:invalidate")
listener.get_message(timeout=1.0)  # the subscribe confirmation
ids = [c["id"] for c in admin.client_list() if "P" in c["flags"]]
if len(ids) != 1:
    sys.exit(f"expected one subscribed connection, found {ids}")
listener_id = int(ids[0])
reader = redis.Redis(port=PORT, single_connection_client=True)
reader.client_tracking_on(clientid=listener_id)
reader.set("user:1", "Ada")
reader.get("user:1")
admin.set("user:1", "Grace")
told = invalidations(listener, [b"user:1"])
if told != [b"user:1"]:
    sys.exit(f"RESP2 REDIRECT: after a write, expected an invalidation, got {told}")
bcast = redis.Redis(port=PORT, single_connection_client=True)
bcast.client_tracking_on(clientid=listener_id, bcast=True, prefix=["p:"])
admin.mset({"p:a": 1, "other": 2})
told = invalidations(listener, [b"p:a"])
if told != [b"p:a"]:
    sys.exit(f"RESP2 BCAST: expected only p:a, got {told}")
listener.close()
print("redis-py tracking RESP2: REDIRECT and BCAST invalidations arrived")

# RESP3: invalidations are pushes on the reading connection itself; redis-py's parser
# hands them to its invalidation handler (what its own cache uses) before the next reply.
pushed = []
reader3 = redis.Redis(port=PORT, protocol=3, single_connection_client=True)
reader3.connection._parser.set_invalidation_push_handler(lambda push: pushed.append(push))
reader3.client_tracking_on()
reader3.get("user:3")
admin.set("user:3", "Grace")
deadline = time.monotonic() + 5
while not pushed and time.monotonic() < deadline:
    reader3.ping()
    time.sleep(0.01)
if pushed != [[b"invalidate", [b"user:3"]]]:
    sys.exit(f"RESP3: expected one invalidate push for user:3, got {pushed}")
admin.flushall()
while len(pushed) < 2 and time.monotonic() < deadline:
    reader3.ping()
    time.sleep(0.01)
if pushed[1:] != [[b"invalidate", None]]:
    sys.exit(f"RESP3: FLUSHALL should push a null invalidation, got {pushed[1:]}")
print("redis-py tracking RESP3: invalidate pushes arrived, FLUSHALL's null one too")

try:
    from redis.cache import CacheConfig

    cached = redis.Redis(port=PORT, protocol=3, cache_config=CacheConfig())
    cached.get("anything")
    sys.exit("redis-py's cache_config connected, but ringkv reports 7.2.4: update the README")
except redis.exceptions.ConnectionError as error:
    if "7.4 or later" not in str(error):
        sys.exit(f"unexpected refusal: {error}")
    print("redis-py cache_config: refused below 7.4, as the README says")
