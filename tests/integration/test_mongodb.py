"""What only the MongoDB transport does with messages: one document per queued
copy, leases, priorities, bindings shared through collections, and expiry.

The conformance suite proves the contract every transport shares; these
tests look inside the collections with a plain pymongo client. The rest of
the MongoDB tests: test_mongodb_fanout.py (the capped broadcast collection),
test_mongodb_delivery.py (at-least-once delivery), test_mongodb_gevent.py
(interruptions, idle CPU), test_mongodb_connecting.py (errors, URLs,
examples). Every test works under a collection prefix of its own (see
:class:`.mongodb_support.Collections`), dropped afterwards.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.parse
from typing import Any, Iterator, List

import gevent
import pytest

from kombu_green import Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import NotFound, PreconditionFailed

from ..conformance import WAIT, drain_until
from .broker_helpers import consume, declare, publish, quiet
from .mongodb_support import Collections, own_collections

pytestmark = pytest.mark.mongodb


@pytest.fixture
def mongo() -> Iterator[Collections]:
    yield from own_collections()


def _bodies(messages: List[Any]) -> List[Any]:
    return [m.payload for m in messages]


# -- where messages are -------------------------------------------------------------------


def test_a_message_is_a_document_leased_until_acked(mongo: Collections) -> None:
    """A published message is one ready document; get() leases it (it stays, with a
    lease token and time); ack deletes it."""
    with mongo.connect() as conn:
        declare(conn, "q")
        publish(conn, "q", ["one"])
        [document] = mongo.documents("q")
        assert document["lease"] is None and document["p"] == 0 and "fan" not in document

        message = Queue("q")(conn.channel()).get()
        assert message is not None and message.payload == "one"
        [document] = mongo.documents("q")
        assert document["lease"] is not None and "lt" in document
        assert mongo.ready("q") == 0

        message.ack()
        mongo.wait_for(lambda: not mongo.documents(), "the ack deleted the document")


def test_reject_requeue_returns_the_message_to_its_old_place(mongo: Collections) -> None:
    """reject(requeue=True) clears the lease where the document is: it comes back before
    messages published after it, redelivered; reject(requeue=False) deletes it."""
    with mongo.connect() as conn:
        declare(conn, "q")
        publish(conn, "q", ["first", "second", "third"])
        queue = Queue("q")(conn.channel())
        first = queue.get()
        assert first is not None and first.payload == "first" and not first.redelivered
        first.reject(requeue=True)
        [document, *_] = mongo.documents("q")
        assert document["lease"] is None and document["r"] is True

        again = queue.get()
        assert again is not None and again.payload == "first" and again.redelivered
        again.reject(requeue=False)
        mongo.wait_for(lambda: len(mongo.documents()) == 2, "reject without requeue deleted it")
        assert [queue.get(no_ack=True).payload for _ in range(2)] == ["second", "third"]
        assert queue.get() is None
    mongo.wait_for(lambda: not mongo.documents(), "no_ack deleted the documents")


def test_priorities_are_delivered_highest_first_and_fifo_within_one(mongo: Collections) -> None:
    """Priorities 0/3/6/9 published interleaved come out 9, 6, 3, 0, each in publish order."""
    queue = Queue("q", max_priority=9)
    with mongo.connect() as conn:
        bound = queue(conn.channel())
        bound.declare()
        producer = Producer(conn.channel())
        for n in range(3):
            for priority in (0, 3, 6, 9):
                producer.publish([priority, n], routing_key="q", priority=priority)
        assert sorted({d["p"] for d in mongo.documents("q")}) == [0, 3, 6, 9]
        got = [bound.get(no_ack=True).payload for _ in range(12)]
    assert got == [[priority, n] for priority in (9, 6, 3, 0) for n in range(3)]


def test_a_message_over_16_mib_is_refused_with_precondition_failed(mongo: Collections) -> None:
    """A 13 MiB body (over 16 MiB once base64-encoded in its document) is refused with
    PreconditionFailed naming the server; the connection goes on working."""
    with mongo.connect() as conn:
        declare(conn, "q")
        producer = Producer(conn.channel())
        with pytest.raises(PreconditionFailed, match="too large") as info:
            producer.publish(b"x" * (13 * 1024 * 1024), routing_key="q", content_type="application/data",
                             content_encoding="binary")
        parsed = urllib.parse.urlsplit(mongo.url)
        assert f"{parsed.hostname}:{parsed.port or 27017}" in str(info.value)
        producer.publish("small", routing_key="q")
        assert [d["q"] for d in mongo.documents()] == ["q"]


# -- bindings shared across processes -----------------------------------------------------

BIND_SCRIPT = '''
import sys
from kombu_green import Connection, Exchange, Queue

url, action = sys.argv[1], sys.argv[2]
with Connection(url) as conn:
    queue = Queue("from-child", Exchange("ex", "direct"), "rk")(conn.channel())
    if action == "bind":
        queue.declare()
    else:
        queue.unbind_from(Exchange("ex", "direct"), "rk")
    print("done", action, flush=True)
'''


def _run_child(mongo: Collections, action: str) -> None:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(BIND_SCRIPT), mongo.url, action],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"done {action}" in out.stdout, out.stderr


def test_bindings_made_elsewhere_are_honoured_by_the_next_publish(mongo: Collections) -> None:
    """This connection routes with its cached bindings; a bind or unbind by a second
    connection (a fresh cache of its own) or by another process reaches its next publish."""
    exchange = Exchange("ex", "direct")
    with mongo.connect() as conn, mongo.connect() as other:
        Queue("here", exchange, "rk")(conn.channel()).declare()
        producer = Producer(conn.channel(), exchange, routing_key="rk")
        producer.publish("only here")  # routes, and caches the tables
        assert (mongo.ready("here"), mongo.ready("elsewhere")) == (1, 0)

        Queue("elsewhere", exchange, "rk")(other.channel()).declare()
        producer.publish("both")
        assert (mongo.ready("here"), mongo.ready("elsewhere")) == (2, 1)

        _run_child(mongo, "bind")
        producer.publish("all three")
        assert (mongo.ready("here"), mongo.ready("elsewhere"), mongo.ready("from-child")) == (3, 2, 1)

        Queue("elsewhere", exchange, "rk")(other.channel()).unbind_from(exchange, "rk")
        _run_child(mongo, "unbind")
        producer.publish("here again")
        assert (mongo.ready("here"), mongo.ready("elsewhere"), mongo.ready("from-child")) == (4, 2, 1)


# -- expiry -------------------------------------------------------------------------------


def test_an_expired_message_is_never_delivered(mongo: Collections) -> None:
    """A message whose ``expiration`` passed before anyone took it is dropped (and its
    document deleted) instead of delivered; the one without an expiration arrives."""
    with mongo.connect() as conn:
        declare(conn, "q")
        producer = Producer(conn.channel())
        producer.publish("short-lived", routing_key="q", expiration=0.2)
        producer.publish("kept", routing_key="q")
        assert ["x" in d for d in mongo.documents("q")] == [True, False]
        gevent.sleep(0.4)
        received = consume(conn, "q")
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert _bodies(received) == ["kept"]
    mongo.wait_for(lambda: not mongo.documents(), "the expired document was deleted")


def test_x_message_ttl_expires_messages_of_the_queue(mongo: Collections) -> None:
    """x-message-ttl (200 ms) stamps each document with its deadline; messages older
    than that are not delivered, a fresh one is."""
    queue = Queue("q", message_ttl=0.2)
    with mongo.connect() as conn:
        queue(conn.channel()).declare()
        publish(conn, "q", ["stale 1", "stale 2"])
        assert all("x" in d for d in mongo.documents("q"))
        gevent.sleep(0.4)
        publish(conn, "q", ["fresh"])
        received = consume(conn, "q", queue=queue)
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert _bodies(received) == ["fresh"]


def test_x_expires_removes_an_unused_queue(mongo: Collections) -> None:
    """A queue declared with x-expires (300 ms) and never used is gone once that passes:
    a passive declare raises NotFound, and its document is removed."""
    with mongo.connect() as conn:
        Queue("idle", expires=0.3)(conn.channel()).declare()
        Queue("idle")(conn.channel()).queue_declare(passive=True)
        gevent.sleep(0.5)
        with pytest.raises(NotFound):
            Queue("idle")(conn.channel()).queue_declare(passive=True)
    assert mongo.collection("queues").count_documents({"_id": "idle"}) == 0


def test_x_expires_spares_a_queue_consumed_under_a_long_callback(mongo: Collections) -> None:
    """A consumer's callback runs for 1.2 s, four times the queue's x-expires (300 ms):
    the consuming connection keeps the queue alive meanwhile, so another connection
    still finds it, and it still delivers afterwards."""
    queue = Queue("busy", expires=0.3)
    received: List[Any] = []

    def slow(body: Any, message: Any) -> None:
        gevent.sleep(1.2)
        received.append(body)
        message.ack()

    with mongo.connect() as conn, mongo.connect() as other:
        Consumer(conn.channel(), [queue], callbacks=[slow]).consume()
        publish(other, "busy", ["slow", "next"])
        draining = gevent.spawn(drain_until, conn, lambda: received, WAIT)
        gevent.sleep(0.9)
        assert not received, "the callback is still running"
        Queue("busy")(other.channel()).queue_declare(passive=True)
        draining.get(timeout=WAIT)
        drain_until(conn, lambda: len(received) == 2, WAIT)
        assert received == ["slow", "next"]
        Queue("busy")(other.channel()).queue_declare(passive=True)


def test_x_expires_spares_a_queue_consumed_without_declaring_it(mongo: Collections) -> None:
    """One connection declares the queue (x-expires 300 ms) and closes; another consumes
    it without declaring it again: it is in use, so it must not expire."""
    with mongo.connect() as declarer:
        Queue("used", expires=0.3)(declarer.channel()).declare()
    with mongo.connect() as conn, mongo.connect() as other:
        Consumer(conn.channel(), [Queue("used", no_declare=True)], callbacks=[lambda body, m: m.ack()]).consume()
        draining = gevent.spawn(quiet, conn, 1.0)
        gevent.sleep(0.8)
        try:
            Queue("used")(other.channel()).queue_declare(passive=True)
        finally:
            draining.get(timeout=WAIT)


def test_ttl_option_creates_the_ttl_indexes(mongo: Collections) -> None:
    """With ttl=True the server itself deletes expired messages and queues: both
    collections get a TTL index on ``x``; without it, no TTL index."""
    with mongo.connect() as conn:
        conn.connect()
    ttl_indexes = [info for info in mongo.messages.index_information().values() if "expireAfterSeconds" in info]
    assert ttl_indexes == []
    with mongo.connect(ttl="true") as conn:
        conn.connect()
        for suffix in ("messages", "queues"):
            indexes = mongo.collection(suffix).index_information()
            assert [(info["key"], info["expireAfterSeconds"]) for info in indexes.values()
                    if "expireAfterSeconds" in info] == [([("x", 1)], 0)], suffix
