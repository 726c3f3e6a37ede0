"""A kombu (Celery's messaging library) producer and consumer through ringkv.

usage: kombu_queue.py PORT

The consumer blocks in BRPOP before anything is sent; the producer then sends 200
messages, some while the consumer is parked on the server. Every message must arrive
exactly once and in order, all in the database the URL names (1), none in 0.
"""
import sys
import threading
import time

import redis
from kombu import Connection

PORT = int(sys.argv[1])
URL = f"redis://127.0.0.1:{PORT}/1"
COUNT = 200

received = []
errors = []


def consume():
    try:
        with Connection(URL) as conn:
            queue = conn.SimpleQueue("jobs")
            for _ in range(COUNT):
                message = queue.get(block=True, timeout=20)
                received.append(message.payload["n"])
                message.ack()
            queue.close()
    except Exception as error:  # reported by the main thread
        errors.append(repr(error))


consumer = threading.Thread(target=consume)
consumer.start()

admin = redis.Redis(port=PORT, db=1)
deadline = time.time() + 10
while int(admin.info("clients")["blocked_clients"]) < 1:
    if time.time() > deadline:
        sys.exit("the consumer never blocked on the server")
    time.sleep(0.01)
print("consumer blocked in BRPOP before the first message")

with Connection(URL) as conn:
    queue = conn.SimpleQueue("jobs")
    for n in range(COUNT):
        queue.put({"n": n})
        if n % 50 == 0:
            time.sleep(0.05)  # let the consumer drain and block again
    queue.close()

consumer.join(timeout=60)
if consumer.is_alive():
    sys.exit(f"the consumer hung after {len(received)} messages")
if errors:
    sys.exit(f"the consumer failed: {errors}")
if received != list(range(COUNT)):
    sys.exit(f"messages lost, repeated or out of order: {received}")
if redis.Redis(port=PORT, db=0).dbsize() != 0:
    sys.exit("kombu's keys leaked into database 0")
print(f"kombu: {COUNT} messages through BRPOP in database 1, in order, none lost")
