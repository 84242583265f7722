"""The producer pool on RabbitMQ and Redis: many greenlets, few connections,
every message once, and connections that die while idle in the pool."""
from __future__ import annotations

import urllib.parse
import uuid
from typing import Any, Iterator, List, Set

import gevent
import pytest

from kombu_green import Connection, Queue, pools
from kombu_green.messaging import maybe_declare

from ..conformance import WAIT, drain_until
from .amqp_support import AMQP_URL, require_rabbitmq
from .broker_helpers import consume, quiet
from .redis_support import redis_url
from .tcp_proxy import TcpProxy

GREENLETS = 50
EACH = 10
LIMIT = 5


def _amqp() -> str:
    require_rabbitmq()
    return AMQP_URL


@pytest.fixture(params=[pytest.param(_amqp, id="amqp", marks=pytest.mark.amqp),
                        pytest.param(redis_url, id="redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    pools.reset()
    pools.set_limit(LIMIT)
    yield request.param()
    pools.reset()
    pools.set_limit(pools.DEFAULT_LIMIT)


@pytest.fixture
def queue(url: str) -> Iterator[Queue]:
    """A durable queue of this test's own, deleted afterwards."""
    made = Queue(f"test.pools.{uuid.uuid4().hex[:10]}", durable=True, auto_delete=False)
    with Connection(url) as conn:
        made(conn.channel()).declare()
    yield made
    with Connection(url) as conn:
        made(conn.channel()).delete()


def test_fifty_greenlets_publish_through_five_connections(url: str, queue: Queue) -> None:
    used: Set[int] = set()

    def publish(g: int) -> None:
        for i in range(EACH):
            with pools.producers[url].acquire(block=True, timeout=WAIT) as producer:
                used.add(id(producer.connection))
                producer.publish({"g": g, "i": i}, routing_key=queue.name, delivery_mode=2)

    with gevent.Timeout(60):
        gevent.joinall([gevent.spawn(publish, g) for g in range(GREENLETS)], raise_error=True)
    assert 1 <= len(used) <= LIMIT
    with Connection(url) as conn:
        received = consume(conn, queue.name, queue=queue)
        drain_until(conn, lambda: len(received) >= GREENLETS * EACH, timeout=30)
        quiet(conn, 0.5)
    bodies = [(m.payload["g"], m.payload["i"]) for m in received]
    assert sorted(bodies) == [(g, i) for g in range(GREENLETS) for i in range(EACH)]


def _flush(producer: Any, queue: Queue) -> None:
    """One round trip on the producer's channel: the publish has left the proxy."""
    queue(producer.channel).queue_declare(passive=True)


def _proxied(url: str) -> TcpProxy:
    parsed = urllib.parse.urlsplit(url)
    return TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379)


def _payloads_in(url: str, queue: Queue, count: int) -> List[Any]:
    """Consume ``queue`` until ``count`` messages came and it stays quiet; their payloads, sorted."""
    with Connection(url) as conn:
        received: List[Any] = consume(conn, queue.name, queue=queue)
        drain_until(conn, lambda: len(received) >= count)
        quiet(conn, 0.3)
    return sorted(m.payload for m in received)


def test_a_connection_dropped_while_idle_is_not_lent_broken(url: str, queue: Queue) -> None:
    """On AMQP the dead connection is seen and replaced when next lent; Redis
    reconnects underneath; either way the next publish goes through."""
    proxy = _proxied(url)
    try:
        via = proxy.url(url)
        with pools.producers[via].acquire(block=True, timeout=WAIT) as producer:
            first = producer.connection
            producer.publish("before", routing_key=queue.name)
            _flush(producer, queue)
        assert first.connected
        proxy.drop()
        with gevent.Timeout(WAIT):
            while url.startswith("amqp") and first.connected:
                gevent.sleep(0.01)  # the reader greenlet sees the socket close
        with pools.producers[via].acquire(block=True, timeout=WAIT) as producer:
            if not first.connected:
                assert producer.connection is not first
            producer.publish("after", routing_key=queue.name)
            _flush(producer, queue)
    finally:
        proxy.close()
    assert _payloads_in(url, queue, 2) == ["after", "before"]


def test_a_connection_that_failed_a_publish_is_replaced(url: str, queue: Queue) -> None:
    """An error leaves the with-block mid-use (a request that failed half-way):
    the connection's state is unknown, so it is dropped and the next
    producer gets a fresh one."""
    proxy = _proxied(url)
    try:
        via = proxy.url(url)
        with pools.producers[via].acquire(block=True, timeout=WAIT) as producer:
            first = producer.connection
            producer.publish("warm", routing_key=queue.name)
            _flush(producer, queue)
        with pytest.raises(ConnectionResetError):
            with pools.producers[via].acquire(block=True, timeout=WAIT) as producer:
                assert producer.connection is first
                raise ConnectionResetError("the request failed half-way")
        assert not first.connected
        with pools.producers[via].acquire(block=True, timeout=WAIT) as producer:
            assert producer.connection is not first
            producer.publish("fresh", routing_key=queue.name)
            _flush(producer, queue)
    finally:
        proxy.close()
    assert _payloads_in(url, queue, 2) == ["fresh", "warm"]


@pytest.mark.amqp
def test_maybe_declare_caches_the_declaration_on_amqp() -> None:
    queue = Queue(f"test.pools.{uuid.uuid4().hex[:10]}", durable=True, auto_delete=False)
    with Connection(_amqp()) as conn:
        channel = conn.default_channel
        try:
            assert maybe_declare(queue, channel) is True
            assert maybe_declare(queue, channel) is False  # cached: no second round trip
        finally:
            queue(channel).delete()
