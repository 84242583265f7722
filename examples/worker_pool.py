"""A consumer worker pool: one connection, many handler greenlets.

    python examples/worker_pool.py --queue web-requests --workers 8
    python examples/worker_pool.py --url redis://127.0.0.1:6379/0 --queue jobs --count 100

One Consumer with ``prefetch_count`` twice the pool size receives messages
in a ``drain_events`` loop and hands each to a pool of ``--workers``
handler greenlets; a handler acks its message once it has handled it (acks
may come from any greenlet). The broker never sends more than the prefetch
ahead, and a full pool pauses the loop, so a slow handler only ever holds
back its own message. Stops after ``--count`` messages (0: runs until
interrupted), or after ``--idle`` seconds without any.

It consumes what ``gunicorn_app.py`` publishes, so it needs a broker shared
between processes, as that example does: ``--url`` or ``$KOMBU_GREEN_URL``,
default ``amqp://guest:guest@127.0.0.1:5672//``.
"""
import argparse
import os
import socket
import time
from typing import Any, Callable, List, Optional

import gevent
import gevent.pool

from kombu_green import Connection, Consumer, Queue

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def handle(body: Any) -> None:
    """The work itself: here, a pause that lets the other handlers run."""
    gevent.sleep(0.001)


def run(url: str, queue_name: str, workers: int = 4, count: int = 0, idle: Optional[float] = None,
        work: Callable[[Any], None] = handle, report: Callable[[str], None] = print) -> List[Any]:
    """Consume ``queue_name`` with ``workers`` handler greenlets; return the bodies handled."""
    queue = Queue(queue_name, durable=True, auto_delete=False)
    pool = gevent.pool.Pool(workers)
    handled: List[Any] = []
    taken = 0

    def finish(body: Any, message: Any) -> None:
        work(body)
        message.ack()  # only once handled: a crash before this means redelivery
        handled.append(body)
        report(f"handled id={body.get('id')} in {gevent.getcurrent().name}")

    def on_message(body: Any, message: Any) -> None:
        nonlocal taken
        if count and taken >= count:
            message.requeue()  # arrived with the last batch: leave it for others
            return
        taken += 1
        pool.spawn(finish, body, message)  # waits here while all handlers are busy

    with Connection(url) as connection:
        with Consumer(connection, [queue], callbacks=[on_message], accept=["json"],
                      prefetch_count=workers * 2):
            last = time.monotonic()
            while not count or taken < count:
                try:
                    connection.drain_events(timeout=0.5)
                    last = time.monotonic()
                except socket.timeout:
                    if idle is not None and time.monotonic() - last >= idle:
                        break
            pool.join()  # the last handlers ack before the connection closes
    return handled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("KOMBU_GREEN_URL", DEFAULT_URL))
    parser.add_argument("--queue", default=os.environ.get("KOMBU_GREEN_QUEUE", "web-requests"))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--idle", type=float, default=None,
                        help="stop after this many seconds without a message")
    args = parser.parse_args()
    handled = run(args.url, args.queue, args.workers, args.count, args.idle,
                  report=lambda line: print(line, flush=True))
    print(f"handled {len(handled)} messages with {args.workers} workers", flush=True)


if __name__ == "__main__":
    main()
