#!/usr/bin/env python
"""AMQP side by side: kombu_green, kombu (pyamqp://) and raw py-amqp on one RabbitMQ.

What is measured, and how to read it: bench/README.rst.
"""
import harness  # first: it settles monkey-patching before socket is imported

# isort: split
import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List
from urllib.parse import quote, unquote, urlsplit

import amqp
from flows import PREFETCH, BrokerBench, Ends, Sink, json_bytes
from harness import BenchError


def broker_params(url: str) -> Dict[str, Any]:
    """The pieces of an amqp:// URL each client wants; the path after the
    first slash is the virtual host, so ``//`` means ``/`` as in kombu."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
    path = "/" + (parts.path[1:] if len(parts.path) > 1 else "/")
    return {"host": f"{host}:{port}", "userid": user, "password": password, "virtual_host": vhost,
            "kombu_green_url": f"amqp://{netloc}{path}", "kombu_url": f"pyamqp://{netloc}{path}",
            "display": f"amqp://{user}@{host}:{port}{path}"}


def raw_connect(params: Dict[str, Any], **options: Any) -> amqp.Connection:
    """A connected plain py-amqp connection: the raw column, and housekeeping."""
    conn = amqp.Connection(host=params["host"], userid=params["userid"], password=params["password"],
                           virtual_host=params["virtual_host"], **options)
    conn.connect()
    return conn


def delete_queues(params: Dict[str, Any], names: List[str]) -> int:
    """Delete whichever of these queues still exist; return how many did."""
    leftover = 0
    conn = raw_connect(params)
    try:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                continue  # the run deleted it, as it should (py-amqp reopens the channel)
            leftover += 1
            channel.queue_delete(name)
    finally:
        conn.close()
    return leftover


def raw_message(i: int) -> amqp.Message:
    """The message raw py-amqp sends: the properties kombu would set, by hand."""
    return amqp.Message(json_bytes(i), content_type="application/json",
                        content_encoding="utf-8", delivery_mode=2)


class AmqpBench(BrokerBench):
    url_env, default_url = "KOMBU_GREEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"
    titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw py-amqp"}
    goals = [("consume", "kombu", 1.2), ("consume", "raw", 0.9), ("publish", "kombu", 1.0)]

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.params = broker_params(args.url)
        self.display = self.params["display"]

    def open(self) -> Dict[str, Any]:
        raw_connect(self.params).close()
        return harness.versions("kombu", "amqp")

    def km_url(self, lib: str) -> str:
        """kombu needs pyamqp:// for its py-amqp transport."""
        return str(self.params[f"{lib}_url"])

    def settle(self, lib: str, names: List[str], n: int) -> None:
        """RabbitMQ's ready count lags the publishes a little: wait up to 10 s for n."""
        conn = raw_connect(self.params)
        try:
            channel = conn.channel()
            deadline = time.monotonic() + 10
            while True:
                count = sum(channel.queue_declare(name, passive=True).message_count for name in names)
                if count == n:
                    return
                if count > n or time.monotonic() > deadline:
                    raise BenchError(f"the queues hold {count} messages after publishing {n}")
                time.sleep(0.01)
        finally:
            conn.close()

    def sweep(self, names: List[str]) -> int:
        return delete_queues(self.params, names)

    @contextmanager
    def raw_ends(self, names: List[str], sink: Sink) -> Iterator[Ends]:
        """basic_publish on one connection; basic_consume and drain_events on the other."""
        with raw_connect(self.params) as pconn, raw_connect(self.params) as cconn:
            pchan, cchan = pconn.channel(), cconn.channel()
            for name in names:
                pchan.queue_declare(name, durable=False, auto_delete=False)
            tags: List[str] = []

            def on_message(msg: amqp.Message) -> None:
                sink(json.loads(msg.body)["id"])
                cchan.basic_ack(msg.delivery_tag)

            def subscribe() -> None:
                cchan.basic_qos(0, PREFETCH, False)
                tags.extend(cchan.basic_consume(name, callback=on_message) for name in names)

            def send(i: int) -> None:
                pchan.basic_publish(raw_message(i), exchange="", routing_key=names[i % len(names)])

            yield Ends(lambda: send, subscribe, cconn.drain_events,
                       flush=lambda: pchan.queue_declare(names[-1], passive=True))
            for tag in tags:
                cchan.basic_cancel(tag)
            for name in names:
                cchan.queue_delete(name)


if __name__ == "__main__":
    sys.exit(harness.main(AmqpBench))
