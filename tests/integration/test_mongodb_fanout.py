"""Fanout on MongoDB: one document per broadcast in the capped
``<prefix>.broadcast`` collection, copied by every connection that tails it
into the bound queues it consumes.

Each copy carries ``fan = "<broadcast id>:<queue>"`` under a unique index,
so connections competing for one queue store one copy, and an acked copy
stays a while as a tombstone (out of every queue, ``done`` set) so a lagging
tailer cannot store it again. A queue nobody consumes at publish time gets
no copy (documented, as with kombu's MongoDB and Redis fanout). To make "which tailer copies first" deterministic, tests
hold one connection's copies back (:class:`HeldCopies`) instead of sleeping.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Exchange, Producer, Queue

from ..conformance import WAIT, drain_until
from .broker_helpers import consume, quiet
from .mongodb_support import Collections, own_collections

pytestmark = pytest.mark.mongodb


@pytest.fixture
def mongo() -> Iterator[Collections]:
    yield from own_collections()


def _bodies(messages: List[Any]) -> List[Any]:
    return [m.payload for m in messages]


def _tombstones(mongo: Collections) -> List[Dict[str, Any]]:
    """Acked fanout copies: in no queue, with the time of their ack."""
    return list(mongo.messages.find({"done": {"$exists": True}}))


def _close_all(*connections: Connection) -> None:
    """Close in parallel: a connection tailing the broadcast collection waits for its
    pending getMore (up to a second) when it closes."""
    gevent.joinall([gevent.spawn(conn.close) for conn in connections], timeout=WAIT, raise_error=True)


class HeldCopies:
    """Hold back ``conn``'s copying of broadcasts until :meth:`release`; then count
    the broadcasts it has handled (copied, or found copied already)."""

    def __init__(self, conn: Connection) -> None:
        self.broadcast = conn.transport.store.broadcast
        self.released = gevent.event.Event()
        self.handled = 0
        copy = self.broadcast._copy

        def late_copy(document: Dict[str, Any]) -> None:
            self.released.wait(WAIT * 2)
            copy(document)
            self.handled += 1

        self.broadcast._copy = late_copy

    def release(self, count: int) -> None:
        """Let the copies through and wait until ``count`` broadcasts were handled."""
        self.released.set()
        with gevent.Timeout(WAIT * 2, AssertionError(f"{count} broadcasts not copied in time")):
            while self.handled < count:
                gevent.sleep(0.02)


def test_competing_tailers_store_one_copy_per_message(mongo: Collections) -> None:
    """Two connections consume the same fanout-bound queue and both copy each broadcast
    into it. The second copies only after the first's 10 copies are stored (unacked):
    the unique ``fan`` key refuses its duplicates, so there are 10 documents, and the
    second connection has nothing to deliver."""
    exchange = Exchange("fan", "fanout")
    queue = Queue("shared", exchange)
    first, second, publisher = mongo.connect(), mongo.connect(), mongo.connect()
    try:
        got_first = consume(first, "shared", ack=False, queue=queue)
        got_second = consume(second, "shared", ack=False, queue=queue)
        late = HeldCopies(second)
        producer = Producer(publisher.channel(), exchange)
        for n in range(10):
            producer.publish(n)
        drain_until(first, lambda: len(got_first) >= 10, WAIT * 2)
        late.release(10)
        quiet(second, 0.3)
        documents = mongo.documents("shared")
        assert len(documents) == 10 and len({d["fan"] for d in documents}) == 10
        assert all(d["fan"].endswith(":shared") for d in documents)
        assert _bodies(got_first) == list(range(10)) and got_second == []
        for message in got_first:
            message.ack()
        mongo.wait_for(lambda: not mongo.documents("shared"), "the acks took every copy out of the queue")
        tombstones = _tombstones(mongo)
        assert sorted(d["fan"] for d in tombstones) == sorted(d["fan"] for d in documents)
        assert all(d["q"] is None for d in tombstones)
    finally:
        _close_all(first, second, publisher)


def test_competing_tailers_deliver_each_message_once_even_after_acks(mongo: Collections) -> None:
    """As above, but the first connection acks each copy at once: when the second
    connection's tailer catches up (here held back until the acks are in; on a busy
    server it lags by up to a getMore's wait), nothing is stored or delivered again."""
    exchange = Exchange("fan", "fanout")
    queue = Queue("shared", exchange)
    first, second, publisher = mongo.connect(), mongo.connect(), mongo.connect()
    try:
        got_first = consume(first, "shared", queue=queue)
        got_second = consume(second, "shared", queue=queue)
        late = HeldCopies(second)
        producer = Producer(publisher.channel(), exchange)
        for n in range(5):
            producer.publish(n)
        drain_until(first, lambda: len(got_first) >= 5, WAIT * 2)
        mongo.wait_for(lambda: len(_tombstones(mongo)) == 5, "the acks took every copy out of the queue")
        late.release(5)
        gevent.joinall([gevent.spawn(quiet, conn, 0.3) for conn in (first, second)], raise_error=True)
        assert sorted(_bodies(got_first) + _bodies(got_second)) == list(range(5))
        assert mongo.documents("shared") == [] and len(_tombstones(mongo)) == 5
    finally:
        _close_all(first, second, publisher)


def test_fanout_reaches_every_queue_consumed_when_published_and_only_those(mongo: Collections) -> None:
    """Two connections consume their own queues bound to one fanout exchange: each gets
    every message published while it consumes, once, in order. Documented behaviour: a
    queue bound but consumed by nobody when a message is published never gets it, so a
    late subscriber sees only what is published after its consumer started."""
    exchange = Exchange("fan", "fanout")
    early, late, publisher = mongo.connect(), mongo.connect(), mongo.connect()
    try:
        got_early = consume(early, "early", queue=Queue("early", exchange))
        Queue("late", exchange)(late.channel()).declare()  # bound, not consumed yet
        producer = Producer(publisher.channel(), exchange)
        producer.publish("before")
        drain_until(early, lambda: got_early, WAIT * 2)
        assert mongo.documents("late") == []

        got_late = consume(late, "late", queue=Queue("late", exchange))
        for n in range(3):
            producer.publish(f"after {n}")
        both = gevent.spawn(drain_until, late, lambda: len(got_late) >= 3, WAIT * 2)
        drain_until(early, lambda: len(got_early) >= 4, WAIT * 2)
        both.get(timeout=WAIT * 2)
        # A tailer copies broadcasts in order, so "before" would have come first.
        gevent.joinall([gevent.spawn(quiet, conn, 0.3) for conn in (early, late)], raise_error=True)
        assert _bodies(got_early) == ["before", "after 0", "after 1", "after 2"]
        assert _bodies(got_late) == ["after 0", "after 1", "after 2"]
        mongo.wait_for(lambda: not mongo.documents("early") and not mongo.documents("late"),
                       "the acks took every copy out of its queue")
    finally:
        _close_all(early, late, publisher)


def test_a_message_published_right_after_consume_returns_is_received(mongo: Collections) -> None:
    """The server is slow to answer the tailer's first query (300 ms here): a message
    published once consume() has returned still reaches the consumer."""
    exchange = Exchange("fan", "fanout")
    with mongo.connect() as conn, mongo.connect() as publisher:
        conn.connect()
        broadcast = conn.transport.store.broadcast
        newest = broadcast._newest

        def slow_newest() -> Any:
            time.sleep(0.3)  # off the hub: a native thread, or gevent's sleep when patched
            return newest()

        broadcast._newest = slow_newest
        got = consume(conn, "q", queue=Queue("q", exchange))
        Producer(publisher.channel(), exchange).publish("right after consume")
        drain_until(conn, lambda: got, 2.0)
        assert _bodies(got) == ["right after consume"]
