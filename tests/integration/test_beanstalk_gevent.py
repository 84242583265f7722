"""What the beanstalk transport promises gevent.

A consumer waiting in drain_events hears of new consumers at once (its
pending reserve is ended by a wake-up job); a wait or a take interrupted by
gevent.Timeout loses nothing, even mid round trip; closing or losing the
connection wakes a waiting greenlet; and idle waiting costs no CPU while
other greenlets run. No test asserts how fast anything is; the CPU budget
is for idleness.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Dict, Iterator, List

import gevent
import gevent.event
import greenstalk
import pytest

from kombu_green import Connection, Consumer, Queue
from kombu_green.exceptions import ConnectionClosed, OperationalError
from kombu_green.transport.beanstalk.store import BeanstalkStore

from ..conformance import WAIT, drain_until, get_soon
from .beanstalk_support import BEANSTALK_URL, Space, raw_client, server
from .broker_helpers import IDLE_SECONDS, Ticker, consume, declare, publish, quiet
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.beanstalk


@pytest.fixture
def space() -> Iterator[Space]:
    made = Space()
    yield made
    made.drop_all()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    made = TcpProxy(*server())
    yield made
    made.close()


def store_of(conn: Connection) -> BeanstalkStore:
    store = conn.connection.store
    assert isinstance(store, BeanstalkStore)
    return store


def waiting_on(space: Space, name: str) -> bool:
    """A connection is blocked in ``reserve`` on queue ``name``'s tube."""
    return space.count(name, "waiting") > 0


def no_wake_jobs_left(store: BeanstalkStore) -> bool:
    """The store's private wake-up tube holds no job (each wake-up was deleted)."""
    with raw_client() as raw:
        try:
            stats = raw.stats_tube(store.held.wake_tube)
        except greenstalk.NotFoundError:
            return True
    return stats["current-jobs-ready"] + stats["current-jobs-reserved"] == 0


# -- a waiting consumer hears of new consumers --------------------------------------------


def test_a_waiting_consumer_hears_of_a_consumer_added_meanwhile(space: Space) -> None:
    """drain_events() without a timeout, blocked in reserve on queue a, delivers a message
    for queue b whose consumer another greenlet adds: the reserve is woken, not waited out."""
    a, b = space.name("a"), space.name("b")
    with space.connect() as conn:
        declare(conn, a, b)
        got_a = consume(conn, a)
        waiter = gevent.spawn(conn.drain_events)
        space.wait_for(lambda: waiting_on(space, a), "the waiter is blocked in reserve")
        got_b = consume(conn, b)
        publish(conn, b, ["for b"])
        waiter.get(timeout=WAIT)
        assert [m.payload for m in got_b] == ["for b"] and got_a == []
        assert no_wake_jobs_left(store_of(conn))


def test_a_cancelled_consumer_takes_no_more_messages(space: Space) -> None:
    """After an interrupted drain_events (its reserve still pending), the consumer is
    cancelled but the connection stays open: the next message goes to another connection."""
    name = space.name()
    with space.connect() as first, space.connect() as second:
        declare(first, name)
        consumer = Consumer(first.channel(), [Queue(name)], callbacks=[lambda body, m: m.ack()])
        consumer.consume()
        with gevent.Timeout(0.3, False):
            first.drain_events()
        assert waiting_on(space, name)
        consumer.cancel()
        received = consume(second, name)
        publish(second, name, ["for the second"])
        drain_until(second, lambda: received)
        assert [m.payload for m in received] == ["for the second"]


# -- interrupted waits and takes ----------------------------------------------------------


def test_an_interrupted_drain_loses_nothing(space: Space) -> None:
    """A gevent.Timeout ends drain_events; the message published right after it is taken
    by the reserve still pending, and delivered by the next drain_events, once."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name)
        with gevent.Timeout(0.3, False):
            conn.drain_events()
        assert received == []
        publish(conn, name, ["right after"])
        space.wait_for(lambda: space.count(name, "reserved") == 1, "the pending reserve took it")
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["right after"]
    assert space.count(name, "ready") + space.count(name, "reserved") == 0


def test_a_drain_interrupted_while_taking_a_batch_loses_nothing(space: Space, proxy: TcpProxy) -> None:
    """100 messages wait; drain_events is interrupted after beanstalkd reserved a batch
    for it but before the replies arrived: the next calls deliver every message once."""
    name, total = space.name(), 100
    with space.connect() as publisher:
        declare(publisher, name)
        publish(publisher, name, range(total))
    with Connection(proxy.url(BEANSTALK_URL)) as conn:
        declare(conn, name)
        received = consume(conn, name)
        proxy.hold_after(b"reserve-with-timeout")
        with gevent.Timeout(0.3, False):
            conn.drain_events()
        assert received == [] and space.count(name, "reserved") > 0, "a batch is reserved, its replies held"
        proxy.release()
        with gevent.Timeout(WAIT * 2):
            while True:
                try:
                    conn.drain_events(timeout=0.5)
                except socket.timeout:
                    break
        assert sorted(m.payload for m in received) == list(range(total))
    assert space.count(name, "ready") + space.count(name, "reserved") == 0


def test_an_interrupted_get_loses_nothing(space: Space, proxy: TcpProxy) -> None:
    """Queue.get() interrupted after beanstalkd reserved its job but before the reply came:
    the next get() returns that job, not the one after it."""
    name = space.name()
    with space.connect() as publisher:
        declare(publisher, name)
        publish(publisher, name, ["first", "second"])
    with Connection(proxy.url(BEANSTALK_URL)) as conn:
        queue = Queue(name)(conn.channel())
        proxy.hold_after(b"reserve-with-timeout")
        got: List[Any] = []
        with gevent.Timeout(0.3, False):
            got.append(queue.get())
        assert got == [] and space.count(name, "reserved") == 1
        proxy.release()
        message = get_soon(queue)
        assert message is not None and message.payload == "first"
        message.ack()
        last = get_soon(queue)
        assert last is not None and last.payload == "second"
        last.ack()


def test_closing_after_an_interrupted_drain_returns_the_message(space: Space) -> None:
    """drain_events interrupted, a message published right after (the pending reserve
    takes it), the connection closed without draining: the next consumer gets it, once."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        consume(conn, name)
        with gevent.Timeout(0.3, False):
            conn.drain_events()
        publish(conn, name, ["right after"])
        space.wait_for(lambda: space.count(name, "reserved") == 1, "the pending reserve took it")
    with space.connect() as conn:
        received = consume(conn, name)
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["right after"]


# -- the connection goes away under a waiting greenlet -------------------------------------


def test_closing_a_connection_wakes_a_greenlet_in_drain_events(space: Space) -> None:
    name = space.name()
    conn = space.connect()
    try:
        declare(conn, name)
        consume(conn, name)
        waiter = gevent.spawn(conn.drain_events)
        space.wait_for(lambda: waiting_on(space, name), "the waiter is blocked in reserve")
    finally:
        conn.close()
    with gevent.Timeout(WAIT):
        waiter.join()
    assert isinstance(waiter.exception, ConnectionClosed), repr(waiter.exception)
    space.wait_for(lambda: not waiting_on(space, name), "the reserve is gone from the server")


def test_a_dropped_connection_wakes_a_greenlet_in_drain_events(space: Space, proxy: TcpProxy) -> None:
    """The network dropping under a waiting consumer raises OperationalError naming
    host:port instead of hanging; the next drain_events connects again and delivers."""
    name = space.name()
    with Connection(proxy.url(BEANSTALK_URL)) as conn:
        declare(conn, name)
        received = consume(conn, name)
        waiter = gevent.spawn(conn.drain_events)
        space.wait_for(lambda: waiting_on(space, name), "the waiter is blocked in reserve")
        proxy.drop()
        with gevent.Timeout(WAIT):
            waiter.join()
        assert isinstance(waiter.exception, OperationalError), repr(waiter.exception)
        assert f"127.0.0.1:{proxy.port}" in str(waiter.exception)
        publish(conn, name, ["after the drop"])
        drain_until(conn, lambda: received)
        assert [m.payload for m in received] == ["after the drop"]


# -- idle waiting costs no CPU ------------------------------------------------------------


#: Process CPU an idle wait of IDLE_SECONDS may use: a budget for idleness, not speed.
IDLE_CPU = 0.2


def test_one_connection_waiting_on_100_empty_queues_burns_no_cpu(space: Space) -> None:
    names = [space.name(f"q{n}") for n in range(100)]
    with space.connect() as conn:
        declare(conn, *names)
        Consumer(conn.channel(), [Queue(name) for name in names],
                 callbacks=[lambda body, message: message.ack()]).consume()
        ticker = Ticker()
        try:
            started, ticks = time.process_time(), ticker.ticks
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=IDLE_SECONDS)
            used, ticked = time.process_time() - started, ticker.ticks - ticks
        finally:
            ticker.stop()
    assert used < IDLE_CPU, f"waiting on 100 empty queues used {used:.3f}s of CPU"
    assert ticked >= 10, "the ticker must run while the connection waits"


def test_20_waiting_connections_burn_no_cpu(space: Space) -> None:
    """20 connections, each a greenlet in drain_events on its own empty queue for ~3 s:
    next to no CPU, and a ticker greenlet keeps ticking meanwhile."""
    count = 20
    names = [space.name(f"q{n}") for n in range(count)]
    ready: List[int] = []
    go, done = gevent.event.Event(), gevent.event.Event()
    finished: Dict[int, bool] = {}

    def waiter(n: int) -> None:
        with space.connect() as conn:
            declare(conn, names[n])
            consume(conn, names[n])
            ready.append(n)
            go.wait()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=IDLE_SECONDS)
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
        ticker = Ticker()
        try:
            started = time.process_time()
            go.set()
            with gevent.Timeout(IDLE_SECONDS + WAIT):
                while len(finished) < count:
                    gevent.sleep(0.05)
            used, ticked = time.process_time() - started, ticker.ticks
        finally:
            ticker.stop()
    finally:
        done.set()
        gevent.joinall(waiters, timeout=WAIT * 2, raise_error=True)
    assert used < IDLE_CPU, f"20 idle connections used {used:.3f}s of CPU"
    assert ticked >= 10, "the ticker must run while the connections wait"
