"""Producer and Consumer over memory://: publishing, consuming, settling."""
from __future__ import annotations

import socket

import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import (
    ChannelError,
    ContentDisallowed,
    DecodeError,
    NotFound,
)
from kombu_green.messaging import maybe_declare

WAIT = 0.2


@pytest.fixture
def exchange():
    return Exchange("media", "direct")


@pytest.fixture
def queue(exchange):
    return Queue("video", exchange, key="video")


class Collector:
    """A callback that records (body, message) and acks."""

    def __init__(self, ack=True):
        self.ack = ack
        self.bodies = []
        self.messages = []

    def __call__(self, body, message):
        self.bodies.append(body)
        self.messages.append(message)
        if self.ack:
            message.ack()


@pytest.fixture
def received(conn, queue):
    collector = Collector()
    Consumer(conn, [queue], callbacks=[collector],
             accept=["json", "yaml", "pickle", "msgpack", "text/plain",
                     "application/data"]).consume()
    return collector


@pytest.fixture
def declared(conn, queue):
    """The test queue, declared and bound to the connection."""
    bound = queue(conn)
    bound.declare()
    return bound


@pytest.fixture
def producer(conn, exchange):
    return Producer(conn, exchange=exchange, routing_key="video")


def deliver(conn, producer, body, **kwargs):
    """Publish one message and drain exactly one delivery."""
    producer.publish(body, **kwargs)
    conn.drain_events(timeout=WAIT)


# ----------------------------------------------------------------- formats


def test_publish_json_by_default(conn, producer, received):
    deliver(conn, producer, {"name": "x", "n": [1, 2]})
    message = received.messages[0]
    assert received.bodies == [{"name": "x", "n": [1, 2]}]
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"


def test_publish_raw_bytes_is_application_data(conn, producer, received):
    deliver(conn, producer, b"\x00\xffraw")
    assert received.bodies == [b"\x00\xffraw"]
    assert received.messages[0].content_type == "application/data"
    assert received.messages[0].content_encoding == "binary"


def test_publish_str_is_text_plain(conn, producer, received):
    deliver(conn, producer, "héllo")
    assert received.bodies == ["héllo"]
    assert received.messages[0].content_type == "text/plain"
    assert received.messages[0].content_encoding == "utf-8"


def test_publish_str_with_json_serializer(conn, producer, received):
    deliver(conn, producer, "hello", serializer="json")
    assert received.bodies == ["hello"]
    assert received.messages[0].content_type == "application/json"


def test_send_is_publish():
    assert Producer.send is Producer.publish


def test_explicit_content_type_passthrough(producer, declared):
    raw = b"\xff\xd8\xff\xe0 fake jpeg"
    producer.send(raw, content_type="image/jpeg", content_encoding="binary")
    message = declared.get()
    assert message.content_type == "image/jpeg"
    assert message.content_encoding == "binary"
    assert message.body == raw


def test_explicit_content_type_text_is_encoded(producer, declared):
    producer.publish("<b>hé</b>", content_type="text/html", content_encoding="utf-8")
    message = declared.get()
    assert message.body == "<b>hé</b>".encode()
    assert message.content_type == "text/html"


def test_consumer_accepting_raw_content_type_gets_bytes(conn, producer, queue):
    raw = b"\xff\xd8\xff\xe0 fake jpeg"
    collector = Collector()
    Consumer(conn, [queue], callbacks=[collector], accept=["image/jpeg"]).consume()
    producer.send(raw, content_type="image/jpeg", content_encoding="binary")
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == [raw]


@pytest.mark.parametrize("serializer, content_type", [
    ("yaml", "application/x-yaml"),
    ("pickle", "application/x-python-serialize"),
    ("msgpack", "application/x-msgpack"),
    ("json", "application/json"),
])
def test_serializer_per_message(conn, producer, received, serializer, content_type):
    deliver(conn, producer, {"a": [1, 2], "b": "c"}, serializer=serializer)
    assert received.bodies == [{"a": [1, 2], "b": "c"}]
    assert received.messages[0].content_type == content_type


@pytest.mark.parametrize("serializer", ["yaml", "pickle", "msgpack"])
def test_serializer_per_producer(conn, exchange, received, serializer):
    producer = Producer(conn, exchange=exchange, routing_key="video", serializer=serializer)
    assert producer.serializer == serializer
    deliver(conn, producer, {"k": "v"})
    assert received.bodies == [{"k": "v"}]
    assert received.messages[0].content_type != "application/json"


def test_message_serializer_overrides_producer(conn, exchange, received):
    producer = Producer(conn, exchange=exchange, routing_key="video", serializer="yaml")
    deliver(conn, producer, {"k": "v"}, serializer="msgpack")
    assert received.messages[0].content_type == "application/x-msgpack"


def test_accept_by_content_type(conn, queue, producer):
    collector = Collector()
    Consumer(conn, [queue], callbacks=[collector], accept=["application/x-yaml"]).consume()
    deliver(conn, producer, [1, 2], serializer="yaml")
    assert collector.bodies == [[1, 2]]


def test_accept_list_refuses_others(conn, queue, producer):
    Consumer(conn, [queue], callbacks=[Collector()], accept=["yaml"]).consume()
    producer.publish({"a": 1}, serializer="msgpack")
    with pytest.raises(ContentDisallowed, match="application/x-msgpack"):
        conn.drain_events(timeout=WAIT)


def test_pickle_refused_by_default_and_not_lost(memory_url, queue, exchange):
    conn = Connection(memory_url)
    collector = Collector()
    Consumer(conn, [queue], callbacks=[collector]).consume()
    Producer(conn, exchange=exchange, routing_key="video").publish({"secret": 1},
                                                                   serializer="pickle")
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        conn.drain_events(timeout=WAIT)
    assert collector.bodies == []
    conn.close()

    again = Connection(memory_url)
    try:
        message = queue(again).get(accept=["pickle"])
        assert message is not None
        assert message.payload == {"secret": 1}
        assert message.delivery_info["redelivered"] is True
        message.ack()
    finally:
        again.close()


def test_pickle_accepted_consumer_redelivery(memory_url, queue, exchange):
    conn = Connection(memory_url)
    Consumer(conn, [queue], callbacks=[Collector()]).consume()
    Producer(conn, exchange=exchange, routing_key="video").publish(42, serializer="pickle")
    with pytest.raises(ContentDisallowed):
        conn.drain_events(timeout=WAIT)
    conn.close()

    again = Connection(memory_url)
    collector = Collector()
    Consumer(again, [queue], callbacks=[collector], accept=["pickle"]).consume()
    again.drain_events(timeout=WAIT)
    assert collector.bodies == [42]
    assert collector.messages[0].redelivered
    again.close()


def test_malformed_json_raises_decode_error(conn, producer, queue):
    collector = Collector()
    Consumer(conn, [queue], callbacks=[collector]).consume()
    producer.publish(b"{not json", content_type="application/json")
    with pytest.raises(DecodeError):
        conn.drain_events(timeout=WAIT)
    assert collector.bodies == []


def test_on_decode_error_gets_message_and_can_reject(conn, producer, queue):
    errors = []

    def on_decode_error(message, exc):
        errors.append((message, exc))
        message.reject()

    collector = Collector()
    Consumer(conn, [queue], callbacks=[collector], on_decode_error=on_decode_error).consume()
    producer.publish(b"{not json", content_type="application/json")
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == []
    [(message, exc)] = errors
    assert isinstance(exc, DecodeError)
    assert message.body == b"{not json"
    assert message.acknowledged
    conn.close()
    assert queue(conn).get() is None


def test_on_decode_error_for_disallowed_content(conn, producer, queue):
    errors = []
    Consumer(conn, [queue], callbacks=[Collector()],
             on_decode_error=lambda m, e: (errors.append(e), m.reject())).consume()
    producer.publish({"a": 1}, serializer="pickle")
    conn.drain_events(timeout=WAIT)
    assert isinstance(errors[0], ContentDisallowed)


def test_corrupt_compressed_body_goes_to_on_decode_error(conn, producer, queue):
    errors = []
    Consumer(conn, [queue], callbacks=[Collector()],
             on_decode_error=lambda m, e: (errors.append(e), m.reject())).consume()
    producer.publish(b"not zlib", content_type="application/json",
                     headers={"compression": "application/x-gzip"})
    conn.drain_events(timeout=WAIT)
    assert isinstance(errors[0], DecodeError)


def test_corrupt_compressed_body_raises_from_drain(conn, producer, queue):
    Consumer(conn, [queue], callbacks=[Collector()]).consume()
    producer.publish(b"not zlib", content_type="application/json",
                     headers={"compression": "application/x-gzip"})
    with pytest.raises(DecodeError):
        conn.drain_events(timeout=WAIT)


# ------------------------------------------------------------- compression


@pytest.mark.parametrize("method, header", [("zlib", "application/x-gzip"),
                                            ("bz2", "application/x-bz2")])
def test_compression_round_trip(conn, producer, received, method, header):
    body = {"text": "x" * 500}
    deliver(conn, producer, body, compression=method)
    message = received.messages[0]
    assert received.bodies == [body]
    assert message.headers["compression"] == header


def test_compression_per_producer(conn, exchange, received):
    producer = Producer(conn, exchange=exchange, routing_key="video", compression="zlib")
    deliver(conn, producer, [1, 2, 3])
    assert received.bodies == [[1, 2, 3]]
    assert received.messages[0].headers["compression"] == "application/x-gzip"


def test_compression_with_queue_get(producer, declared):
    producer.publish({"text": "y" * 2000}, compression="zlib")
    message = declared.get()
    assert message.headers["compression"] == "application/x-gzip"
    assert message.body == b'{"text": "' + b"y" * 2000 + b'"}'
    assert message.payload == {"text": "y" * 2000}


# ------------------------------------------------------------- properties


def test_headers_and_properties_preserved(conn, producer, received):
    deliver(conn, producer, {"a": 1}, headers={"trace-id": "t-1", "n": 5}, priority=7,
            correlation_id="corr-1", reply_to="reply-queue", expiration=1.5)
    message = received.messages[0]
    assert message.headers == {"trace-id": "t-1", "n": 5}
    assert message.properties["priority"] == 7
    assert message.properties["correlation_id"] == "corr-1"
    assert message.properties["reply_to"] == "reply-queue"
    assert message.properties["expiration"] == "1500"


def test_headers_argument_not_mutated(conn, producer, received):
    headers = {"a": 1}
    deliver(conn, producer, "x", headers=headers, compression="zlib")
    assert headers == {"a": 1}


@pytest.mark.parametrize("mode, expected", [(None, 2), ("transient", 1), ("persistent", 2),
                                            (1, 1), (2, 2)])
def test_delivery_mode(conn, producer, received, mode, expected):
    kwargs = {} if mode is None else {"delivery_mode": mode}
    deliver(conn, producer, "x", **kwargs)
    assert received.messages[0].properties["delivery_mode"] == expected


def test_delivery_mode_from_exchange(conn, queue, received):
    transient = Exchange("media", "direct", delivery_mode="transient")
    deliver(conn, Producer(conn, exchange=transient, routing_key="video"), "x")
    assert received.messages[0].properties["delivery_mode"] == 1


def test_delivery_mode_from_exchange_given_to_publish(conn, queue, received):
    transient = Exchange("media", "direct", delivery_mode="transient")
    Producer(conn).publish("x", exchange=transient, routing_key="video")
    conn.drain_events(timeout=WAIT)
    assert received.messages[0].properties["delivery_mode"] == 1


def test_delivery_info(conn, producer, received):
    deliver(conn, producer, "x")
    info = received.messages[0].delivery_info
    assert info["exchange"] == "media"
    assert info["routing_key"] == "video"
    assert info["redelivered"] is False
    assert info["consumer_tag"]


def test_higher_priority_delivered_first(conn):
    queue = Queue("prio", max_priority=9)(conn)
    queue.declare()
    producer = Producer(conn)
    producer.publish("low", routing_key="prio", priority=1)
    producer.publish("high", routing_key="prio", priority=9)
    assert queue.get().payload == "high"


def test_publish_routing_key_overrides_producer(conn, exchange):
    audio = Queue("audio", exchange, "audio")(conn)
    audio.declare()
    Producer(conn, exchange=exchange, routing_key="video").publish("a", routing_key="audio")
    assert audio.get().payload == "a"


def test_publish_to_other_exchange_object_declares_it(conn):
    other = Exchange("other-ex", "fanout")
    producer = Producer(conn)
    producer.publish("x", exchange=other)  # declared on the way, routed nowhere
    Exchange("other-ex", passive=True)(conn).declare()


def test_publish_declare_argument(conn):
    target = Queue("declared-by-publish", Exchange("dx"), "k")
    Producer(conn, exchange=Exchange("dx")).publish("x", routing_key="k", declare=[target])
    assert target(conn).get().payload == "x"


def test_default_exchange_routes_by_queue_name(conn):
    Queue("by-name")(conn).declare()
    Producer(conn).publish("x", routing_key="by-name")
    assert Queue("by-name")(conn).get().payload == "x"


# ------------------------------------------------------- subclass (0.9 style)


feed_exchange = Exchange("feed", type="direct")
feed_queue = Queue("feed", feed_exchange, "importer")
received_feeds = []


class FeedProducer(Producer):
    exchange = feed_exchange
    routing_key = "importer"

    def import_feed(self, feed_url):
        return self.publish({"action": "import_feed", "feed_url": feed_url})


class FeedConsumer(Consumer):
    queues = [feed_queue]

    def receive(self, body, message):
        received_feeds.append(body)
        message.ack()


def test_subclassed_producer_and_consumer(conn):
    received_feeds.clear()
    channel = conn.channel()
    consumer = FeedConsumer(channel)
    consumer.consume()
    producer = FeedProducer(channel)
    producer.import_feed("http://cnn.com/rss")
    conn.drain_events(timeout=WAIT)
    assert received_feeds == [{"action": "import_feed", "feed_url": "http://cnn.com/rss"}]


def test_subclass_class_attributes_not_mutated(conn):
    channel = conn.channel()
    FeedConsumer(channel).add_queue(Queue("extra"))
    FeedProducer(channel)
    assert FeedProducer.exchange is feed_exchange
    assert not feed_exchange.is_bound
    assert FeedConsumer.queues == [feed_queue]
    assert FeedConsumer.queues[0] is feed_queue
    assert not feed_queue.is_bound
    assert not feed_queue.exchange.is_bound


def test_subclassed_producer_attributes(conn):
    producer = FeedProducer(conn.channel())
    assert producer.exchange == feed_exchange
    assert producer.exchange.is_bound
    assert producer.routing_key == "importer"


# ----------------------------------------------------------------- consumer


def test_consumer_without_callbacks_raises_not_implemented(conn, queue):
    consumer = Consumer(conn, [queue])
    with pytest.raises(NotImplementedError, match="callbacks"):
        consumer.receive({"a": 1}, None)


def test_consumer_without_callbacks_raises_from_drain(conn, queue, producer):
    Consumer(conn, [queue]).consume()
    producer.publish("x")
    with pytest.raises(NotImplementedError):
        conn.drain_events(timeout=WAIT)


def test_register_callback_and_order(conn, queue, producer):
    calls = []
    consumer = Consumer(conn, [queue], callbacks=[lambda b, m: calls.append(("first", b))])
    consumer.register_callback(lambda b, m: (calls.append(("second", b)), m.ack()))
    consumer.consume()
    deliver(conn, producer, "x")
    assert calls == [("first", "x"), ("second", "x")]


def test_on_message_gets_raw_message(conn, queue, producer):
    messages = []
    callback = Collector()
    Consumer(conn, [queue], callbacks=[callback], on_message=messages.append).consume()
    deliver(conn, producer, {"a": 1})
    [message] = messages
    assert message.body == b'{"a": 1}'
    assert message.payload == {"a": 1}
    assert callback.bodies == []


def test_on_message_skips_decoding(conn, queue, producer):
    messages = []
    Consumer(conn, [queue], on_message=messages.append).consume()
    producer.publish({"a": 1}, serializer="pickle")
    conn.drain_events(timeout=WAIT)  # no ContentDisallowed: nothing decoded yet
    assert messages[0].content_type == "application/x-python-serialize"


def test_with_consumer_consumes_and_cancels(conn, queue, producer):
    collector = Collector()
    with Consumer(conn, [queue], callbacks=[collector]) as consumer:
        assert consumer.consuming_from(queue)
        deliver(conn, producer, "inside")
    assert not consumer.consuming_from(queue)
    producer.publish("outside")
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)
    assert collector.bodies == ["inside"]
    assert queue(conn).get().payload == "outside"


def test_cancel_stops_deliveries(conn, queue, producer):
    collector = Collector()
    consumer = Consumer(conn, [queue], callbacks=[collector])
    consumer.consume()
    consumer.cancel()
    producer.publish("x")
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)
    consumer.consume()
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == ["x"]


def test_consuming_from_by_name_and_queue(conn, queue):
    consumer = Consumer(conn, [queue], callbacks=[Collector()])
    assert not consumer.consuming_from("video")
    consumer.consume()
    assert consumer.consuming_from("video")
    assert consumer.consuming_from(queue)
    assert not consumer.consuming_from("other")


def test_cancel_by_queue(conn, exchange):
    video, audio = Queue("video", exchange, "video"), Queue("audio", exchange, "audio")
    collector = Collector()
    consumer = Consumer(conn, [video, audio], callbacks=[collector])
    consumer.consume()
    consumer.cancel_by_queue("video")
    assert not consumer.consuming_from("video")
    assert consumer.consuming_from("audio")
    producer = Producer(conn, exchange=exchange)
    producer.publish("v", routing_key="video")
    producer.publish("a", routing_key="audio")
    conn.drain_events(timeout=WAIT)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)
    assert collector.bodies == ["a"]


def test_cancel_by_queue_object(conn, queue):
    consumer = Consumer(conn, [queue], callbacks=[Collector()])
    consumer.consume()
    consumer.cancel_by_queue(queue)
    assert not consumer.consuming_from(queue)


def test_cancel_by_queue_is_not_undone_by_consume(conn, exchange):
    consumer = Consumer(conn, [Queue("video", exchange, "video"), Queue("audio", exchange, "audio")],
                        callbacks=[Collector()])
    consumer.consume()
    consumer.cancel_by_queue("video")
    consumer.consume()
    assert not consumer.consuming_from("video")
    assert [q.name for q in consumer.queues] == ["audio"]


def test_cancel_by_unknown_queue_is_noop(conn, queue):
    consumer = Consumer(conn, [queue], callbacks=[Collector()])
    consumer.consume()
    consumer.cancel_by_queue("nope")
    assert consumer.consuming_from(queue)


def test_add_queue_then_consume(conn, exchange, queue):
    collector = Collector()
    consumer = Consumer(conn, [queue], callbacks=[collector])
    consumer.consume()
    added = consumer.add_queue(Queue("audio", exchange, "audio"))
    assert added.is_bound
    assert not consumer.consuming_from("audio")
    consumer.consume()
    assert consumer.consuming_from("audio")
    Producer(conn, exchange=exchange).publish("a", routing_key="audio")
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == ["a"]


def test_single_queue_accepted(conn, queue):
    consumer = Consumer(conn, queue, callbacks=[Collector()])
    assert [q.name for q in consumer.queues] == ["video"]


def test_consumer_binds_copies_of_queues(conn, queue):
    consumer = Consumer(conn, [queue], callbacks=[Collector()])
    assert consumer.channel is conn.default_channel
    assert consumer.queues[0].is_bound
    assert not queue.is_bound


def test_consumer_declares_queue(conn, queue):
    Consumer(conn, [queue])
    queue(conn).queue_declare(passive=True)


def test_consumer_auto_declare_false(conn, queue):
    Consumer(conn, [queue], auto_declare=False)
    with pytest.raises(NotFound):
        queue(conn).queue_declare(passive=True)


def test_consumer_with_connection_uses_default_channel(conn, queue):
    consumer = Consumer(conn, [queue])
    assert consumer.channel is conn.default_channel
    assert consumer.connection is conn


def test_producer_with_connection_uses_default_channel(conn):
    producer = Producer(conn)
    assert producer.channel is conn.default_channel
    assert producer.connection is conn


def test_producer_with_channel(conn):
    channel = conn.channel()
    producer = Producer(channel)
    assert producer.channel is channel
    assert producer.connection is conn


def test_producer_default_exchange():
    assert Producer(None).exchange.name == ""


def test_producer_declares_exchange_when_it_first_publishes(conn):
    # As kombu 5 does: auto_declare adds the exchange to the first publish's
    # declarations, so making a Producer never connects by itself.
    producer = Producer(conn, exchange=Exchange("auto-ex", "topic"))
    assert not conn.connected
    producer.publish("x", routing_key="any")
    Exchange("auto-ex", passive=True)(conn).declare()


def test_producer_on_a_channel_declares_its_exchange_at_once(conn):
    Producer(conn.channel(), exchange=Exchange("eager-ex", "topic"))
    Exchange("eager-ex", passive=True)(conn).declare()


def test_producer_does_not_bind_given_exchange(conn):
    exchange = Exchange("given")
    producer = Producer(conn, exchange=exchange)
    assert producer.channel is conn.default_channel
    assert producer.exchange.is_bound
    assert not exchange.is_bound


def test_no_ack_consumer(conn, queue, producer):
    collector = Collector(ack=False)
    Consumer(conn, [queue], callbacks=[collector], no_ack=True).consume()
    deliver(conn, producer, "x")
    conn.close()
    assert queue(conn).get() is None


def test_callback_exception_leaves_message_unacked(conn, queue, producer):
    def boom(body, message):
        raise RuntimeError("boom")

    Consumer(conn, [queue], callbacks=[boom]).consume()
    producer.publish("x")
    with pytest.raises(RuntimeError, match="boom"):
        conn.drain_events(timeout=WAIT)
    conn.close()
    message = queue(conn).get()
    assert message.payload == "x"
    assert message.redelivered


def test_consumer_purge(conn, queue, producer):
    consumer = Consumer(conn, [queue])
    producer.publish(1)
    producer.publish(2)
    assert consumer.purge() == 2


def test_consumer_recover_redelivers(conn, queue, producer):
    collector = Collector(ack=False)
    consumer = Consumer(conn, [queue], callbacks=[collector])
    consumer.consume()
    deliver(conn, producer, "x")
    consumer.recover(requeue=True)
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == ["x", "x"]
    assert collector.messages[1].redelivered


# ----------------------------------------------------------------- prefetch


@pytest.mark.parametrize("limit", [1, 2])
def test_prefetch_count_limits_unacked(conn, queue, producer, limit):
    collector = Collector(ack=False)
    Consumer(conn, [queue], callbacks=[collector], prefetch_count=limit).consume()
    for i in range(limit + 2):
        producer.publish(i)
    for _ in range(limit):
        conn.drain_events(timeout=WAIT)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)
    assert collector.bodies == list(range(limit))
    collector.messages[0].ack()
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == list(range(limit + 1))


def test_qos_after_creation(conn, queue, producer):
    collector = Collector(ack=False)
    consumer = Consumer(conn, [queue], callbacks=[collector])
    consumer.qos(prefetch_count=1)
    consumer.consume()
    producer.publish(1)
    producer.publish(2)
    conn.drain_events(timeout=WAIT)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)
    collector.messages[0].reject()
    conn.drain_events(timeout=WAIT)
    assert collector.bodies == [1, 2]


# -------------------------------------------------------- mandatory / routing


def test_mandatory_unroutable_raises_channel_error(conn):
    producer = Producer(conn)
    with pytest.raises(ChannelError, match="nowhere"):
        producer.publish({"a": 1}, routing_key="nowhere", mandatory=True)


def test_unroutable_without_mandatory_is_dropped(conn):
    Producer(conn).publish({"a": 1}, routing_key="nowhere")


def test_mandatory_unroutable_calls_on_return(conn):
    returned = []

    def on_return(exc, exchange, routing_key, message):
        returned.append((exc, exchange, routing_key, message))

    producer = Producer(conn, exchange=Exchange("ret-ex"), on_return=on_return)
    producer.publish({"a": 1}, routing_key="nowhere", mandatory=True)
    [(exc, exchange, routing_key, message)] = returned
    assert isinstance(exc, ChannelError)
    assert (exchange, routing_key) == ("ret-ex", "nowhere")
    assert message.payload == {"a": 1}


def test_on_return_removed_on_close(conn):
    returned = []
    producer = Producer(conn, on_return=lambda *args: returned.append(args))
    producer.close()
    with pytest.raises(ChannelError):
        producer.publish("x", routing_key="nowhere", mandatory=True)
    assert returned == []


def test_producer_context_manager(conn):
    with Producer(conn) as producer:
        assert isinstance(producer, Producer)


def test_publish_to_undeclared_exchange_raises_not_found(conn):
    producer = Producer(conn, exchange=Exchange("undeclared"), auto_declare=False)
    with pytest.raises(NotFound, match="undeclared"):
        producer.publish({"a": 1}, routing_key="k")


def test_publish_to_undeclared_exchange_by_name_raises_not_found(conn):
    with pytest.raises(NotFound, match="missing-ex"):
        Producer(conn).publish({"a": 1}, exchange="missing-ex", routing_key="k")


# ------------------------------------------------------------ maybe_declare


def test_maybe_declare_caches_durable_entities(conn):
    exchange = Exchange("cached", durable=True)
    assert maybe_declare(exchange, conn.default_channel) is True
    assert maybe_declare(exchange, conn.default_channel) is False
    assert maybe_declare(Exchange("cached"), conn) is False
    assert exchange in conn.declared_entities


def test_maybe_declare_caches_queues(conn, queue):
    assert maybe_declare(queue, conn) is True
    assert maybe_declare(queue, conn) is False
    queue(conn).queue_declare(passive=True)


@pytest.mark.parametrize("entity", [Exchange("ad-ex", auto_delete=True),
                                    Exchange("nd-ex", durable=False),
                                    Queue("ad-q", auto_delete=True),
                                    Queue("nd-q", durable=False)])
def test_maybe_declare_does_not_cache_transient_entities(conn, entity):
    assert maybe_declare(entity, conn) is True
    assert maybe_declare(entity, conn) is True


def test_maybe_declare_cache_is_per_connection(memory_url):
    exchange = Exchange("per-conn")
    with Connection(memory_url) as one, Connection(memory_url) as two:
        assert maybe_declare(exchange, one) is True
        assert maybe_declare(exchange, two) is True
        assert maybe_declare(exchange, one) is False


def test_maybe_declare_cache_cleared_on_close(conn):
    exchange = Exchange("reclosed")
    assert maybe_declare(exchange, conn) is True
    conn.close()
    assert maybe_declare(exchange, conn) is True


def test_maybe_declare_bound_entity_without_channel(conn):
    bound = Exchange("bound-md")(conn)
    assert maybe_declare(bound) is True
    assert not Exchange("bound-md").is_bound


def test_producer_maybe_declare(conn):
    producer = Producer(conn)
    assert producer.maybe_declare(Exchange("p-md")) is True
    assert producer.maybe_declare(Exchange("p-md")) is False
