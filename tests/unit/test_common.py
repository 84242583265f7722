"""kombu.common's helpers on memory://: declaring once, event loops, draining
a consumer, broadcast queues, and request/reply with send_reply and
collect_replies (reply_to and correlation_id travel as message properties)."""
from __future__ import annotations

import pickle
import socket
from typing import Any, List

import gevent
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue, common, messaging
from kombu_green.common import (
    Broadcast,
    collect_replies,
    declaration_cached,
    drain_consumer,
    eventloop,
    ignore_errors,
    itermessages,
    maybe_declare,
    send_reply,
    uuid,
)
from kombu_green.exceptions import ConnectionClosed

LIMIT = 30


def test_uuid_is_unique_text() -> None:
    ids = {uuid() for _ in range(100)}
    assert len(ids) == 100 and all(isinstance(i, str) and len(i) == 36 for i in ids)


def test_maybe_declare_is_the_messaging_one_and_caches(conn: Connection) -> None:
    assert maybe_declare is messaging.maybe_declare
    channel = conn.channel()
    exchange = Exchange("cached", "direct")
    assert not declaration_cached(exchange, channel)
    assert maybe_declare(exchange, channel)
    assert declaration_cached(exchange, channel)
    assert not maybe_declare(exchange, channel)


def test_ignore_errors_swallows_connection_and_channel_errors(conn: Connection) -> None:
    def fail() -> None:
        raise ConnectionClosed("gone")

    assert ignore_errors(conn, fail) is None
    assert ignore_errors(conn, lambda x: x * 2, 21) == 42
    with ignore_errors(conn):
        fail()
    with pytest.raises(ValueError):
        ignore_errors(conn, int, "not a number")


def test_eventloop_counts_turns_and_timeouts(conn: Connection) -> None:
    queue = Queue("q")
    got: List[Any] = []
    with Consumer(conn, [queue], callbacks=[lambda body, message: (got.append(body), message.ack())]):
        Producer(conn).publish(1, routing_key="q")
        with gevent.Timeout(LIMIT):
            assert len(list(eventloop(conn, limit=3, timeout=0.05, ignore_timeouts=True))) == 1
            with pytest.raises(socket.timeout):
                next(eventloop(conn, timeout=0.05))
    assert got == [1]


def test_drain_consumer_yields_up_to_limit_then_stops(conn: Connection) -> None:
    queue = Queue("q")
    producer = Producer(conn)
    Queue("q")(conn).declare()
    for i in range(5):
        producer.publish(i, routing_key="q")
    also: List[Any] = []
    consumer = Consumer(conn.channel(), [queue])
    with gevent.Timeout(LIMIT):
        pairs = list(drain_consumer(consumer, limit=3, timeout=5, callbacks=[lambda body, m: also.append(body)]))
    assert [body for body, _ in pairs] == [0, 1, 2] == also
    for _, message in pairs:
        message.ack()
    assert not consumer.consuming_from("q")  # cancelled afterwards
    with gevent.Timeout(LIMIT):  # no limit: ends when nothing more comes within the timeout
        rest = list(drain_consumer(Consumer(conn.channel(), [queue], no_ack=True), limit=None, timeout=0.2))
    assert [body for body, _ in rest] == [3, 4]


def test_itermessages_yields_once_by_default(conn: Connection) -> None:
    channel = conn.channel()
    queue = Queue("q")
    queue(channel).declare()
    Producer(channel).publish({"x": 1}, routing_key="q")
    with gevent.Timeout(LIMIT):
        [(body, message)] = list(itermessages(conn, channel, queue, timeout=5))
        assert body == {"x": 1} and message.payload == {"x": 1}
        message.ack()
        assert list(itermessages(conn, channel, queue, timeout=0.05)) == []


def test_broadcast_gives_every_instance_a_copy(conn: Connection) -> None:
    first, second = Broadcast("news"), Broadcast("news")
    assert first.name != second.name and first.name.startswith("bcast.")
    assert first.exchange.name == "news" and first.exchange.type == "fanout"
    assert first.auto_delete and first.alias == "news" and first.queue == first.name
    got: List[Any] = []
    with Consumer(conn.channel(), [first], no_ack=True, callbacks=[lambda b, m: got.append(("1", b))]), \
            Consumer(conn.channel(), [second], no_ack=True, callbacks=[lambda b, m: got.append(("2", b))]):
        Producer(conn, exchange=first.exchange).publish("hello")
        with gevent.Timeout(LIMIT):
            while len(got) < 2:
                conn.drain_events(timeout=5)
    assert sorted(got) == [("1", "hello"), ("2", "hello")]


def test_broadcast_queue_names_and_pickling() -> None:
    shared = Broadcast("news", queue="workers")
    assert shared.name == "workers"
    unique = Broadcast("news", queue="workers", unique=True)
    assert unique.name.startswith("workers.") and unique.name != Broadcast("news", queue="workers", unique=True).name
    assert Broadcast(queue="x", alias="a", exchange=Exchange("ex", "fanout")).exchange.name == "ex"
    copy = pickle.loads(pickle.dumps(unique))
    assert isinstance(copy, Broadcast) and copy.name == unique.name and copy.queue == unique.queue
    assert copy.exchange.type == "fanout"


def _serve_one(conn: Connection, requests: Queue, reply: Any) -> None:
    """Answer one request with send_reply (run in a greenlet of its own)."""
    with conn, gevent.Timeout(LIMIT):
        channel = conn.channel()
        producer = Producer(channel)
        for body, message in itermessages(conn, channel, requests, limit=1, accept=["pickle"]):
            send_reply(Exchange(""), message, reply(body), producer=producer)
            message.ack()


@pytest.mark.parametrize("no_ack", [True, False])
def test_send_reply_and_collect_replies_round_trip(conn: Connection, no_ack: bool) -> None:
    requests, replies = Queue("requests"), Queue(f"reply.{uuid()}", auto_delete=True)
    channel = conn.channel()
    requests(channel).declare()
    replies(channel).declare()
    server = gevent.spawn(_serve_one, Connection(conn.as_uri()), requests, lambda body: {"double": body * 2})
    correlation_id = uuid()
    Producer(channel).publish(21, routing_key="requests", reply_to=replies.name,
                              correlation_id=correlation_id, serializer="pickle")
    with gevent.Timeout(LIMIT):
        bodies = list(collect_replies(conn, channel, replies, limit=1, timeout=10, no_ack=no_ack,
                                      accept=["pickle"]))
        server.get()
    assert bodies == [{"double": 42}]


def test_a_reply_carries_the_correlation_id_and_the_request_serializer(conn: Connection) -> None:
    requests, replies = Queue("requests"), Queue("replies")
    channel = conn.channel()
    requests(channel).declare()
    replies(channel).declare()
    server = gevent.spawn(_serve_one, Connection(conn.as_uri()), requests, lambda body: body.upper())
    Producer(channel).publish("hi", routing_key="requests", reply_to="replies", correlation_id="c-1",
                              serializer="pickle")
    with gevent.Timeout(LIMIT):
        [(body, message)] = list(itermessages(conn, channel, replies, timeout=10, accept=["pickle"]))
        server.get()
    assert body == "HI"
    assert message.properties["correlation_id"] == "c-1"
    assert message.content_type == "application/x-python-serialize"
    message.ack()


def test_properties_round_trip_on_memory(conn: Connection) -> None:
    channel = conn.channel()
    Queue("q")(channel).declare()
    Producer(channel).publish("x", routing_key="q", reply_to="r", correlation_id="c", message_id="m",
                              app_id="app", user_id="u", type="t", timestamp=1700000000)
    message = Queue("q")(channel).get()
    assert message is not None
    for key, value in {"reply_to": "r", "correlation_id": "c", "message_id": "m", "app_id": "app",
                       "user_id": "u", "type": "t", "timestamp": 1700000000}.items():
        assert message.properties[key] == value


def test_all_names_are_exported() -> None:
    for name in common.__all__:
        assert hasattr(common, name)
