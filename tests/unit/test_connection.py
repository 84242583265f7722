"""Connection / BrokerConnection over memory://: settings, lifecycle, sharing."""
from __future__ import annotations

import pickle
import socket
import time
import uuid

import pytest

from kombu_green import BrokerConnection, Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import NotFound
from kombu_green.transport import memory
from kombu_green.transport.memory import Transport as MemoryTransport


@pytest.fixture
def broker_names():
    """Names for extra memory brokers; all forgotten after the test."""
    made = []

    def new(vhost=None):
        name = f"test-{uuid.uuid4().hex[:12]}"
        made.append((name, vhost))
        return name

    yield new
    for name, vhost in made:
        memory.forget_broker(name, vhost)


# ------------------------------------------------------------- construction


def test_keyword_form():
    conn = Connection(hostname="localhost", userid="guest", password="secret",
                      virtual_host="/", transport="memory")
    assert conn.hostname == "localhost"
    assert conn.userid == "guest"
    assert conn.password == "secret"
    assert conn.virtual_host == "/"
    assert conn.transport_cls == "memory"
    assert conn.transport_class is MemoryTransport


def test_positional_form_like_the_seed():
    conn = BrokerConnection("localhost", "guest", "guest", "/", transport="memory")
    assert (conn.hostname, conn.userid, conn.password, conn.virtual_host) == (
        "localhost", "guest", "guest", "/")


def test_broker_connection_is_connection():
    assert BrokerConnection is Connection


def test_transport_given_as_class():
    conn = Connection(hostname="h", transport=MemoryTransport)
    assert conn.transport_class is MemoryTransport
    assert conn.as_uri().startswith("memory://")


def test_keyword_defaults():
    conn = Connection(hostname="h", transport="memory")
    assert conn.virtual_host == "/"
    assert conn.port is None
    assert conn.ssl is False
    assert conn.heartbeat == 0
    assert conn.connect_timeout == 5
    assert conn.transport_options == {}
    assert conn.alt == []


def test_keyword_port_and_options():
    conn = Connection(hostname="h", port=1234, transport="memory", heartbeat=10,
                      connect_timeout=1.5, transport_options={"x": 1})
    assert conn.port == 1234
    assert conn.heartbeat == 10
    assert conn.connect_timeout == 1.5
    assert conn.transport_options == {"x": 1}


def test_transport_options_dict_is_copied():
    options = {"x": 1}
    conn = Connection(hostname="h", transport="memory", transport_options=options)
    conn.transport_options["y"] = 2
    assert options == {"x": 1}


def test_list_of_urls_gives_alternates():
    conn = Connection(["memory://first", "memory://second"])
    assert conn.alt == ["memory://first", "memory://second"]
    assert conn.hostname == "first"


# ---------------------------------------------------------------- lifecycle


def test_connect_is_lazy(memory_url):
    conn = Connection(memory_url)
    assert conn.connected is False
    # Creating a transport object does not connect either.
    _ = conn.transport
    assert conn.connected is False


def test_connect_returns_self(conn):
    assert conn.connect() is conn
    assert conn.connected is True


def test_channel_connects(conn):
    channel = conn.channel()
    assert conn.connected
    assert channel.is_open


def test_each_channel_call_gives_new_channel(conn):
    assert conn.channel() is not conn.channel()


def test_default_channel_is_reused(conn):
    assert conn.default_channel is conn.default_channel


def test_default_channel_recreated_after_channel_close(conn):
    first = conn.default_channel
    first.close()
    second = conn.default_channel
    assert second is not first
    assert second.is_open


def test_default_channel_recreated_after_connection_close(conn):
    first = conn.default_channel
    conn.close()
    assert not first.is_open
    second = conn.default_channel
    assert second is not first and second.is_open
    assert conn.connected


def test_close_disconnects(conn):
    conn.connect()
    conn.close()
    assert conn.connected is False


def test_close_and_release_are_idempotent(conn):
    conn.channel()
    conn.close()
    conn.close()
    conn.release()
    assert conn.connected is False


def test_close_unconnected_is_fine(memory_url):
    Connection(memory_url).close()


def test_release_closes_a_connection_no_pool_lent(conn):
    conn.connect()
    conn.release()
    assert not conn.connected


def test_close_closes_channels(conn):
    channel = conn.channel()
    conn.close()
    assert not channel.is_open


def test_context_manager_releases(memory_url):
    with Connection(memory_url) as conn:
        conn.connect()
        assert conn.connected
    assert conn.connected is False


def test_context_manager_returns_connection(memory_url):
    conn = Connection(memory_url)
    with conn as entered:
        assert entered is conn


def test_reconnect_after_close(conn):
    conn.connect()
    conn.close()
    assert conn.channel().is_open
    assert conn.connected


def test_drain_events_times_out_when_idle(conn):
    conn.connect()
    start = time.monotonic()
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)
    assert time.monotonic() - start < 1


def test_drain_events_timeout_is_socket_timeout(conn):
    # socket.timeout, as in kombu (TimeoutError itself only from Python 3.10 on).
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)


def test_drain_events_times_out_with_idle_consumer(conn):
    Consumer(conn, [Queue("idle")], callbacks=[lambda body, message: None]).consume()
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.05)


def test_connection_and_channel_errors_are_exception_tuples(conn):
    for errors in (conn.connection_errors, conn.channel_errors):
        assert isinstance(errors, tuple)
        assert errors
        for error in errors:
            assert isinstance(error, type) and issubclass(error, BaseException)


def test_channel_errors_catch_not_found(conn):
    with pytest.raises(conn.channel_errors):
        Queue("missing")(conn).queue_declare(passive=True)
    assert issubclass(NotFound, conn.channel_errors)


def test_supports_heartbeats_is_bool(conn):
    assert conn.supports_heartbeats is False
    conn.heartbeat_check()


# ----------------------------------------------------- clone, pickle, info


def test_clone_has_equal_settings_and_is_unconnected():
    conn = Connection("memory://u:p%40ss@h:1234/vh?heartbeat=30&foo=1", connect_timeout=2)
    conn.connect()
    clone = conn.clone()
    assert clone is not conn
    assert clone.connected is False
    assert clone.info(include_password=True) == conn.info(include_password=True)
    assert clone.password == "p@ss"
    assert clone.transport_options == {"foo": 1}
    conn.close()
    memory.forget_broker("h", "vh")


def test_clone_with_overrides():
    conn = Connection("memory://u:pw@h/")
    clone = conn.clone(hostname="other", heartbeat=5)
    assert clone.hostname == "other"
    assert clone.heartbeat == 5
    assert clone.userid == "u" and clone.password == "pw"


def test_clone_transport_options_are_independent():
    conn = Connection(hostname="h", transport="memory", transport_options={"a": 1})
    clone = conn.clone()
    clone.transport_options["b"] = 2
    assert conn.transport_options == {"a": 1}


    conn = Connection("memory://first;memory://second")
    assert conn.clone().alt == ["memory://first", "memory://second"]


def test_pickle_round_trip(memory_url):
    conn = Connection(memory_url + "?foo=1", userid="u", password="s3cret", heartbeat=7)
    conn.connect()
    again = pickle.loads(pickle.dumps(conn))
    assert type(again) is Connection
    assert again.info(include_password=True) == conn.info(include_password=True)
    assert again.password == "s3cret"
    assert again.transport_options == {"foo": 1}
    assert again.connected is False
    conn.close()


def test_pickle_keyword_connection():
    conn = Connection(hostname="localhost", userid="guest", password="secret",
                      virtual_host="/", transport="memory", port=1234)
    again = pickle.loads(pickle.dumps(conn))
    assert again.as_uri(include_password=True) == conn.as_uri(include_password=True)
    assert again.port == 1234


def test_pickle_keeps_alternates():
    conn = Connection("memory://first;memory://second")
    assert pickle.loads(pickle.dumps(conn)).alt == ["memory://first", "memory://second"]


class MyConnection(Connection):
    """A subclass, to check pickling keeps the class."""


def test_pickle_preserves_subclass():
    again = pickle.loads(pickle.dumps(MyConnection("memory://sub")))
    assert type(again) is MyConnection


def test_info_masks_password():
    conn = Connection("memory://u:s3cret@h:1234/vh")
    info = conn.info()
    assert info["password"] == "**"
    assert "s3cret" not in repr(info)
    assert info["hostname"] == "h"
    assert info["userid"] == "u"
    assert info["port"] == 1234
    assert info["virtual_host"] == "vh"
    assert info["transport"] == "memory"


def test_info_include_password():
    assert Connection("memory://u:s3cret@h/").info(include_password=True)["password"] == "s3cret"


def test_info_without_password_is_none():
    assert Connection("memory://h/").info()["password"] is None


def test_repr(memory_url):
    conn = Connection(memory_url, userid="u", password="hunter2")
    text = repr(conn)
    assert text.startswith("<Connection: memory://u:**@")
    assert "hunter2" not in text


# ------------------------------------------------- Producer/Consumer helpers


def test_connection_producer_uses_default_channel(conn):
    producer = conn.Producer()
    assert isinstance(producer, Producer)
    assert producer.channel is conn.default_channel


def test_connection_producer_with_channel(conn):
    channel = conn.channel()
    assert conn.Producer(channel).channel is channel


def test_connection_consumer(conn):
    got = []
    consumer = conn.Consumer([Queue("helper")], callbacks=[lambda b, m: (got.append(b), m.ack())])
    assert isinstance(consumer, Consumer)
    assert consumer.channel is conn.default_channel
    consumer.consume()
    conn.Producer().publish({"x": 1}, routing_key="helper")
    conn.drain_events(timeout=0.2)
    assert got == [{"x": 1}]


# ------------------------------------------------------------ shared brokers


def test_same_memory_url_shares_queues(memory_url):
    with Connection(memory_url) as one, Connection(memory_url) as two:
        Queue("shared")(one).declare()
        Producer(one).publish({"hello": 1}, routing_key="shared")
        message = Queue("shared")(two).get()
        assert message.payload == {"hello": 1}
        message.ack()


def test_same_memory_url_shares_exchanges(memory_url):
    with Connection(memory_url) as one, Connection(memory_url) as two:
        Exchange("shared-ex", "topic")(one).declare()
        Exchange("shared-ex", passive=True)(two).declare()


def test_different_names_do_not_share(broker_names):
    name_a, name_b = broker_names(), broker_names()
    with Connection(f"memory://{name_a}") as a, Connection(f"memory://{name_b}") as b:
        Queue("q")(a).declare()
        with pytest.raises(NotFound):
            Queue("q")(b).queue_declare(passive=True)


def test_different_virtual_hosts_do_not_share(broker_names):
    name = broker_names("one")
    broker_names("two")
    with Connection(f"memory://{name}/one") as a, Connection(f"memory://{name}/two") as b:
        Queue("q")(a).declare()
        with pytest.raises(NotFound):
            Queue("q")(b).queue_declare(passive=True)


def test_forget_broker_drops_its_queues(broker_names):
    name = broker_names()
    with Connection(f"memory://{name}") as conn:
        Queue("q")(conn).declare()
    memory.forget_broker(name)
    with Connection(f"memory://{name}") as conn:
        with pytest.raises(NotFound):
            Queue("q")(conn).queue_declare(passive=True)


def test_message_crosses_connections_by_drain(memory_url):
    got = []
    with Connection(memory_url) as consumer_conn, Connection(memory_url) as producer_conn:
        consumer = Consumer(consumer_conn, [Queue("x-conn", Exchange("x-ex"), "k")],
                            callbacks=[lambda b, m: (got.append(b), m.ack())])
        consumer.consume()
        Producer(producer_conn, exchange=Exchange("x-ex"), routing_key="k").publish("hi")
        consumer_conn.drain_events(timeout=0.2)
    assert got == ["hi"]

