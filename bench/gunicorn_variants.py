"""The apps gunicorn_bench.py serves: one message per request, three ways.

gunicorn imports this module (``--chdir bench gunicorn_variants:app``) in
each gevent worker, which has patched the standard library already, and
serves the variant named by ``$KOMBU_GREEN_BENCH_VARIANT``. Each publishes
the same JSON body, persistent and confirmed, to the durable queue
``$KOMBU_GREEN_QUEUE``, and answers 200 once the broker confirmed:

* ``kombu_green`` -- examples/gunicorn_app.py itself: a producer from
  ``kombu_green.pools.producers`` per request (ten connections per worker);
* ``kombu`` -- the same on kombu 5: ``kombu.pools.producers`` over
  ``pyamqp://`` with ``confirm_publish``;
* ``raw`` -- py-amqp with one connection and one channel per worker
  process, opened on the first request; requests take turns on it through
  a gevent lock, each waiting for its own confirm. Its connection
  arguments come as JSON in ``$KOMBU_GREEN_BENCH_AMQP``.

It does not import the harness: the driver's command line is not its own.
"""
import json
import os
import sys
from typing import Any, Callable, Dict, List, Tuple, Type
from urllib.parse import parse_qs

URL = os.environ.get("KOMBU_GREEN_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("KOMBU_GREEN_QUEUE", "bench.gunicorn")
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
ACQUIRE_TIMEOUT = 10.0


def wsgi(publish: Callable[[str], None], errors: Tuple[Type[BaseException], ...]) -> Callable[..., Any]:
    """The example's HTTP surface around another ``publish(request_id)``."""
    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        status, text = "200 OK", f"ok (worker {os.getpid()})"
        if environ.get("PATH_INFO") == "/publish":
            request_id = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])[0]
            try:
                publish(request_id)
                text = f"published {request_id}"
            except errors as exc:
                status, text = "503 Service Unavailable", f"message broker unreachable: {exc}"
        body = (text + "\n").encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body]
    return app


def kombu_app() -> Callable[..., Any]:
    """The example's pooled producers, written for kombu 5."""
    import kombu
    import kombu.pools
    from kombu.exceptions import OperationalError

    connection = kombu.Connection(URL, transport_options={"confirm_publish": True})
    queue = kombu.Queue(QUEUE, durable=True, auto_delete=False)

    def publish(request_id: str) -> None:
        with kombu.pools.producers[connection].acquire(block=True, timeout=ACQUIRE_TIMEOUT) as producer:
            producer.publish({"id": request_id, "pid": os.getpid()}, routing_key=queue.name,
                             declare=[queue], serializer="json", delivery_mode="persistent")

    return wsgi(publish, (OperationalError, OSError) + connection.connection_errors)


def raw_app() -> Callable[..., Any]:
    """What an app does without a pool: one connection per worker, taken in turns."""
    import amqp
    import gevent.lock

    params = json.loads(os.environ["KOMBU_GREEN_BENCH_AMQP"])
    lock = gevent.lock.Semaphore()
    link: Dict[str, Any] = {}

    def channel() -> Any:
        if "channel" not in link:
            conn = amqp.Connection(**params, confirm_publish=True)
            conn.connect()
            link["connection"], link["channel"] = conn, conn.channel()
            link["channel"].queue_declare(QUEUE, durable=True, auto_delete=False)
        return link["channel"]

    def publish(request_id: str) -> None:
        body = json.dumps({"id": request_id, "pid": os.getpid()}).encode()
        message = amqp.Message(body, content_type="application/json",
                               content_encoding="utf-8", delivery_mode=2)
        with lock:
            try:
                channel().basic_publish(message, exchange="", routing_key=QUEUE)
            except BaseException:
                conn = link.pop("connection", None)
                link.clear()
                if conn is not None:
                    conn.collect()  # reconnect on the next request
                raise

    return wsgi(publish, (amqp.exceptions.AMQPError, OSError))


def kombu_green_app() -> Callable[..., Any]:
    """The example itself, unchanged: what the project ships is what is measured."""
    sys.path.insert(0, EXAMPLES)
    import gunicorn_app

    return gunicorn_app.app


app = {"kombu_green": kombu_green_app, "kombu": kombu_app, "raw": raw_app}[
    os.environ.get("KOMBU_GREEN_BENCH_VARIANT", "kombu_green")]()
