"""Nothing connects by being made: the broker may be down when the app starts.

Every public object built from a Connection -- Producer, Consumer, the pools'
producers and connections, SimpleQueue -- is made without touching the
broker; the first operation connects, inside its own retry policy when it
has one. Runs on a memory transport that refuses connections on demand;
the same paths on real brokers are in tests/integration/test_outages.py.
"""
from __future__ import annotations

from typing import Any, List, Type

import gevent
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue, pools
from kombu_green.common import maybe_declare
from kombu_green.exceptions import OperationalError

from .conftest import FlakyTransport

POLICY = {"max_retries": 5, "interval_start": 0, "interval_step": 0.01, "interval_max": 0.01}


@pytest.fixture
def conn(flaky_conn: Connection) -> Connection:
    return flaky_conn


@pytest.fixture
def down(flaky: Type[FlakyTransport]) -> Type[FlakyTransport]:
    """The test's transport class, its broker refusing every connection until told otherwise."""
    flaky.refusals = 10 ** 6
    return flaky


def come_up_after(down: Type[FlakyTransport], attempts: int) -> None:
    down.refusals = attempts


def received(conn: Connection, queue: Queue) -> List[Any]:
    bodies: List[Any] = []
    with Connection(hostname=conn.hostname, transport="memory") as reader:
        while True:
            message = queue(reader.channel()).get(no_ack=True)
            if message is None:
                return bodies
            bodies.append(message.payload)


def test_making_producers_and_consumers_touches_no_broker(conn: Connection,
                                                          down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    Producer(conn, exchange=Exchange("ex"))
    conn.Producer()
    Consumer(conn, [queue])
    conn.Consumer([queue])
    conn.SimpleQueue("simple")
    assert down.attempts == 0 and not conn.connected


def test_a_publish_with_retry_rides_out_a_broker_down_from_the_start(conn: Connection,
                                                                    down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    producer = Producer(conn, exchange=Exchange("ex"))
    come_up_after(down, 3)
    producer.publish("hello", routing_key="k", declare=[queue], retry=True, retry_policy=POLICY)
    assert down.attempts == 4
    assert received(conn, queue) == ["hello"]


def test_a_publish_without_retry_fails_fast_and_the_next_one_works(conn: Connection,
                                                                   down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    producer = conn.Producer(exchange=Exchange("ex"))
    with pytest.raises(OperationalError, match="refused"):
        producer.publish("lost", routing_key="k", declare=[queue])
    assert down.attempts == 1
    come_up_after(down, 0)
    producer.publish("kept", routing_key="k", declare=[queue])
    assert received(conn, queue) == ["kept"]


def test_ensure_rides_out_a_broker_down_from_the_start(conn: Connection, down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    producer = Producer(conn, exchange=Exchange("ex"))
    come_up_after(down, 2)
    conn.ensure(producer, producer.publish, **POLICY)("ensured", routing_key="k", declare=[queue])
    assert received(conn, queue) == ["ensured"]


def test_the_pools_lend_without_connecting_and_publish_inside_the_policy(conn: Connection,
                                                                         down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    pool = pools.ProducerPool(pools.ConnectionPool(conn, limit=2), limit=2)
    with pool.acquire(block=True, timeout=1) as producer:
        assert down.attempts == 0
        come_up_after(down, 2)
        producer.publish("pooled", exchange="ex", routing_key="k", declare=[queue], retry=True,
                         retry_policy=POLICY)
    with pools.ConnectionPool(conn, limit=1).acquire() as lent:
        assert not lent.connected
    assert received(conn, queue) == ["pooled"]


def test_a_consumer_made_before_the_connection_declares_when_it_connects(conn: Connection,
                                                                        down: Type[FlakyTransport]) -> None:
    """kombu declares a Consumer's queues when it is made; here that waits for the
    first connection, whoever makes it -- so a message published before
    consume() still finds its queue, even if the Consumer object was dropped."""
    queue = Queue("declared-late", Exchange("ex2"), "k")
    Consumer(conn, [queue])  # not kept
    come_up_after(down, 0)
    conn.Producer().publish("early", exchange="ex2", routing_key="k")
    assert received(conn, queue) == ["early"]


def test_a_consumer_made_while_down_consumes_once_up(conn: Connection, down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    got: List[Any] = []
    consumer = Consumer(conn, [queue], callbacks=[lambda body, message: (got.append(body), message.ack())])
    with pytest.raises(OperationalError):
        consumer.consume()
    come_up_after(down, 0)
    consumer.consume()
    conn.Producer().publish("late", exchange="ex", routing_key="k")
    with gevent.Timeout(5):
        conn.drain_events(timeout=5)
    assert got == ["late"]


def test_maybe_declare_with_retry_waits_for_the_broker(conn: Connection, down: Type[FlakyTransport]) -> None:
    queue = Queue("q", Exchange("ex"), "k")
    producer = conn.Producer()
    come_up_after(down, 2)
    assert producer.maybe_declare(queue, retry=True, **POLICY)
    come_up_after(down, 0)
    assert maybe_declare(queue, conn.default_channel) is False  # cached


def test_autoretry_rides_out_a_broker_down_from_the_start(conn: Connection, down: Type[FlakyTransport]) -> None:
    queue = Queue("auto", Exchange("ex"), "k")
    come_up_after(down, 2)

    def declare(channel: Any) -> Any:
        return queue(channel).declare()

    result, channel = conn.autoretry(declare, **POLICY)()
    assert result == "auto" and channel.is_open


def test_common_maybe_declare_with_retry_connects_inside_the_policy(conn: Connection,
                                                                    down: Type[FlakyTransport]) -> None:
    queue = Queue("common", Exchange("ex"), "k")
    come_up_after(down, 2)
    assert maybe_declare(queue, conn, retry=True, **POLICY)
    assert maybe_declare(queue, conn, retry=True, **POLICY) is False  # cached
