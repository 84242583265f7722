"""The MongoDB transport's at-least-once delivery.

A message taken from a queue stays in ``<prefix>.messages``, leased, until
it is acked; it comes back -- marked redelivered, exactly once -- when its
consumer closes, is SIGKILLed, or holds it past the visibility timeout,
however many connections restore expired leases at once.

A network failure under a consumer is survived or reported as an
OperationalError, and a lease whose reply was lost comes back too.

Every test works under a collection prefix of its own (see
:class:`.mongodb_support.Collections`), so short visibility timeouts only
ever restore the test's own leases.
"""
from __future__ import annotations

import collections
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, List

import gevent
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import OperationalError

from ..conformance import WAIT, drain_until
from .broker_helpers import ChildProcess, consume, declare, publish, quiet
from .mongodb_support import MONGODB_URL, Collections, own_collections
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.mongodb

#: Leases older than 2 s go back to their queue; this connection looks every 0.2 s.
SHORT_LEASES = {"visibility_timeout": 2, "restore_interval": 0.2}


@pytest.fixture
def mongo() -> Iterator[Collections]:
    yield from own_collections()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test MongoDB (see :mod:`.tcp_proxy`)."""
    parsed = urllib.parse.urlsplit(MONGODB_URL)
    made = TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 27017)
    yield made
    made.close()


# -- visibility timeout -------------------------------------------------------------------


def test_an_unacked_message_comes_back_after_the_visibility_timeout(mongo: Collections) -> None:
    """The holder's housekeeping runs in the background: while the holder's connection
    stays open and idle, another connection gets the message back, redelivered, once."""
    with mongo.connect(visibility_timeout=1, restore_interval=0.2) as holder, mongo.connect() as other:
        declare(holder, "q")
        held = consume(holder, "q", ack=False)
        publish(holder, "q", ["lease me"])
        drain_until(holder, lambda: held)
        assert not held[0].redelivered
        assert mongo.leased() == 1

        # ``other`` restores nothing itself (one-hour leases): only the idle
        # holder's housekeeping can bring the message back.
        again = consume(other, "q")
        drain_until(other, lambda: again, timeout=WAIT * 2)
        assert [m.payload for m in again] == ["lease me"] and again[0].redelivered
        quiet(other, 0.5)

        held[0].reject(requeue=True)  # too late: the lease was restored, nothing goes back twice
    mongo.wait_for(lambda: not mongo.documents(), "the redelivered message's ack deleted it")


def test_no_message_is_restored_twice_by_competing_restorers(mongo: Collections) -> None:
    """Three connections restore the same expired leases every 0.05 s: each message is
    delivered exactly once over many restore rounds, and the holder's close adds nothing."""
    total = 30
    fast = {"visibility_timeout": 1, "restore_interval": 0.05}
    with mongo.connect() as holder:  # one-hour leases: it never restores anything itself
        declare(holder, "q")
        publish(holder, "q", range(total))
        held = consume(holder, "q", ack=False)
        drain_until(holder, lambda: len(held) == total)
        assert mongo.leased() == total

        seen: "collections.Counter[int]" = collections.Counter()
        connections = [mongo.connect(**fast) for _ in range(3)]
        try:
            def work(conn: Connection) -> None:
                # One message at a time, acked at once: no lease outlives 1 s.
                Consumer(conn.channel(), [Queue("q")], prefetch_count=1, callbacks=[
                    lambda body, message: (seen.update([body]), message.ack())]).consume()
                drain_until(conn, lambda: sum(seen.values()) >= total, timeout=WAIT * 3)
                quiet(conn, 0.5)  # 10 more restore rounds each

            workers = [gevent.spawn(work, conn) for conn in connections]
            gevent.joinall(workers, timeout=WAIT * 4, raise_error=True)
            assert all(worker.successful() for worker in workers)
        finally:
            for conn in connections:
                conn.close()
    assert set(seen) == set(range(total)) and set(seen.values()) == {1}
    assert mongo.documents() == []


# -- a consumer process that dies ---------------------------------------------------------

CONSUMER_SCRIPT = '''
import sys
import gevent
from kombu_green import Connection, Consumer, Queue

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
held = []
with Connection(url) as conn:
    Consumer(conn.channel(), [Queue(name)], callbacks=[lambda body, message: held.append(body)]).consume()
    print("consuming", flush=True)
    while len(held) < count:
        conn.drain_events(timeout=10)
    print("holding", len(held), flush=True)
    gevent.sleep(60)  # holds every message unacked until killed
'''


def test_a_killed_consumer_process_loses_nothing(mongo: Collections, tmp_path: Path) -> None:
    """A process holding 10 unacked messages (leased in a batch) is SIGKILLed: after the
    visibility timeout all 10 come back to another connection, each redelivered, once."""
    count = 10
    with mongo.connect(**SHORT_LEASES) as conn:
        declare(conn, "q")
        child = ChildProcess(tmp_path, CONSUMER_SCRIPT, mongo.url, "q", str(count), role="consumer")
        try:
            child.says("consuming")
            publish(conn, "q", range(count))
            child.says(f"holding {count}")
            assert mongo.leased() == count
        finally:
            child.kill()
        received = consume(conn, "q")
        drain_until(conn, lambda: len(received) == count, timeout=WAIT * 2)
        quiet(conn, 0.5)
        assert sorted(m.payload for m in received) == list(range(count))
        assert all(m.redelivered for m in received)
    mongo.wait_for(lambda: not mongo.documents(), "the acks deleted every document")


# -- closing ------------------------------------------------------------------------------


def test_closing_returns_messages_fetched_ahead_and_unacked(mongo: Collections) -> None:
    """50 published, a consumer with prefetch 100 delivered 3 (more were leased ahead in
    a batch): after close nothing is leased, and a new connection gets all 50 once, in
    the original order; the 3 delivered ones redelivered."""
    total = 50
    with mongo.connect() as first:
        declare(first, "q")
        publish(first, "q", range(total))
        delivered = consume(first, "q", ack=False, prefetch_count=100)
        for _ in range(3):
            first.drain_events(timeout=WAIT)
        assert [m.payload for m in delivered] == [0, 1, 2]
        mongo.wait_for(lambda: mongo.leased() > 3, "messages leased ahead of delivery")
    assert mongo.leased() == 0
    with mongo.connect() as second:
        received = consume(second, "q")
        drain_until(second, lambda: len(received) == total)
        quiet(second, 0.3)
    bodies = [m.payload for m in received]
    assert sorted(bodies) == list(range(total))
    assert all(m.redelivered for m in received if m.payload in (0, 1, 2))
    assert bodies == list(range(total)), "the original order is kept"
    mongo.wait_for(lambda: not mongo.documents(), "the acks deleted every document")


def test_closing_keeps_the_priority_of_messages_fetched_ahead(mongo: Collections) -> None:
    """Priority 9 and 1 messages leased ahead in one batch, one delivered, the connection
    closed: the returned documents keep their priorities (and so their order)."""
    with mongo.connect() as first:
        declare(first, "q", max_priority=9)
        publish(first, "q", range(4), priority=9)
        publish(first, "q", range(4, 8), priority=1)
        delivered = consume(first, "q", ack=False, prefetch_count=100, queue=Queue("q", max_priority=9))
        first.drain_events(timeout=WAIT)
        assert [m.payload for m in delivered] == [0]
        mongo.wait_for(lambda: mongo.leased() == 8, "the other 7 leased ahead")
    assert sorted(document["p"] for document in mongo.documents()) == [1] * 4 + [9] * 4


# -- the network --------------------------------------------------------------------------


def _drain_through_failures(conn: Connection, done: Any, errors: List[str], timeout: float = WAIT) -> None:
    """drain_until, recording OperationalErrors (a dropped connection) instead of failing."""
    with gevent.Timeout(timeout, AssertionError(f"condition not met within {timeout}s")):
        while not done():
            try:
                drain_until(conn, done, timeout)
            except OperationalError as exc:
                errors.append(str(exc))


def test_a_dropped_connection_under_a_waiting_consumer_loses_nothing(mongo: Collections, proxy: TcpProxy) -> None:
    """Every connection to the server is cut while drain_events() (no timeout) waits: the
    driver connects again or the wait ends with OperationalError naming host:port; either
    way the message published meanwhile is delivered, once."""
    with mongo.connect() as direct, Connection(proxy.url(mongo.url), connect_timeout=2) as conn:
        declare(direct, "q")
        received = consume(conn, "q")
        errors: List[str] = []
        waiter = gevent.spawn(_drain_through_failures, conn, lambda: received, errors)
        gevent.sleep(0.3)  # waiting, polling the empty queue
        proxy.drop()
        publish(direct, "q", ["after the drop"])
        waiter.get(timeout=WAIT * 2)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["after the drop"]
        assert all(f"127.0.0.1:{proxy.port}" in error for error in errors), errors
    mongo.wait_for(lambda: not mongo.documents(), "the ack deleted the document")


def test_a_lease_whose_reply_was_lost_comes_back(mongo: Collections, proxy: TcpProxy) -> None:
    """The server leases a message for drain_events() but the reply never arrives and the
    connection drops: OperationalError naming host:port, and after the visibility timeout
    the message is delivered, redelivered, once."""
    with mongo.connect() as direct, Connection(proxy.url(mongo.url_with(visibility_timeout=1, restore_interval=0.2)),
                                                 connect_timeout=2) as conn:
        declare(direct, "q")
        received = consume(conn, "q")
        proxy.lose_after(b"findAndModify")
        publish(direct, "q", ["lost reply"])
        waiter = gevent.spawn(conn.drain_events)
        assert proxy.swallowed.wait(WAIT), "the lease's reply was expected to be swallowed"
        assert mongo.leased() == 1
        proxy.drop()
        waiter.join(timeout=WAIT)
        assert isinstance(waiter.exception, OperationalError), repr(waiter.exception)
        assert f"127.0.0.1:{proxy.port}" in str(waiter.exception)
        drain_until(conn, lambda: received, timeout=WAIT * 2)
        quiet(conn, 0.3)
        assert [(m.payload, m.redelivered) for m in received] == [("lost reply", True)]
    mongo.wait_for(lambda: not mongo.documents(), "the ack deleted the document")


def test_fanout_tailing_resumes_after_a_dropped_connection(mongo: Collections, proxy: TcpProxy) -> None:
    """The tailing cursor's connection is cut, and 3 messages are broadcast before it
    reads again: it resumes after the last broadcast it saw, so all arrive, once, in order."""
    exchange = Exchange("fan", "fanout")
    with mongo.connect() as direct, Connection(proxy.url(mongo.url), connect_timeout=2) as conn:
        received = consume(conn, "fq", queue=Queue("fq", exchange))
        producer = Producer(direct.channel(), exchange)
        producer.publish("before")
        drain_until(conn, lambda: received, WAIT * 2)
        proxy.drop()
        for n in range(3):
            producer.publish(f"after {n}")
        errors: List[str] = []
        _drain_through_failures(conn, lambda: len(received) >= 4, errors, WAIT * 2)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["before", "after 0", "after 1", "after 2"]
        assert all(f"127.0.0.1:{proxy.port}" in error for error in errors), errors
