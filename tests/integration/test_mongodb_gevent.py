"""What the MongoDB transport promises gevent.

pymongo only speaks blocking sockets, so its calls run in native threads
(``green.Offload``) in an unpatched program and in greenlets under
``monkey.patch_all()``. Either way: idle waiting costs next to no CPU while
other greenlets run, and a wait or a call interrupted by gevent.Timeout --
even while the server is leasing a batch for it -- loses nothing.

Every test works under a collection prefix of its own. No test asserts how
fast anything is; the CPU budget is for idleness.
"""
from __future__ import annotations

import collections
import contextlib
import socket
import time
from typing import Any, Dict, Iterator, List

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Queue

from ..conformance import WAIT, drain_until, get_soon
from .broker_helpers import IDLE_SECONDS, Ticker, consume, cpu_seconds, declare, publish, quiet
from .mongodb_support import Collections, own_collections

pytestmark = pytest.mark.mongodb


@pytest.fixture
def mongo() -> Iterator[Collections]:
    yield from own_collections()


# -- interrupted waits and calls ----------------------------------------------------------


def test_drain_events_cut_by_timeouts_again_and_again_loses_nothing(mongo: Collections) -> None:
    """40 messages wait; drain_events is cut by gevent.Timeouts of 1-16 ms, 48 times
    (in the poll, in the middle of leasing a batch, in the hand-over), then drains
    normally: every message is delivered exactly once."""
    total = 40
    with mongo.connect() as conn:
        declare(conn, "q")
        publish(conn, "q", range(total))
        received = consume(conn, "q")
        for attempt in range(48):
            with gevent.Timeout(0.001 * (1 + attempt % 16), False):
                conn.drain_events()
        drain_until(conn, lambda: len(received) >= total, timeout=WAIT * 2)
        quiet(conn, 0.5)
        counts = collections.Counter(m.payload for m in received)
        assert set(counts) == set(range(total)) and set(counts.values()) == {1}
    mongo.wait_for(lambda: not mongo.documents(), "the acks deleted every document")


def test_queue_get_cut_by_timeouts_again_and_again_loses_nothing(mongo: Collections) -> None:
    """Queue.get() cut by gevent.Timeouts of 1-8 ms, interleaved with gets that finish:
    each of the 30 messages is returned exactly once."""
    total = 30
    with mongo.connect() as conn:
        declare(conn, "q")
        publish(conn, "q", range(total))
        queue = Queue("q")(conn.channel())
        got: List[int] = []
        for attempt in range(40):
            with gevent.Timeout(0.001 * (1 + attempt % 8), False):
                message = queue.get()
                if message is not None:
                    got.append(message.payload)
                    message.ack()
        while len(got) < total:
            message = get_soon(queue)
            assert message is not None, f"only {len(got)} of {total} messages came back"
            got.append(message.payload)
            message.ack()
        assert queue.get() is None
        assert sorted(got) == list(range(total))
    mongo.wait_for(lambda: not mongo.documents(), "the acks deleted every document")


@contextlib.contextmanager
def late_replies(conn: Connection, seconds: float) -> Iterator[None]:
    """Each batch the server leases for ``conn`` reaches it ``seconds`` late (the
    leasing call runs off the hub, in a thread or a greenlet, and sleeps there)."""
    store = conn.transport.store
    lease = store._lease

    def late(queues: List[str], batch: int) -> Any:
        found = lease(queues, batch)
        time.sleep(seconds)  # off the hub: a native thread, or gevent's sleep when patched
        return found

    store._lease = late
    try:
        yield
    finally:
        store._lease = lease


def test_an_interrupted_get_loses_nothing(mongo: Collections) -> None:
    """Queue.get() cut after the server leased its message but before the reply came:
    once the reply is in, the next get() returns that message, not the one after it."""
    with mongo.connect() as conn:
        declare(conn, "q")
        publish(conn, "q", ["first", "second"])
        queue = Queue("q")(conn.channel())
        got: List[Any] = []
        with late_replies(conn, 0.4):
            with gevent.Timeout(0.2, False):
                got.append(queue.get())
            assert got == [] and mongo.leased() == 1, "the server leased the message, the reply is late"
            gevent.sleep(0.4)
        message = get_soon(queue)
        assert message is not None and message.payload == "first", "the message leased was skipped"
        message.ack()
        assert queue.get(no_ack=True).payload == "second"


def test_closing_right_after_an_interrupted_drain_returns_the_batch(mongo: Collections) -> None:
    """drain_events is cut while the reply to a leased batch of 20 is on its way, and the
    connection is closed at once: a new connection gets all 20 (not an hour later)."""
    total = 20
    with mongo.connect() as publisher:
        declare(publisher, "q")
        publish(publisher, "q", range(total))
    with mongo.connect() as conn:
        consume(conn, "q")
        with late_replies(conn, 0.4):
            with gevent.Timeout(0.2, False):
                conn.drain_events()
    with mongo.connect() as after:
        received = consume(after, "q")
        drain_until(after, lambda: len(received) >= total, timeout=1.5)
        assert sorted(m.payload for m in received) == list(range(total))


# -- idle waiting costs no CPU ------------------------------------------------------------


#: An idle wait polls after 10 ms, then backs off, doubling, to polling_interval (1 s):
#: measured once the pauses have reached it.
WARM_UP = 1.5
#: CPU (every thread of the process) 20 idle connections may use in IDLE_SECONDS:
#: a budget for idleness, not speed.
IDLE_CPU = 0.3


def test_20_waiting_connections_burn_no_cpu(mongo: Collections) -> None:
    """20 connections, each a greenlet in drain_events on its own empty queue: once their
    polling has backed off (WARM_UP), ~3 s of waiting cost next to no CPU in any thread
    (the pymongo calls run in native threads when unpatched), and a ticker greenlet keeps
    ticking every 10 ms meanwhile."""
    count = 20
    ready: List[int] = []
    go, done = gevent.event.Event(), gevent.event.Event()
    finished: Dict[int, bool] = {}

    def waiter(n: int) -> None:
        with mongo.connect() as conn:
            declare(conn, f"q{n}")
            consume(conn, f"q{n}")
            ready.append(n)
            go.wait()
            with pytest.raises(socket.timeout):
                # a second past the measurement, so none ends inside it
                conn.drain_events(timeout=WARM_UP + IDLE_SECONDS + 1.0)
            finished[n] = True
            done.wait()  # close only after the measurement

    waiters = [gevent.spawn(waiter, n) for n in range(count)]
    try:
        with gevent.Timeout(WAIT * 2):
            while len(ready) < count:
                gevent.sleep(0.01)
                for job in waiters:
                    if job.dead:
                        job.get()  # a failed setup: its error, not a timeout
        go.set()
        gevent.sleep(WARM_UP)
        ticker = Ticker()
        try:
            started = cpu_seconds()
            gevent.sleep(IDLE_SECONDS)
            used, ticked = cpu_seconds() - started, ticker.ticks
        finally:
            ticker.stop()
        assert not finished, "drain_events returned before its timeout"
        with gevent.Timeout(WAIT):
            while len(finished) < count:
                gevent.sleep(0.05)
    finally:
        done.set()
        gevent.joinall(waiters, timeout=WAIT * 2, raise_error=True)
    assert used < IDLE_CPU, f"20 idle connections used {used:.3f}s of CPU"
    expected = IDLE_SECONDS / 0.01
    assert ticked >= expected * 0.6, f"the ticker ticked {ticked} times in ~{IDLE_SECONDS}s, not ~{expected:.0f}"
