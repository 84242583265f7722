"""What the beanstalk transport does beyond the conformance suite.

Priorities and FIFO; fanout and topic routing into tubes; reject buries,
requeue releases; odd queue names and other clients' jobs; errors for
unreachable servers, bad URLs and jobs too big; how many connections a
Connection uses. Every test uses queue names of its own and drops their
tubes after. Delivery guarantees are in :mod:`.test_beanstalk_delivery`.
"""
from __future__ import annotations

from typing import Any, Iterator, List

import gevent
import greenstalk
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import ConfigurationError, OperationalError
from kombu_green.transport.beanstalk.config import tube_name

from ..conformance import WAIT, drain_until
from .beanstalk_support import Space, free_port, raw_client
from .broker_helpers import consume, declare, publish, quiet

pytestmark = pytest.mark.beanstalk


@pytest.fixture
def space() -> Iterator[Space]:
    made = Space()
    yield made
    made.drop_all()


# -- priorities and routing ---------------------------------------------------------------


def test_priorities_first_then_fifo(space: Space) -> None:
    """Published mixed, priorities 9, 6, 3 and 0 come out in that order, and the
    messages of one priority in the order they were published."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        producer = Producer(conn.channel())
        sent = [(priority, n) for n in range(3) for priority in (0, 3, 9, 6)]
        for priority, n in sent:
            producer.publish([priority, n], routing_key=name, priority=priority)
        received = consume(conn, name, prefetch_count=1)
        drain_until(conn, lambda: len(received) == len(sent))
    assert [tuple(m.payload) for m in received] == sorted(sent, key=lambda item: (-item[0], item[1]))


def test_fanout_puts_a_job_in_every_bound_tube(space: Space) -> None:
    """No consumer anywhere: each bound queue's tube holds its own copy, consumable later."""
    exchange = Exchange(space.name("fan"), "fanout")
    names = [space.name(f"fan-{n}") for n in range(3)]
    with space.connect() as conn:
        channel = conn.channel()
        for name in names:
            Queue(name, exchange)(channel).declare()
        Producer(channel, exchange).publish({"to": "all"}, routing_key="ignored")
        assert [space.count(name, "ready") for name in names] == [1, 1, 1]
        for name in names:
            received = consume(conn, name)
            drain_until(conn, lambda received=received: received)
            assert received[0].payload == {"to": "all"}
            assert received[0].delivery_info["exchange"] == exchange.name
    assert [space.count(name, "ready") for name in names] == [0, 0, 0]


def test_a_topic_binding_routes_by_pattern(space: Space) -> None:
    exchange = Exchange(space.name("topic"), "topic")
    stock, everything = space.name("stock"), space.name("all")
    with space.connect() as conn:
        channel = conn.channel()
        Queue(stock, exchange, routing_key="*.stock.#")(channel).declare()
        Queue(everything, exchange, routing_key="#")(channel).declare()
        producer = Producer(channel, exchange)
        for key in ("usd.stock", "eur.stock.db", "stock.nasdaq"):
            producer.publish(key, routing_key=key)
    assert (space.count(stock, "ready"), space.count(everything, "ready")) == (2, 3)


# -- reject -------------------------------------------------------------------------------


def test_reject_without_requeue_buries_and_a_kick_brings_it_back(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name, ack=False)
        publish(conn, name, ["bury me"])
        drain_until(conn, lambda: received)
        received[0].reject()
        space.wait_for(lambda: space.count(name, "buried") == 1, "the job is buried")
        quiet(conn, 0.3)  # a buried job is not delivered
        with raw_client() as raw:
            raw.use(tube_name(name))
            assert raw.kick(10) == 1
        drain_until(conn, lambda: len(received) == 2)
        assert received[1].payload == "bury me" and received[1].redelivered
        received[1].ack()
    assert space.count(name, "buried") + space.count(name, "ready") == 0


def test_requeue_releases_the_job_ahead_of_later_ones(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, ["first", "second"])
        received = consume(conn, name, ack=False, prefetch_count=1)
        drain_until(conn, lambda: received)
        received[0].requeue()
        drain_until(conn, lambda: len(received) == 2)
        assert received[1].payload == "first" and received[1].redelivered
        received[1].ack()
        drain_until(conn, lambda: len(received) == 3)
        assert received[2].payload == "second" and not received[2].redelivered
        received[2].ack()


def test_deleting_a_queue_drops_buried_jobs_too(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name, ack=False)
        publish(conn, name, ["buried", "ready"])
        drain_until(conn, lambda: len(received) == 2)
        received[0].reject()
        received[1].requeue()
        Queue(name)(conn.channel()).delete()
    assert space.stats(name) is None


def test_jobs_of_other_beanstalk_clients_arrive_as_raw_bytes(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name)
        with raw_client() as raw:
            raw.use(tube_name(name))
            raw.put(b"plain job", priority=2 ** 31 - 5)
        drain_until(conn, lambda: received)
    message = received[0]
    assert message.body == b"plain job" and message.content_type == "application/data"
    assert message.properties["priority"] == 5


def test_queue_names_beanstalk_refuses_still_work(space: Space) -> None:
    name = space.name("video @ host #1")
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, ["odd name"])
        assert space.count(name, "ready") == 1
        message = Queue(name)(conn.channel()).get()
        assert message is not None and message.payload == "odd name"
        message.ack()


# -- errors -------------------------------------------------------------------------------


def test_an_unreachable_server_is_an_operational_error_naming_host_and_port() -> None:
    port = free_port()
    conn = Connection(f"beanstalk://127.0.0.1:{port}", connect_timeout=2)
    with pytest.raises(OperationalError, match=f"127.0.0.1:{port}") as caught:
        Producer(conn.channel())
    assert "Cannot reach beanstalkd" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize("url", ["beanstalk://127.0.0.1:11300/vhost", "beanstalk://127.0.0.1:port",
                                 "beanstalk://127.0.0.1:11300?ttr=0",
                                 "beanstalk://127.0.0.1:11300?max_connections=none"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Connection(url).connect()


def test_a_message_too_big_for_beanstalkd_names_its_size(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        producer = Producer(conn.channel())
        with pytest.raises(Exception, match=r"maximum job size.*-z") as caught:
            producer.publish(b"x" * 100_000, routing_key=name)
        assert "bytes" in str(caught.value)
        producer.publish("still fine", routing_key=name)  # the connection is in step
        assert space.count(name, "ready") == 1


def test_many_greenlets_publish_through_two_command_connections(space: Space) -> None:
    name, greenlets, each = space.name(), 50, 20
    with space.connect(max_connections=2) as conn:
        declare(conn, name)
        producer = Producer(conn.channel())
        received: List[Any] = []
        Consumer(conn.channel(), [Queue(name)],
                 callbacks=[lambda body, m: (received.append(tuple(body)), m.ack())]).consume()
        publishers = [gevent.spawn(lambda g=g: [producer.publish([g, i], routing_key=name)
                                                for i in range(each)]) for g in range(greenlets)]
        drain_until(conn, lambda: len(received) == greenlets * each, timeout=WAIT * 4)
        gevent.joinall(publishers, raise_error=True)
        assert len(conn.connection.store.pool.open) <= 2
    assert sorted(received) == [(g, i) for g in range(greenlets) for i in range(each)]


def test_holding_many_unacked_messages_takes_few_connections(space: Space) -> None:
    """100 unacked messages, taken in batches, are all held by one reserving connection."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, range(100))
        received = consume(conn, name, ack=False, prefetch_count=100)
        drain_until(conn, lambda: len(received) == 100)
        store = conn.connection.store
        assert len([r for r in store.held.reservers if r.held]) == 1
        assert len(store.held.reservers) <= 3
        for message in received:
            message.ack()
    assert space.count(name, "ready") + space.count(name, "reserved") == 0


def test_closing_leaves_nothing_reserved(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, range(50))
        consume(conn, name, ack=False, prefetch_count=100)
        for _ in range(4):
            conn.drain_events(timeout=WAIT)
        assert space.count(name, "reserved") > 4, "expected jobs fetched ahead of delivery"
    space.wait_for(lambda: space.count(name, "reserved") == 0, "every job released")
    assert space.count(name, "ready") == 50
    with space.connect() as conn:
        again = consume(conn, name)
        drain_until(conn, lambda: len(again) == 50)
    assert sorted(m.payload for m in again) == list(range(50))
    assert all(m.redelivered for m in again if m.payload in (0, 1, 2, 3))
    with pytest.raises(greenstalk.NotFoundError):
        with raw_client() as raw:
            raw.stats_tube(tube_name(name))
