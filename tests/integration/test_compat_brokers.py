"""carrot-era programs on RabbitMQ and Redis, through kombu_green.compat.

RabbitMQ hands a consumer every message it has at once, so one
``drain_events`` may run several deliveries: ``wait(limit=n)`` must still
run exactly ``n`` callbacks and lose none of the rest.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator, List

import gevent
import pytest

from kombu_green import Connection, Queue
from kombu_green.compat import Consumer, ConsumerSet, Publisher

from ..conformance import WAIT
from .amqp_support import AMQP_URL, require_rabbitmq
from .broker_helpers import Ticker


class Broker:
    """Connections to one broker and names of this test's own, removed afterwards."""

    def __init__(self, kind: str, connect: Callable[[], Connection]) -> None:
        self.kind = kind
        self.connect = connect
        self.suffix = uuid.uuid4().hex[:10]
        self.queues: List[str] = []
        self.exchanges: List[str] = []
        self.opened: List[Connection] = []

    def connection(self) -> Connection:
        connection = self.connect()
        self.opened.append(connection)
        return connection

    def queue(self, name: str) -> str:
        self.queues.append(f"{name}-{self.suffix}")
        return self.queues[-1]

    def exchange(self, name: str) -> str:
        self.exchanges.append(f"{name}-{self.suffix}")
        return self.exchanges[-1]

    def cleanup(self) -> None:
        for connection in self.opened:
            connection.close()
        if self.kind != "amqp":
            return  # Redis keys go with the test's key prefix
        with Connection(AMQP_URL) as connection:
            channel = connection.channel()
            for name in self.queues:
                channel.queue_delete(name)
            for name in self.exchanges:
                channel.exchange_delete(name)


@pytest.fixture(params=[pytest.param("amqp", marks=pytest.mark.amqp),
                        pytest.param("redis", marks=pytest.mark.redis)])
def broker(request: Any) -> Iterator[Broker]:
    if request.param == "amqp":
        require_rabbitmq()
        made = Broker("amqp", lambda: Connection(AMQP_URL))
    else:
        space = request.getfixturevalue("space")
        made = Broker("redis", space.connect)
    yield made
    made.cleanup()


class Importer:
    def __init__(self) -> None:
        self.feeds: List[Any] = []

    def __call__(self, message_data: Any, message: Any) -> None:
        self.feeds.append(message_data["import_feed"])
        message.ack()


def test_the_carrot_readme_program(broker: Broker) -> None:
    conn = broker.connection()
    feed, exchange = broker.queue("feed"), broker.exchange("feed")
    consumer = Consumer(connection=conn, queue=feed, exchange=exchange, routing_key="importer")
    importer = Importer()
    consumer.register_callback(importer)
    publisher = Publisher(connection=conn, exchange=exchange, routing_key="importer")
    publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"})
    publisher.send({"import_feed": "http://example.com/feed.atom"})
    publisher.close()
    with gevent.Timeout(WAIT * 2):
        consumer.wait(limit=2)
    consumer.close()
    assert importer.feeds == ["http://cnn.com/rss/edition.rss", "http://example.com/feed.atom"]
    assert not consumer.backend.is_open and not publisher.backend.is_open


def test_wait_runs_exactly_the_limit_and_keeps_the_rest(broker: Broker) -> None:
    conn = broker.connection()
    feed, exchange = broker.queue("feed"), broker.exchange("feed")
    consumer = Consumer(conn, queue=feed, exchange=exchange, routing_key="importer")
    importer = Importer()
    consumer.register_callback(importer)
    with Publisher(conn, exchange=exchange, routing_key="importer") as publisher:
        for n in range(6):
            publisher.send({"import_feed": n})
    with gevent.Timeout(WAIT * 2):
        consumer.wait(limit=2)
        assert importer.feeds == [0, 1]
        consumer.wait(limit=2)
        assert importer.feeds == [0, 1, 2, 3]
    consumer.close()  # what it was handed beyond the limit goes back
    successor = Consumer(broker.connection(), queue=feed, exchange=exchange, routing_key="importer")
    rest = [successor.fetch() for _ in range(2)]
    assert None not in rest
    assert sorted(m.payload["import_feed"] for m in rest) == [4, 5]
    for message in rest:
        message.ack()
    assert successor.fetch() is None
    successor.close()


def test_fetch_and_discard_all(broker: Broker) -> None:
    conn = broker.connection()
    feed, exchange = broker.queue("feed"), broker.exchange("feed")
    consumer = Consumer(conn, queue=feed, exchange=exchange, routing_key="importer")
    assert consumer.fetch() is None
    with Publisher(conn, exchange=exchange, routing_key="importer") as publisher:
        for body in ("spam-1", "feed-1", "spam-2", "feed-2"):
            publisher.send({"import_feed": body})

    def spam_only(message: Any) -> bool:
        return message.decode()["import_feed"].startswith("spam")

    assert consumer.discard_all(filterfunc=spam_only) == 2
    importer = Importer()
    consumer.register_callback(importer)
    assert consumer.fetch(enable_callbacks=True).acknowledged
    assert importer.feeds == ["feed-1"]
    with Publisher(conn, exchange=exchange, routing_key="importer") as publisher:
        publisher.send({"import_feed": "feed-3"})
    assert consumer.discard_all() == 2
    assert consumer.fetch() is None
    consumer.close()


def test_consumer_set_over_two_queues(broker: Broker) -> None:
    conn = broker.connection()
    exchange = broker.exchange("media")
    video, audio = broker.queue("video"), broker.queue("audio")
    consumer_set = ConsumerSet(conn, from_dict={video: {"exchange": exchange, "routing_key": "video"}})
    consumer_set.add_consumer(Consumer(conn, queue=audio, exchange=exchange, routing_key="audio"))
    importer = Importer()
    consumer_set.register_callback(importer)
    with Publisher(conn, exchange=exchange) as publisher:
        publisher.send({"import_feed": "v1"}, routing_key="video")
        publisher.send({"import_feed": "a1"}, routing_key="audio")
        publisher.send({"import_feed": "v2"}, routing_key="video")
    with gevent.Timeout(WAIT * 2):
        for _ in consumer_set.iterconsume(limit=3):
            pass
    assert sorted(importer.feeds) == ["a1", "v1", "v2"]
    consumer_set.close()
    check = broker.connection().default_channel
    assert [Queue(name)(check).queue_declare(passive=True).message_count for name in (video, audio)] == [0, 0]


def test_a_waiting_consumer_blocks_no_other_greenlet(broker: Broker) -> None:
    conn = broker.connection()
    feed, exchange = broker.queue("feed"), broker.exchange("feed")
    consumer = Consumer(conn, queue=feed, exchange=exchange, routing_key="importer")
    importer = Importer()
    consumer.register_callback(importer)
    ticker = Ticker()
    waiter = gevent.spawn(consumer.wait, 2)
    gevent.sleep(0.2)
    assert ticker.ticks and not waiter.ready()
    with Publisher(broker.connection(), exchange=exchange, routing_key="importer") as publisher:
        publisher.send({"import_feed": "a"})
        before = ticker.ticks
        gevent.sleep(0.2)
        assert ticker.ticks > before
        publisher.send({"import_feed": "b"})
    waiter.get(timeout=WAIT * 2)
    ticker.stop()
    consumer.close()
    assert importer.feeds == ["a", "b"]
