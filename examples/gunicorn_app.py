"""A WSGI app that publishes one message per request, for gunicorn's gevent worker.

    KOMBU_GREEN_QUEUE=web-requests gunicorn -k gevent -w 4 -b 127.0.0.1:8000 \\
        --chdir examples gunicorn_app:app
    curl 'http://127.0.0.1:8000/publish?id=123'       # -> 200 "published 123"
    python examples/worker_pool.py --queue web-requests --workers 8

Unlike the other examples this one needs a real broker: gunicorn runs the
app in several processes, and memory:// is private to each process. The
broker URL comes from ``$KOMBU_GREEN_URL`` (default
``amqp://guest:guest@127.0.0.1:5672//``; ``redis://...`` works as well),
the queue name from ``$KOMBU_GREEN_QUEUE`` (default ``web-requests``).

Every request runs in a greenlet of its own. It borrows a producer -- and
with it a connection -- from ``kombu_green.pools.producers``, at most ten
per worker process, and gives it back when the ``with`` block ends, so
connections are reused across requests instead of opened for each one. A
request that finds all ten lent waits, without holding up the others.
Publisher confirms are on: a 200 means the broker has stored the message.
A broker that is down or restarting is waited for, inside a retry policy
of about a minute (``$KOMBU_GREEN_PUBLISH_RETRIES`` attempts, 60 by
default; 0 fails at once). If it is still unreachable after that, the
answer is a 503, and the connection involved is replaced rather than lent
to the next request.

Importing this module does not connect: connections are opened on the
first request of each worker (so none is shared across gunicorn's fork).
"""
import os
from urllib.parse import parse_qs

from kombu_green import Connection, Queue
from kombu_green.exceptions import LimitExceeded, OperationalError
from kombu_green.pools import producers

URL = os.environ.get("KOMBU_GREEN_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("KOMBU_GREEN_QUEUE", "web-requests")
#: How long a request waits for a free producer before answering 503.
ACQUIRE_TIMEOUT = 10.0
#: Attempts while the broker is away: pauses of 0.2 s, growing to 1 s.
RETRY_POLICY = {"max_retries": int(os.environ.get("KOMBU_GREEN_PUBLISH_RETRIES", "60")),
                "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1.0}

#: Only a description: the pool makes its own connections from it, lazily.
connection = Connection(URL, transport_options={"confirm_publish": True})
queue = Queue(QUEUE, durable=True, auto_delete=False)
broker_errors = (OperationalError, OSError) + tuple(connection.transport_class.connection_errors)


def publish(request_id: str) -> None:
    body = {"id": request_id, "pid": os.getpid()}
    with producers[connection].acquire(block=True, timeout=ACQUIRE_TIMEOUT) as producer:
        # declare=[queue] declares it once per connection, then is a cache hit;
        # retry=True waits out a broker restart instead of failing the request.
        producer.publish(body, routing_key=queue.name, declare=[queue], serializer="json",
                         delivery_mode="persistent", retry=True, retry_policy=RETRY_POLICY)


def respond(start_response, status: str, text: str):
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        return respond(start_response, "200 OK", f"ok (worker {os.getpid()})")
    if path != "/publish":
        return respond(start_response, "404 Not Found", "try /publish?id=123")
    request_id = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])[0]
    if not request_id:
        return respond(start_response, "400 Bad Request", "missing ?id=")
    try:
        publish(request_id)
    except LimitExceeded:
        return respond(start_response, "503 Service Unavailable",
                       f"all broker connections busy for {ACQUIRE_TIMEOUT:.0f}s, try again")
    except broker_errors as exc:
        return respond(start_response, "503 Service Unavailable",
                       f"message broker unreachable ({connection.as_uri()}): {exc}")
    return respond(start_response, "200 OK", f"published {request_id}")
