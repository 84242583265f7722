"""carrot-era programs, ported by changing imports, run on memory://.

Each test reads like code written for carrot: a BrokerConnection, a
Publisher and a Consumer built from names, ``wait``/``fetch``/
``iterconsume``/``discard_all`` and ConsumerSets.
"""
from __future__ import annotations

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Exchange, Queue
from kombu_green import Consumer as ModernConsumer
from kombu_green.compat import BrokerConnection, Consumer, ConsumerSet, Publisher, entry_to_queue
from kombu_green.exceptions import ConfigurationError

#: Bounds every blocking step, so a broken test fails instead of hanging.
WAIT = 10


class Importer:
    """A carrot-style callback that records feed URLs and acks."""

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.feeds: list = []
        self.messages: list = []

    def __call__(self, message_data, message) -> None:
        self.feeds.append(message_data["import_feed"])
        self.messages.append(message)
        if self.ack:
            message.ack()


@pytest.fixture
def conn(memory_url):
    connection = BrokerConnection(memory_url)
    yield connection
    connection.close()


@pytest.fixture
def consumer(conn):
    consumer = Consumer(connection=conn, queue="feed", exchange="feed", routing_key="importer")
    yield consumer
    consumer.close()


def send_feeds(conn, *urls, **publisher_options) -> None:
    publisher = Publisher(connection=conn, exchange="feed", routing_key="importer", **publisher_options)
    for url in urls:
        publisher.send({"import_feed": url})
    publisher.close()


def waiting(conn, queue="feed") -> int:
    """How many messages wait in ``queue`` (a passive declare's count)."""
    return Queue(queue)(conn.default_channel).queue_declare(passive=True).message_count


# -- the carrot README ----------------------------------------------------------------------


def test_the_carrot_readme_program(conn) -> None:
    consumer = Consumer(connection=conn, queue="feed", exchange="feed", routing_key="importer")
    importer = Importer()
    consumer.register_callback(importer)
    publisher = Publisher(connection=conn, exchange="feed", routing_key="importer")
    publisher.send({"import_feed": "http://cnn.com/rss/edition.rss"})
    publisher.send({"import_feed": "http://example.com/feed.atom"})
    publisher.close()
    with gevent.Timeout(WAIT):
        consumer.wait(limit=2)
    consumer.close()
    assert importer.feeds == ["http://cnn.com/rss/edition.rss", "http://example.com/feed.atom"]
    assert waiting(conn) == 0


def test_subclassing_with_class_attributes(conn) -> None:
    class FeedConsumer(Consumer):
        queue = "feed"
        exchange = "feed"
        routing_key = "importer"

        def __init__(self, connection):
            super().__init__(connection)
            self.seen = []

        def receive(self, message_data, message):
            self.seen.append(message_data["import_feed"])
            message.ack()

    class FeedPublisher(Publisher):
        exchange = "feed"
        routing_key = "importer"

        def import_feed(self, feed_url):
            self.send({"import_feed": feed_url})

    with FeedConsumer(conn) as consumer, FeedPublisher(conn) as publisher:
        publisher.import_feed("http://cnn.com/rss/edition.rss")
        with gevent.Timeout(WAIT):
            consumer.wait(limit=1)
        assert consumer.seen == ["http://cnn.com/rss/edition.rss"]


def test_entities_follow_carrots_defaults(conn, consumer) -> None:
    publisher = Publisher(conn, exchange="feed", routing_key="importer")
    assert (publisher.exchange.name, publisher.exchange.type) == ("feed", "direct")
    assert publisher.exchange.durable and not publisher.exchange.auto_delete
    assert publisher.routing_key == "importer"
    queue = consumer.queues[0]
    assert (queue.name, queue.exchange.name, queue.routing_key) == ("feed", "feed", "importer")
    assert queue.durable and not queue.exclusive and not queue.auto_delete
    other = Consumer(conn, queue="logs", exchange="logs", routing_key="#", exchange_type="topic",
                     durable=False, auto_delete=True)
    assert other.queues[0].exchange.type == "topic"
    assert not other.queues[0].durable and not other.queues[0].exchange.durable
    assert other.queues[0].auto_delete and other.queues[0].exchange.auto_delete
    assert consumer.backend is consumer.channel and publisher.backend is publisher.channel
    assert entry_to_queue == Queue.from_dict
    other.close()
    publisher.close()


def test_a_topic_exchange_by_name(conn) -> None:
    consumer = Consumer(conn, queue="stocks", exchange="market", exchange_type="topic",
                        routing_key="*.stock.#")
    publisher = Publisher(conn, exchange="market", exchange_type="topic")
    publisher.send("usd", routing_key="usd.stock")
    publisher.send("bond", routing_key="eur.bond")
    publisher.send("db", routing_key="eur.stock.db")
    assert [m.payload for m in consumer.iterqueue()] == ["usd", "db"]
    consumer.close()
    publisher.close()


def test_publisher_options_reach_the_message(conn, consumer) -> None:
    publisher = Publisher(conn, exchange=Exchange("feed", "direct"), routing_key="importer",
                          serializer="pickle", delivery_mode=1)
    publisher.send({"import_feed": "x"}, priority=5)
    message = consumer.fetch()
    assert message.content_type == "application/x-python-serialize"
    assert message.properties["delivery_mode"] == 1
    publisher.close()


# -- wait and iterconsume -------------------------------------------------------------------


def test_wait_counts_messages(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    send_feeds(conn, *"abcde")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=2)
        assert importer.feeds == ["a", "b"]
        consumer.wait(limit=2)
    assert importer.feeds == ["a", "b", "c", "d"]
    assert consumer.fetch().payload == {"import_feed": "e"}


def test_iterconsume_yields_per_event_until_the_limit(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    events = consumer.iterconsume(limit=3)
    send_feeds(conn, "a", "b", "c", "d")  # consuming began before the first next()
    with gevent.Timeout(WAIT):
        assert len(list(events)) == 3
    assert importer.feeds == ["a", "b", "c"]


def test_iterconsume_without_limit_runs_until_stopped(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    send_feeds(conn, *"abc")
    with gevent.Timeout(WAIT):
        for _ in consumer.iterconsume():
            if len(importer.feeds) == 3:
                break
    assert importer.feeds == ["a", "b", "c"]


def test_no_ack_consumer(conn) -> None:
    consumer = Consumer(conn, queue="feed", exchange="feed", routing_key="importer", no_ack=True)
    importer = Importer(ack=False)
    consumer.register_callback(importer)
    send_feeds(conn, "a", "b")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=2)
    consumer.close()
    assert importer.feeds == ["a", "b"]
    assert waiting(conn) == 0


def test_auto_ack_acks_before_the_callbacks(conn) -> None:
    consumer = Consumer(conn, queue="feed", exchange="feed", routing_key="importer", auto_ack=True)
    states = []
    consumer.register_callback(lambda data, message: states.append(message.acknowledged))
    send_feeds(conn, "a", "b")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=1)
    assert consumer.fetch().acknowledged
    consumer.close()
    assert states == [True]
    assert waiting(conn) == 0


def test_deliveries_past_the_limit_wait_for_the_next_loop(conn, consumer) -> None:
    """Another greenlet's drain delivers to a consumer whose loop ended: the message
    is held for it (as carrot's client buffered it), not run early or lost."""
    importer = Importer()
    consumer.register_callback(importer)
    send_feeds(conn, "a", "b", "c")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=1)
        conn.drain_events(timeout=WAIT)
        conn.drain_events(timeout=WAIT)
        assert importer.feeds == ["a"]
        consumer.wait(limit=1)  # the held one, without waiting on the broker
    assert importer.feeds == ["a", "b"]
    assert consumer.fetch().payload == {"import_feed": "c"}  # held ones come first
    assert consumer.fetch() is None


def test_close_returns_held_messages_to_the_queue(conn, consumer) -> None:
    consumer.register_callback(Importer())
    send_feeds(conn, "a", "b")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=1)
        conn.drain_events(timeout=WAIT)
    consumer.close()
    successor = Consumer(conn, queue="feed", exchange="feed", routing_key="importer")
    message = successor.fetch()
    assert message.payload == {"import_feed": "b"} and message.redelivered
    successor.close()


def test_consume_after_a_loop_runs_callbacks_again(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    send_feeds(conn, "a", "b")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=1)
        consumer.consume()  # the kombu way from here on
        conn.drain_events(timeout=WAIT)
    assert importer.feeds == ["a", "b"]


# -- fetch, process_next, iterqueue ---------------------------------------------------------


def test_fetch_returns_a_message_or_none(conn, consumer) -> None:
    assert consumer.fetch() is None
    send_feeds(conn, "a")
    message = consumer.fetch()
    assert message.payload == {"import_feed": "a"} and not message.acknowledged
    message.ack()
    assert consumer.fetch() is None


def test_fetch_with_callbacks(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    send_feeds(conn, "a", "b")
    assert consumer.fetch(enable_callbacks=True).acknowledged
    assert importer.feeds == ["a"]
    with pytest.warns(DeprecationWarning, match="fetch"):
        assert consumer.process_next().payload == {"import_feed": "b"}
    assert importer.feeds == ["a", "b"]


def test_fetch_no_ack_and_auto_ack(conn, consumer) -> None:
    send_feeds(conn, "a", "b")
    consumer.fetch(no_ack=True)
    assert consumer.fetch(auto_ack=True).acknowledged
    consumer.close()
    assert waiting(conn) == 0


def test_unacked_fetches_go_back_on_close(conn, consumer) -> None:
    send_feeds(conn, "a")
    assert consumer.fetch() is not None
    consumer.close()
    assert waiting(conn) == 1


def test_iterqueue(conn, consumer) -> None:
    send_feeds(conn, *"abcd")
    first = [m.payload["import_feed"] for m in consumer.iterqueue(limit=2)]
    rest = [m.payload["import_feed"] for m in consumer.iterqueue()]
    assert (first, rest) == (["a", "b"], ["c", "d"])


def test_iterating_a_consumer_polls_for_ever(conn, consumer) -> None:
    consumer.polling_interval = 0.01
    send_feeds(conn, "a")
    steps = iter(consumer)
    with gevent.Timeout(WAIT):
        assert next(steps).payload == {"import_feed": "a"}
        assert next(steps) is None
        send_feeds(conn, "b")
        assert next(steps).payload == {"import_feed": "b"}


# -- discard_all ----------------------------------------------------------------------------


def test_discard_all_purges(conn, consumer) -> None:
    send_feeds(conn, *"abc")
    assert consumer.discard_all() == 3
    assert consumer.fetch() is None


def test_discard_all_with_a_filter(conn, consumer) -> None:
    send_feeds(conn, "spam-1", "feed-1", "spam-2", "feed-2")

    def spam_only(message):
        return message.decode()["import_feed"].startswith("spam")

    assert consumer.discard_all(filterfunc=spam_only) == 2
    kept = [m.payload["import_feed"] for m in consumer.iterqueue()]
    assert kept == ["feed-1", "feed-2"]


def test_discard_all_filters_need_acks(conn) -> None:
    consumer = Consumer(conn, queue="feed", no_ack=True)
    with pytest.raises(ConfigurationError):
        consumer.discard_all(filterfunc=lambda message: True)
    consumer.close()


# -- channels, closing, reviving ------------------------------------------------------------


def test_each_object_has_a_channel_of_its_own(conn, consumer) -> None:
    publisher = Publisher(conn, exchange="feed")
    assert consumer.backend is not publisher.backend
    assert conn.default_channel not in (consumer.backend, publisher.backend)
    with publisher:
        pass
    consumer.close()
    consumer.close()  # twice is fine
    assert not consumer.backend.is_open and not publisher.backend.is_open
    assert conn.default_channel.is_open


def test_a_channel_given_stays_the_callers(conn) -> None:
    channel = conn.channel()
    publisher = Publisher(conn, exchange="feed", channel=channel)
    consumer_set = ConsumerSet(conn, from_dict={"feed": {"exchange": "feed"}}, channel=channel)
    publisher.close()
    consumer_set.close()
    assert publisher.backend is channel and consumer_set.backend is channel and channel.is_open


def test_a_channel_where_carrot_took_a_connection(conn) -> None:
    channel = conn.channel()
    consumer = Consumer(channel, queue="feed", exchange="feed", routing_key="importer")
    consumer.register_callback(Importer())
    send_feeds(conn, "a")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=1)
    consumer.close()
    assert channel.is_open and consumer.connection is conn


def test_a_failed_constructor_closes_its_channel(conn) -> None:
    opened = []
    original = conn.channel

    def channel():
        opened.append(original())
        return opened[-1]

    conn.channel = channel
    with pytest.raises(TypeError):
        Consumer(conn, queue="feed", not_an_option=1)
    assert len(opened) == 1 and not opened[0].is_open  # and no default channel was opened


def test_revive_moves_a_consumer_to_another_channel(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    send_feeds(conn, "a", "b", "c")
    with gevent.Timeout(WAIT):
        consumer.wait(limit=1)
        conn.drain_events(timeout=WAIT)  # "b" is held on the old channel
        old = consumer.backend
        consumer.revive(conn.channel())
        assert consumer.backend is not old
        old.close()  # "b" went back to the queue on revive, not with this close
        consumer.wait(limit=2)
    assert sorted(importer.feeds) == ["a", "b", "c"]


# -- ConsumerSet ----------------------------------------------------------------------------


def test_consumer_set_over_two_queues(conn) -> None:
    queues = {"feed": {"exchange": "feed", "routing_key": "importer"},
              "news": {"exchange": "feed", "routing_key": "news", "exchange_type": "direct"}}
    consumer_set = ConsumerSet(conn, from_dict=queues)
    importer = Importer()
    consumer_set.register_callback(importer)
    publisher = Publisher(conn, exchange="feed")
    publisher.send({"import_feed": "a"}, routing_key="importer")
    publisher.send({"import_feed": "b"}, routing_key="news")
    publisher.send({"import_feed": "c"}, routing_key="news")
    with gevent.Timeout(WAIT):
        assert len(list(consumer_set.iterconsume(limit=2))) == 2
        consumer_set.wait(limit=1)
    assert sorted(importer.feeds) == ["a", "b", "c"]
    publisher.close()
    consumer_set.close()


def test_consumer_set_of_consumers(conn) -> None:
    feed = Consumer(conn, queue="feed", exchange="feed", routing_key="importer")
    feed.register_callback(lambda *args: pytest.fail("the set's callbacks run, not the consumer's"))
    consumer_set = ConsumerSet(conn, consumers=[feed])
    consumer_set.add_consumer(Consumer(conn, queue="news", exchange="feed", routing_key="news"))
    consumer_set.add_consumer_from_dict("sport", exchange="feed", routing_key="sport")
    added = consumer_set.add_queue_from_dict("weather", exchange="feed", binding_key="weather")
    assert added.routing_key == "weather"
    assert [q.name for q in consumer_set.queues] == ["feed", "news", "sport", "weather"]
    importer = Importer()
    consumer_set.register_callback(importer)
    publisher = Publisher(conn, exchange="feed")
    for key in ("importer", "news", "sport", "weather"):
        publisher.send({"import_feed": key}, routing_key=key)
    with gevent.Timeout(WAIT):
        consumer_set.wait(limit=4)
    assert sorted(importer.feeds) == ["importer", "news", "sport", "weather"]
    publisher.send({"import_feed": "x"}, routing_key="news")
    publisher.send({"import_feed": "y"}, routing_key="sport")
    assert consumer_set.discard_all() == 2
    consumer_set.close()
    assert not feed.backend.is_open and not consumer_set.backend.is_open
    publisher.close()


def test_consumer_set_entries_in_carrots_style(conn) -> None:
    consumer_set = ConsumerSet(conn, from_dict={
        "feed": {"exchange": "feed", "exchange_type": "topic", "binding_key": "feed.#",
                 "durable": False, "auto_ack": True}})
    queue = consumer_set.queues[0]
    assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == ("feed", "topic", "feed.#")
    assert not queue.durable and not queue.exchange.durable
    consumer_set.close()


def test_consumer_set_auto_ack_and_context_manager(conn) -> None:
    with ConsumerSet(conn, from_dict={"feed": {"exchange": "feed", "routing_key": "importer"}},
                     auto_ack=True) as consumer_set:
        states = []
        consumer_set.register_callback(lambda data, message: states.append(message.acknowledged))
        send_feeds(conn, "a")
        with gevent.Timeout(WAIT):
            consumer_set.wait(limit=1)
    assert states == [True] and not consumer_set.backend.is_open
    assert waiting(conn) == 0


# -- under gevent ---------------------------------------------------------------------------


def test_a_waiting_consumer_blocks_no_other_greenlet(conn, consumer) -> None:
    importer = Importer()
    consumer.register_callback(importer)
    ticks = []

    def ticker():
        while True:
            ticks.append(1)
            gevent.sleep(0.01)

    ticking = gevent.spawn(ticker)
    waiter = gevent.spawn(consumer.wait, 2)
    gevent.sleep(0.1)
    assert ticks and not waiter.ready()  # the ticker ran while the consumer waited
    before = len(ticks)
    send_feeds(conn, "a")
    gevent.sleep(0.1)
    assert len(ticks) > before and not waiter.ready()
    send_feeds(conn, "b")
    waiter.get(timeout=WAIT)
    ticking.kill()
    assert importer.feeds == ["a", "b"]


def test_consumers_in_greenlets_of_their_own(memory_url) -> None:
    """The carrot deployment, one connection per worker, as greenlets of one process."""
    done, ready = [], {name: gevent.event.Event() for name in ("resize", "upload")}

    def worker(name):
        with Connection(memory_url) as connection:
            consumer = Consumer(connection, queue=name, exchange="jobs", routing_key=name)
            consumer.register_callback(lambda data, message: (done.append((name, data)), message.ack()))
            ready[name].set()  # declared: messages sent from now on are routed to it
            consumer.wait(limit=2)
            consumer.close()

    workers = [gevent.spawn(worker, name) for name in ready]
    for event in ready.values():
        event.wait(WAIT)
    with Connection(memory_url) as connection, Publisher(connection, exchange="jobs") as publisher:
        for n in range(2):
            for name in ("resize", "upload"):
                publisher.send(n, routing_key=name)
    gevent.joinall(workers, timeout=WAIT, raise_error=True)
    assert sorted(done) == [("resize", 0), ("resize", 1), ("upload", 0), ("upload", 1)]


def test_compat_objects_are_modern_ones(conn, consumer) -> None:
    """A port can move to the modern API one call at a time."""
    assert isinstance(consumer, ModernConsumer)
    importer = Importer()
    consumer.register_callback(importer)
    consumer.consume()
    send_feeds(conn, "a")
    conn.drain_events(timeout=WAIT)
    assert importer.feeds == ["a"]
