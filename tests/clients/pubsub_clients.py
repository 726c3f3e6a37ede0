"""Pub/sub through real client libraries from PyPI, against a ringkv node.

usage: pubsub_clients.py PORT

redis-py's PubSub over RESP2 and RESP3 (channels, patterns, a listener thread),
kombu's fanout exchange (Celery's broadcast), and Celery itself: a worker whose results
come back through the Redis result backend, which waits for them with SUBSCRIBE. Exits
non-zero with the reason on the first thing that goes wrong.
"""
import logging
import sys
import threading
import time

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

PORT = int(sys.argv[1])


def messages(pubsub, wanted, timeout=5.0):
    """The next `wanted` messages (subscribe confirmations skipped)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < wanted and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            got.append(message)
    return got


for protocol in (2, 3):
    publisher = redis.Redis(port=PORT, protocol=protocol)
    listener = redis.Redis(port=PORT, protocol=protocol).pubsub()
    listener.subscribe("news")
    listener.psubscribe("n*")
    # Wait for both confirmations before publishing.
    confirmed = 0
    deadline = time.monotonic() + 5
    while confirmed < 2 and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
        if message and message["type"] in ("subscribe", "psubscribe"):
            confirmed += 1
    assert confirmed == 2, f"RESP{protocol}: {confirmed} of 2 subscriptions confirmed"
    assert publisher.publish("news", "hello") == 2, f"RESP{protocol}: two receivers"
    got = messages(listener, 2)
    kinds = sorted((m["type"], m["channel"], m["data"]) for m in got)
    assert kinds == [(b"message", b"news", b"hello"), (b"pmessage", b"news", b"hello")] or kinds == [
        ("message", b"news", b"hello"),
        ("pmessage", b"news", b"hello"),
    ], f"RESP{protocol}: {got}"
    assert publisher.pubsub_numsub("news") == [(b"news", 1)]
    assert publisher.pubsub_numpat() == 1
    listener.close()
    print(f"redis-py PubSub RESP{protocol}: a channel and a pattern subscriber each got the message")

received = []
done = threading.Event()


def handler(message):
    received.append(int(message["data"]))
    if len(received) == 500:
        done.set()


r = redis.Redis(port=PORT)
pubsub = r.pubsub()
pubsub.subscribe(**{"counter": handler})
worker = pubsub.run_in_thread(sleep_time=0.01, daemon=True)
deadline = time.monotonic() + 5
while r.pubsub_numsub("counter") != [(b"counter", 1)] and time.monotonic() < deadline:
    time.sleep(0.01)
for i in range(500):
    r.publish("counter", i)
assert done.wait(10), f"{len(received)} of 500 messages reached the listener thread"
worker.stop()
assert received == list(range(500)), "messages arrive in the order published"
print("redis-py run_in_thread: 500 messages in order")

URL = f"redis://127.0.0.1:{PORT}/5"
exchange = Exchange("broadcast", type="fanout")
heard = {"a": [], "b": []}


def listen(name, ready):
    with Connection(URL) as conn:
        queue = Queue(f"listener-{name}", exchange, exclusive=True)
        with Consumer(conn, queue, callbacks=[lambda body, m: (heard[name].append(body), m.ack())]):
            ready.set()
            deadline = time.monotonic() + 15
            while len(heard[name]) < 20 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass


readies = {name: threading.Event() for name in heard}
threads = [threading.Thread(target=listen, args=(n, readies[n]), daemon=True) for n in heard]
for thread in threads:
    thread.start()
for ready in readies.values():
    assert ready.wait(10), "a fanout consumer did not start"
time.sleep(0.5)
with Connection(URL) as conn:
    producer = Producer(conn, exchange=exchange)
    for i in range(20):
        producer.publish({"n": i}, exchange=exchange, declare=[exchange])
for thread in threads:
    thread.join(20)
for name, bodies in heard.items():
    assert [b["n"] for b in bodies] == list(range(20)), f"fanout listener {name}: {bodies}"
print("kombu fanout: both listeners heard all 20 broadcasts in order")

from celery import Celery  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402

logging.getLogger("celery").setLevel(logging.WARNING)
app = Celery("ringkv", broker=f"redis://127.0.0.1:{PORT}/6", backend=f"redis://127.0.0.1:{PORT}/7")
app.conf.broker_connection_retry_on_startup = True


@app.task
def add(x, y):
    return x + y


with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
    results = [add.delay(i, i) for i in range(50)]
    values = [result.get(timeout=20) for result in results]
assert values == [2 * i for i in range(50)], values
print("celery: a worker ran 50 tasks and their results came back through the redis backend")
