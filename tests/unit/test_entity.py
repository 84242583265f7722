"""Exchange, Queue and binding: declarations, binding, pickling, operations."""
from __future__ import annotations

import pickle

import pytest

from kombu_green import Exchange, Message, Producer, Queue, binding
from kombu_green.exceptions import NotBoundError, NotFound, PreconditionFailed


@pytest.fixture
def channel(conn):
    return conn.channel()


def publish(channel, body, exchange="", routing_key=""):
    Producer(channel, auto_declare=False).publish(body, exchange=exchange, routing_key=routing_key)


def drain_bodies(queue):
    """Every ready message of a bound queue, acked, as decoded bodies."""
    bodies = []
    while True:
        message = queue.get()
        if message is None:
            return bodies
        bodies.append(message.payload)
        message.ack()


# ------------------------------------------------------------------ Exchange


def test_exchange_defaults():
    exchange = Exchange("ex")
    assert exchange.name == "ex"
    assert exchange.type == "direct"
    assert exchange.durable is True
    assert exchange.auto_delete is False
    assert exchange.arguments is None
    assert exchange.delivery_mode is None
    assert not exchange.is_bound


def test_exchange_keywords():
    exchange = Exchange("ex", type="topic", durable=False, auto_delete=True,
                        arguments={"alternate-exchange": "ae"})
    assert (exchange.type, exchange.durable, exchange.auto_delete) == ("topic", False, True)
    assert exchange.arguments == {"alternate-exchange": "ae"}


@pytest.mark.parametrize("mode, expected", [("transient", 1), ("persistent", 2), (1, 1), (2, 2)])
def test_exchange_delivery_mode_names(mode, expected):
    assert Exchange("ex", delivery_mode=mode).delivery_mode == expected


def test_exchange_unknown_keyword_is_type_error():
    with pytest.raises(TypeError, match="bogus"):
        Exchange("ex", bogus=1)


def test_unbound_exchange_delete_raises_not_bound():
    with pytest.raises(NotBoundError, match="Can't call delete on Exchange not bound to a channel"):
        Exchange("ex").delete()


def test_unbound_exchange_declare_raises_not_bound():
    with pytest.raises(NotBoundError, match="declare"):
        Exchange("ex").declare()


def test_calling_exchange_returns_bound_copy(channel):
    exchange = Exchange("ex")
    bound = exchange(channel)
    assert bound is not exchange
    assert bound.is_bound
    assert bound.channel is channel
    assert not exchange.is_bound
    assert bound == exchange


def test_exchange_bind_accepts_connection(conn):
    bound = Exchange("ex").bind(conn)
    assert bound.channel is conn.default_channel


def test_exchange_positional_channel_binds(channel):
    assert Exchange("ex", "topic", channel).is_bound


def test_maybe_bind_binds_in_place_once(channel, conn):
    exchange = Exchange("ex")
    assert exchange.maybe_bind(channel) is exchange
    assert exchange.channel is channel
    exchange.maybe_bind(conn.channel())
    assert exchange.channel is channel


def test_exchange_pickle_round_trip_unbound(channel):
    exchange = Exchange("ex", "topic", durable=False, auto_delete=True,
                        arguments={"a": 1}, delivery_mode="transient")
    for original in (exchange, exchange(channel)):
        copy = pickle.loads(pickle.dumps(original))
        assert copy == exchange
        assert copy.type == "topic"
        assert copy.delivery_mode == 1
        assert not copy.is_bound


def test_exchange_equality_and_hash():
    assert Exchange("ex") == Exchange("ex")
    assert hash(Exchange("ex")) == hash(Exchange("ex"))
    assert Exchange("ex") != Exchange("ex", "topic")
    assert Exchange("ex") != Exchange("other")
    assert Exchange("ex") != Exchange("ex", durable=False)
    assert len({Exchange("ex"), Exchange("ex"), Exchange("other")}) == 2


def test_exchange_repr_contains_name(channel):
    assert "fancy-ex" in repr(Exchange("fancy-ex"))
    assert "unbound" in repr(Exchange("fancy-ex"))
    assert "fancy-ex" in repr(Exchange("fancy-ex")(channel))
    assert "unbound" not in repr(Exchange("fancy-ex")(channel))


def test_exchange_redeclare_with_other_type_fails(channel):
    Exchange("ex", "direct")(channel).declare()
    with pytest.raises(PreconditionFailed, match="'ex'"):
        Exchange("ex", "topic")(channel).declare()


def test_exchange_redeclare_same_type_is_fine(channel):
    Exchange("ex", "fanout")(channel).declare()
    Exchange("ex", "fanout")(channel).declare()


def test_passive_declare_of_missing_exchange_is_not_found(channel):
    with pytest.raises(NotFound):
        Exchange("missing", passive=True)(channel).declare()


def test_default_exchange_declare_and_name():
    assert Exchange("").name == ""
    assert Queue("q").exchange.name == ""


def test_exchange_delete_removes_it(channel):
    exchange = Exchange("gone")(channel)
    exchange.declare()
    exchange.delete()
    with pytest.raises(NotFound):
        Exchange("gone", passive=True)(channel).declare()


def test_exchange_message_and_publish(channel):
    exchange = Exchange("old-api")(channel)
    exchange.declare()
    queue = Queue("old-q", exchange, "k")(channel)
    queue.declare()
    exchange.publish(exchange.Message(b"hi", content_type="text/plain",
                                      content_encoding="utf-8"), routing_key="k")
    message = queue.get()
    assert message.payload == "hi"
    assert message.properties["delivery_mode"] == 2


def test_exchange_to_exchange_binding(channel):
    source = Exchange("src", "fanout")(channel)
    dest = Exchange("dst", "direct")(channel)
    source.declare()
    dest.declare()
    dest.bind_to(source, routing_key="")
    queue = Queue("e2e-q", dest, "k")(channel)
    queue.declare()
    publish(channel, "via source", exchange="src", routing_key="k")
    assert drain_bodies(queue) == ["via source"]
    dest.unbind_from(source, routing_key="")
    publish(channel, "not any more", exchange="src", routing_key="k")
    assert drain_bodies(queue) == []


# --------------------------------------------------------------------- Queue


def test_queue_defaults():
    queue = Queue("q")
    assert queue.name == "q"
    assert queue.routing_key == ""
    assert queue.durable is True
    assert queue.exclusive is False
    assert queue.auto_delete is False
    assert queue.no_ack is False
    assert queue.bindings == set()
    assert not queue.is_bound


def test_queue_positional_arguments():
    exchange = Exchange("media")
    queue = Queue("video", exchange, "video.key")
    assert queue.exchange is exchange
    assert queue.routing_key == "video.key"


def test_queue_key_alias_sets_routing_key():
    assert Queue("video", Exchange("media"), key="video").routing_key == "video"


def test_queue_exchange_given_by_name():
    queue = Queue("q", "named-ex", "k")
    assert isinstance(queue.exchange, Exchange)
    assert queue.exchange.name == "named-ex"


def test_exclusive_implies_auto_delete():
    queue = Queue("q", exclusive=True)
    assert queue.exclusive is True
    assert queue.auto_delete is True


def test_queue_unknown_keyword_is_type_error():
    with pytest.raises(TypeError, match="not_an_option"):
        Queue("q", not_an_option=True)


def test_queue_argument_shortcuts():
    queue = Queue("q", message_ttl=1.5, expires=10, max_length=100,
                  max_length_bytes=4096, max_priority=9)
    assert queue.queue_arguments_for_broker() == {
        "x-message-ttl": 1500,
        "x-expires": 10000,
        "x-max-length": 100,
        "x-max-length-bytes": 4096,
        "x-max-priority": 9,
    }


def test_queue_argument_shortcuts_merge_with_queue_arguments():
    queue = Queue("q", queue_arguments={"x-dead-letter-exchange": "dlx"}, max_length=5)
    assert queue.queue_arguments_for_broker() == {
        "x-dead-letter-exchange": "dlx", "x-max-length": 5}
    assert queue.queue_arguments == {"x-dead-letter-exchange": "dlx"}


def test_queue_without_arguments_sends_none():
    assert Queue("q").queue_arguments_for_broker() is None


def test_calling_queue_returns_bound_copy(channel):
    exchange = Exchange("ex")
    queue = Queue("q", exchange, "k")
    bound = queue(channel)
    assert bound is not queue
    assert bound.is_bound and bound.exchange.is_bound
    assert bound.exchange.channel is channel
    assert not queue.is_bound
    assert not queue.exchange.is_bound
    assert not exchange.is_bound


def test_queue_positional_channel_binds(channel):
    assert Queue("q", Exchange("ex"), "k", channel).is_bound


def test_unbound_queue_operations_raise_not_bound():
    queue = Queue("q")
    for call in (queue.declare, queue.get, queue.purge, queue.delete):
        with pytest.raises(NotBoundError, match="Queue not bound"):
            call()


def test_queue_pickle_round_trip_unbound(channel):
    extra = Exchange("extra", "topic")
    queue = Queue("q", Exchange("ex", "direct"), "k",
                  bindings=[binding(extra, routing_key="a.#")],
                  queue_arguments={"x-foo": "bar"}, max_priority=5, durable=False)
    for original in (queue, queue(channel)):
        copy = pickle.loads(pickle.dumps(original))
        assert copy == queue
        assert copy.exchange == queue.exchange
        assert copy.bindings == queue.bindings
        assert copy.queue_arguments == {"x-foo": "bar"}
        assert copy.max_priority == 5
        assert not copy.is_bound
        assert not copy.exchange.is_bound


def test_queue_declare_creates_exchange_queue_and_binding(channel):
    queue = Queue("video", Exchange("media", "direct"), "video")(channel)
    assert queue.declare() == "video"
    publish(channel, {"n": 1}, exchange="media", routing_key="video")
    publish(channel, {"n": 2}, exchange="media", routing_key="audio")
    assert drain_bodies(queue) == [{"n": 1}]


def test_queue_declare_with_connection(conn):
    queue = Queue("q", Exchange("ex"), "k")(conn)
    queue.declare()
    publish(conn.default_channel, "x", exchange="ex", routing_key="k")
    assert drain_bodies(queue) == ["x"]


def test_queue_declare_generates_name(channel):
    queue = Queue("", exclusive=True)(channel)
    name = queue.declare()
    assert name and name.startswith("amq.gen-")
    assert queue.name == name


def test_queue_declare_on_declared_callback(channel):
    seen = []
    Queue("q", on_declared=lambda *ok: seen.append(ok))(channel).declare()
    assert seen == [("q", 0, 0)]


def test_queue_with_extra_bindings_routes_both_keys(channel):
    news = Exchange("news", "topic")
    queue = Queue("feed", Exchange("main", "direct"), "main-key",
                  bindings=[binding(news, routing_key="sport.#")])(channel)
    queue.declare()
    publish(channel, "from main", exchange="main", routing_key="main-key")
    publish(channel, "from news", exchange="news", routing_key="sport.football")
    publish(channel, "unrouted", exchange="news", routing_key="weather")
    assert drain_bodies(queue) == ["from main", "from news"]


def test_queue_with_only_bindings(channel):
    ex = Exchange("multi", "direct")
    queue = Queue("multi-q", bindings=[binding(ex, routing_key="a"), ex.binding("b")])(channel)
    queue.declare()
    for key in ("a", "b", "c"):
        publish(channel, key, exchange="multi", routing_key=key)
    assert drain_bodies(queue) == ["a", "b"]


def test_queue_unbind(channel):
    queue = Queue("q", Exchange("ex"), "k")(channel)
    queue.declare()
    queue.queue_unbind()
    publish(channel, "lost", exchange="ex", routing_key="k")
    assert queue.get() is None


def test_queue_get_empty_returns_none(channel):
    queue = Queue("empty")(channel)
    queue.declare()
    assert queue.get() is None


def test_queue_get_returns_message(channel):
    queue = Queue("q")(channel)
    queue.declare()
    publish(channel, {"hello": "world"}, routing_key="q")
    message = queue.get()
    assert isinstance(message, Message)
    assert message.payload == {"hello": "world"}
    assert message.delivery_info["routing_key"] == "q"
    message.ack()
    assert queue.get() is None


def test_queue_get_no_ack_removes_message(channel, conn):
    queue = Queue("q")(channel)
    queue.declare()
    publish(channel, 1, routing_key="q")
    assert queue.get(no_ack=True).payload == 1
    channel.close()
    assert Queue("q")(conn.channel()).get() is None


def test_queue_get_accept_allows_other_serializers(channel):
    queue = Queue("q")(channel)
    queue.declare()
    Producer(channel).publish({"a": 1}, routing_key="q", serializer="pickle")
    assert queue.get(accept=["pickle"]).payload == {"a": 1}


def test_queue_purge_returns_count(channel):
    queue = Queue("q")(channel)
    queue.declare()
    for i in range(3):
        publish(channel, i, routing_key="q")
    assert queue.purge() == 3
    assert queue.purge() == 0
    assert queue.get() is None


def test_queue_delete(channel):
    queue = Queue("doomed")(channel)
    queue.declare()
    publish(channel, 1, routing_key="doomed")
    publish(channel, 2, routing_key="doomed")
    assert queue.delete() == 2
    with pytest.raises(NotFound, match="doomed"):
        queue.queue_declare(passive=True)


def test_queue_delete_if_empty_refuses_full_queue(channel):
    queue = Queue("full")(channel)
    queue.declare()
    publish(channel, 1, routing_key="full")
    with pytest.raises(PreconditionFailed):
        queue.delete(if_empty=True)


def test_passive_declare_of_missing_queue_raises_not_found(channel):
    with pytest.raises(NotFound, match="missing"):
        Queue("missing")(channel).queue_declare(passive=True)


def test_passive_declare_of_existing_queue_reports_count(channel):
    Queue("q")(channel).declare()
    publish(channel, 1, routing_key="q")
    ok = Queue("q")(channel).queue_declare(passive=True)
    assert ok.queue == "q"
    assert ok.message_count == 1


def test_queue_equality_and_hash():
    ex = Exchange("ex")
    assert Queue("q", ex, "k") == Queue("q", Exchange("ex"), "k")
    assert hash(Queue("q", ex, "k")) == hash(Queue("q", ex, "k"))
    assert Queue("q", ex, "k") != Queue("q", ex, "other")
    assert Queue("q", ex, "k") != Queue("r", ex, "k")
    assert Queue("q", ex, "k") != Queue("q", Exchange("ex", "topic"), "k")
    assert Queue("q") != Queue("q", durable=False)
    assert Queue("q") != Queue("q", queue_arguments={"x": 1})
    assert len({Queue("q", ex, "k"), Queue("q", ex, "k")}) == 1


@pytest.mark.parametrize("attr", ["binding_arguments", "consumer_arguments"])
def test_queue_equality_considers_binding_and_consumer_arguments(attr):
    ex = Exchange("ex", "headers")
    assert Queue("q", ex, **{attr: {"x-match": "all"}}) != Queue("q", ex, **{attr: {"x-match": "any"}})


def test_queue_repr_contains_name(channel):
    assert "special-queue" in repr(Queue("special-queue"))
    assert "special-queue" in repr(Queue("special-queue")(channel))


def test_binding_equality_and_repr():
    ex = Exchange("ex")
    assert binding(ex, "k") == binding(Exchange("ex"), "k")
    assert binding(ex, "k") != binding(ex, "other")
    assert hash(binding(ex, "k")) == hash(binding(ex, "k"))
    assert "'k'" in repr(binding(ex, "k"))


# --------------------------------------------------------- as_dict/from_dict


def test_queue_as_dict():
    data = Queue("q", Exchange("ex"), "k", max_length=3).as_dict()
    assert data["name"] == "q"
    assert data["exchange"] == Exchange("ex")
    assert data["routing_key"] == "k"
    assert data["max_length"] == 3
    assert data["bindings"] == []


def test_queue_as_dict_recurse_gives_exchange_dict():
    data = Queue("q", Exchange("ex", "topic"), "k").as_dict(recurse=True)
    assert data["exchange"]["name"] == "ex"
    assert data["exchange"]["type"] == "topic"


def test_queue_as_dict_from_dict_round_trip():
    queue = Queue("q", Exchange("ex", "topic"), "a.#",
                  bindings=[binding(Exchange("other"), "x")],
                  queue_arguments={"x-foo": 1}, durable=False)
    data = queue.as_dict(recurse=True)
    name = data.pop("name")
    again = Queue.from_dict(name, **data)
    assert again == queue
    assert again.exchange.type == "topic"
    assert again.bindings == queue.bindings


def test_from_dict_exchange_name():
    queue = Queue.from_dict("q", exchange="ex", routing_key="k")
    assert queue.exchange == Exchange("ex")
    assert queue.routing_key == "k"


def test_from_dict_exchange_type_without_exchange_uses_queue_name():
    queue = Queue.from_dict("q", exchange_type="fanout")
    assert queue.exchange.name == "q"
    assert queue.exchange.type == "fanout"


def test_from_dict_exchange_name_and_type():
    queue = Queue.from_dict("feed", exchange="feeds", exchange_type="topic", routing_key="feed.#")
    assert queue.exchange.name == "feeds"
    assert queue.exchange.type == "topic"


def test_from_dict_binding_key():
    queue = Queue.from_dict("q", exchange="ex", binding_key="bk")
    assert queue.routing_key == "bk"


def test_from_dict_separate_exchange_and_queue_durability():
    queue = Queue.from_dict("q", exchange="ex", routing_key="k",
                            exchange_durable=False, queue_durable=True)
    assert queue.exchange.durable is False
    assert queue.durable is True
