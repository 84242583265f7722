"""What the Redis transport promises gevent.

Many greenlets share one connection (and a few Redis connections); a
consumer waiting in drain_events hears of new consumers at once, through
CLIENT UNBLOCK or, where Redis refuses it, short pops; a wait or a call
interrupted by gevent.Timeout loses nothing, even mid round trip; and
idle waiting costs no CPU while other greenlets run.

Every test works under a key prefix of its own (see :mod:`.redis_keyspace`).
No test asserts how fast anything is; the CPU budgets are for idleness.
"""
from __future__ import annotations

import collections
import socket
import time
import uuid
from typing import Any, Dict, List, Tuple

import gevent
import gevent.event
import pytest
import redis

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import ConnectionClosed, OperationalError

from ..conformance import WAIT, drain_until, get_soon
from .broker_helpers import IDLE_SECONDS, Ticker, consume, declare, publish, quiet
from .redis_keyspace import Keyspace, through
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis


# -- many greenlets, one connection -------------------------------------------------------


def test_many_greenlets_publish_through_one_producer_with_few_redis_connections(space: Keyspace) -> None:
    """100 greenlets x 20 publishes through one Producer while another greenlet consumes,
    all on one Connection limited to 5 Redis connections: 2,000 arrive, each once."""
    greenlets, each = 100, 20
    total = greenlets * each
    with space.connect(max_connections=5) as conn:
        declare(conn, "q")
        producer = Producer(conn.channel())
        seen: "collections.Counter[tuple]" = collections.Counter()
        Consumer(conn.channel(), [Queue("q")], callbacks=[
            lambda body, message: (seen.update([tuple(body)]), message.ack())]).consume()

        def send(g: int) -> None:
            for i in range(each):
                producer.publish([g, i], routing_key="q")

        consuming = gevent.spawn(drain_until, conn, lambda: sum(seen.values()) >= total, 60)
        publishers = [gevent.spawn(send, g) for g in range(greenlets)]
        with gevent.Timeout(90):
            gevent.joinall([*publishers, consuming], raise_error=True)
        quiet(conn, 0.3)
        assert conn.connection.store.client.connection_pool.max_connections == 5
    assert set(seen) == {(g, i) for g in range(greenlets) for i in range(each)}
    assert set(seen.values()) == {1}
    assert space.unacked() == 0


# -- a waiting consumer hears of new consumers --------------------------------------------


def _blocked_in_brpop(space: Keyspace, client_name: str) -> bool:
    return any(c.get("name") == client_name and c.get("cmd") == "brpop" for c in space.raw.client_list())


def test_a_waiting_consumer_hears_of_a_consumer_added_meanwhile(space: Keyspace) -> None:
    """drain_events() without a timeout, blocked in BRPOP on queue a, delivers a message for
    queue b whose consumer another greenlet adds: the pop is ended (CLIENT UNBLOCK), not waited out."""
    name = f"kgt-{uuid.uuid4().hex[:10]}"
    with space.connect(client_name=name) as conn:
        declare(conn, "a", "b")
        got_a = consume(conn, "a")
        waiter = gevent.spawn(conn.drain_events)
        space.wait_for(lambda: _blocked_in_brpop(space, name), "the waiter is blocked in BRPOP")
        got_b = consume(conn, "b")
        publish(conn, "b", ["for b"])
        waiter.get(timeout=WAIT)
        assert [m.payload for m in got_b] == ["for b"] and got_a == []


def test_without_client_unblock_a_new_consumer_is_still_noticed(space: Keyspace) -> None:
    """A user who may not run CLIENT (ID, UNBLOCK), as on some managed services: pops are
    kept short, so drain_events() without a timeout still delivers for a consumer added
    while it waits."""
    with space.acl_user("pw", commands=["-client"]) as (user, url):
        as_user = redis.Redis.from_url(url)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_user.client_id()
        finally:
            as_user.close()
        with Connection(url, transport_options=space.options()) as conn:
            declare(conn, "a", "b")
            consume(conn, "a")
            waiter = gevent.spawn(conn.drain_events)
            space.wait_for(lambda: any(c.get("user") == user and c.get("cmd") == "brpop"
                                       for c in space.raw.client_list()), "the waiter is in its (short) pop")
            got_b = consume(conn, "b")
            publish(conn, "b", ["for b"])
            waiter.get(timeout=WAIT)
            assert [m.payload for m in got_b] == ["for b"]


# -- interrupted waits and calls ----------------------------------------------------------


def test_an_interrupted_drain_loses_nothing(space: Keyspace) -> None:
    """A gevent.Timeout ends drain_events; the message published right after it is
    delivered by the next drain_events, exactly once, and then acked."""
    with space.connect() as conn:
        declare(conn, "q")
        received = consume(conn, "q")
        with gevent.Timeout(0.3, False):
            conn.drain_events()
        assert received == []
        publish(conn, "q", ["right after"])
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["right after"]
        space.wait_for(lambda: space.unacked() == 0, "the ack reached Redis")


def test_a_drain_interrupted_while_taking_a_batch_loses_nothing(space: Keyspace, proxy: TcpProxy) -> None:
    """100 messages wait; drain_events is interrupted (gevent.Timeout) after Redis took a
    batch for it but before the reply arrived: the next calls still deliver every message."""
    total = 100
    with space.connect() as publisher:
        declare(publisher, "q")
        publish(publisher, "q", range(total))
    with through(space, proxy) as conn:
        received = consume(conn, "q")
        proxy.hold_after(b"EVALSHA")
        with gevent.Timeout(0.3, False):
            conn.drain_events()
        assert received == [] and space.unacked() > 0, "Redis took a batch, the reply is held back"
        proxy.release()
        with gevent.Timeout(WAIT * 2):
            while True:  # until nothing more comes for 0.5 s
                try:
                    conn.drain_events(timeout=0.5)
                except socket.timeout:
                    break
        assert len(received) == total, f"{total - len(received)} messages taken but never delivered"
        assert sorted(m.payload for m in received) == list(range(total))
    assert space.unacked() == 0


def test_an_interrupted_get_loses_nothing(space: Keyspace, proxy: TcpProxy) -> None:
    """Queue.get() interrupted after Redis took its message but before the reply arrived:
    the next get() returns that message, not the one after it."""
    with space.connect() as publisher:
        declare(publisher, "q")
        publish(publisher, "q", ["first", "second"])
    with through(space, proxy) as conn:
        queue = Queue("q")(conn.channel())
        proxy.hold_after(b"EVALSHA")
        got: List[Any] = []
        with gevent.Timeout(0.3, False):
            got.append(queue.get())
        assert got == [] and space.unacked() == 1, "Redis took the message, the reply is held back"
        proxy.release()
        message = get_soon(queue)
        assert message is not None and message.payload == "first", "the message taken was skipped"
        message.ack()
        assert queue.get(no_ack=True).payload == "second"


def test_closing_after_an_interrupted_drain_returns_the_message(space: Keyspace) -> None:
    """drain_events interrupted, a message published right after, the connection closed
    without draining again: whether the interrupted pop took it or not, the next
    consumer gets it, once."""
    with space.connect() as conn:
        declare(conn, "q")
        consume(conn, "q")
        with gevent.Timeout(0.3, False):
            conn.drain_events()
        publish(conn, "q", ["right after"])
    assert space.unacked() == 0
    with space.connect() as conn:
        received = consume(conn, "q")
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["right after"]
    assert space.unacked() == 0


def test_a_cancelled_consumer_takes_no_more_messages(space: Keyspace) -> None:
    """After an interrupted drain_events, the consumer is cancelled but the connection stays
    open: a message published next goes to the other connection's consumer."""
    with space.connect() as first, space.connect() as second:
        declare(first, "q")
        consumer = Consumer(first.channel(), [Queue("q")], callbacks=[lambda body, message: message.ack()])
        consumer.consume()
        with gevent.Timeout(0.3, False):
            first.drain_events()
        consumer.cancel()
        received = consume(second, "q")
        publish(second, "q", ["for the second"])
        drain_until(second, lambda: received)
        assert [m.payload for m in received] == ["for the second"]


# -- the connection goes away under a waiting greenlet ---------------------------------------


def _waiting(space: Keyspace, conn: Connection, client_name: str) -> Tuple[gevent.Greenlet, List[Any]]:
    """A greenlet blocked in drain_events() (no timeout) on the empty queue q, and the
    list q's consumer fills."""
    declare(conn, "q")
    received = consume(conn, "q")
    waiter = gevent.spawn(conn.drain_events)
    space.wait_for(lambda: _blocked_in_brpop(space, client_name), "the waiter is blocked in BRPOP")
    return waiter, received


def test_closing_a_connection_wakes_a_greenlet_in_drain_events(space: Keyspace, proxy: TcpProxy) -> None:
    """drain_events() with no timeout must not outlive its connection: ConnectionClosed,
    even when Redis is slow to accept the connections opened meanwhile."""
    name = f"kgt-{uuid.uuid4().hex[:10]}"
    conn = through(space, proxy, client_name=name)
    try:
        waiter, _ = _waiting(space, conn, name)
        proxy.hold_new_connections()
    finally:
        conn.close()
    proxy.release()
    with gevent.Timeout(WAIT):
        waiter.join()
    assert isinstance(waiter.exception, ConnectionClosed), repr(waiter.exception)


def test_a_dropped_connection_wakes_a_greenlet_in_drain_events(space: Keyspace, proxy: TcpProxy) -> None:
    """The network dropping under a waiting consumer raises OperationalError naming
    host:port instead of hanging; the next drain_events connects again and delivers."""
    name = f"kgt-{uuid.uuid4().hex[:10]}"
    with through(space, proxy, client_name=name) as conn:
        waiter, received = _waiting(space, conn, name)
        proxy.drop()
        with gevent.Timeout(WAIT):
            waiter.join()
        assert isinstance(waiter.exception, OperationalError), repr(waiter.exception)
        assert f"127.0.0.1:{proxy.port}" in str(waiter.exception)
        publish(conn, "q", ["after the drop"])
        drain_until(conn, lambda: received)
        assert [m.payload for m in received] == ["after the drop"]


def test_fanout_subscriptions_are_renewed_after_a_dropped_connection(space: Keyspace, proxy: TcpProxy) -> None:
    """PUB/SUB lost under a fanout consumer: the next drain_events reports it once (the
    messages of the gap are gone), the one after subscribes again and delivers."""
    exchange = Exchange("fan", "fanout")
    queue = Queue("fan-q", exchange)
    with through(space, proxy) as conn, space.connect() as publisher:
        received: List[Any] = []
        Consumer(conn.channel(), [queue], callbacks=[lambda body, m: (received.append(m), m.ack())]).consume()
        proxy.drop()
        with pytest.raises(OperationalError):
            drain_until(conn, lambda: False)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)  # subscribes again, then waits
        Producer(publisher.channel(), exchange).publish("after the drop")
        drain_until(conn, lambda: received)
        assert [m.payload for m in received] == ["after the drop"]


# -- idle waiting costs no CPU ------------------------------------------------------------


#: Process CPU an idle wait of IDLE_SECONDS may use: a budget for idleness, not speed.
IDLE_CPU = 0.2


def test_one_connection_waiting_on_100_empty_queues_burns_no_cpu(space: Keyspace) -> None:
    """One blocking pop waits on all 100 queues: ~3 s of drain_events costs next to no CPU,
    and a ticker greenlet keeps ticking meanwhile."""
    names = [f"q{n}" for n in range(100)]
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


def test_20_waiting_connections_burn_no_cpu(space: Keyspace) -> None:
    """20 connections, each a greenlet in drain_events on its own empty queue for ~3 s:
    next to no CPU, and a ticker greenlet keeps ticking meanwhile."""
    count = 20
    ready: List[int] = []
    go, done = gevent.event.Event(), gevent.event.Event()
    finished: Dict[int, bool] = {}

    def waiter(n: int) -> None:
        with space.connect() as conn:
            declare(conn, f"q{n}")
            consume(conn, f"q{n}")
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
