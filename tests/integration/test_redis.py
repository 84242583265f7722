"""What only the Redis transport does with messages: where it keeps them,
priority steps, fanout through PUB/SUB, the global key prefix and expiry.

The conformance suite proves the contract every transport shares; these
tests look inside Redis with a plain client to check where the transport
keeps things, and cover what Redis does its own way. The rest of the Redis
tests: test_redis_delivery.py (at-least-once delivery), test_redis_gevent.py
(greenlets and waiting), test_redis_connecting.py (errors, TLS, examples).
Every test works under a key prefix of its own (see :mod:`.redis_keyspace`),
deleted afterwards.
"""
from __future__ import annotations

import base64
import json
import socket
import uuid
from typing import Any, List

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import NotFound

from ..conformance import WAIT, drain_until
from .broker_helpers import consume, declare, publish
from .redis_keyspace import Keyspace

pytestmark = pytest.mark.redis


def _collector(received: List[Any], ack: bool = True) -> Any:
    def on_message(body: Any, message: Any) -> None:
        received.append(message)
        if ack:
            message.ack()
    return on_message


def _declared(conn: Connection, queue: Queue) -> Queue:
    bound = queue(conn.channel())
    bound.declare()
    return bound


# -- where messages are -------------------------------------------------------------------


def test_ack_removes_the_unacked_record(space: Keyspace) -> None:
    """A taken message is recorded in the unacked hash (and its index) until acked."""
    with space.connect() as conn:
        queue = _declared(conn, Queue("q"))
        producer = Producer(conn.channel())
        producer.publish("by get", routing_key="q")
        message = queue.get()
        assert message is not None and message.payload == "by get"
        assert space.unacked() == 1 and not space.ready("q")
        message.ack()
        space.wait_for(lambda: space.unacked() == 0, "the ack reached Redis")

        received: List[Any] = []
        Consumer(conn.channel(), [Queue("q")], callbacks=[_collector(received, ack=False)]).consume()
        producer.publish("by consumer", routing_key="q")
        drain_until(conn, lambda: received)
        assert space.unacked() == 1
        received[0].ack()
        space.wait_for(lambda: space.unacked() == 0, "the consumer's ack reached Redis")


def test_acks_are_written_before_close_returns(space: Keyspace) -> None:
    """Acks are batched, but a connection closed right after acking leaves no record
    behind (nothing would be redelivered after the visibility timeout)."""
    conn = space.connect()
    try:
        declare(conn, "q")
        received = consume(conn, "q")
        publish(conn, "q", range(20))
        drain_until(conn, lambda: len(received) == 20)
    finally:
        conn.close()
    assert space.unacked() == 0 and space.raw.llen(space.list_key("q")) == 0


def test_reject_with_requeue_puts_the_message_back_at_the_head(space: Keyspace) -> None:
    """reject(requeue=True) drops the record and puts the message first in line, marked redelivered."""
    with space.connect() as conn:
        queue = _declared(conn, Queue("q"))
        producer = Producer(conn.channel())
        for n in range(3):
            producer.publish(n, routing_key="q")
        message = queue.get()
        assert message.payload == 0 and not message.redelivered
        message.reject(requeue=True)
        assert space.unacked() == 0
        head = space.ready("q")[0]
        assert head["redelivered"] is True and json.loads(base64.b64decode(head["body"])) == 0
        again = queue.get()
        assert again.payload == 0 and again.redelivered
        again.ack()
        assert [m.payload for m in (queue.get(no_ack=True), queue.get(no_ack=True))] == [1, 2]


# -- priorities ---------------------------------------------------------------------------


def _consume_in_order(conn: Connection, name: str, total: int) -> List[Any]:
    received: List[Any] = []
    Consumer(conn.channel(), [Queue(name)], prefetch_count=1, callbacks=[
        lambda body, message: (received.append(body), message.ack())]).consume()
    drain_until(conn, lambda: len(received) == total)
    return received


def test_default_priority_steps_deliver_high_steps_first(space: Keyspace) -> None:
    """Steps 0, 3, 6, 9: a message goes to the highest step at or below its priority;
    step 9 is served first, then 6, 3, 0, each in publish order."""
    published = [(n, priority) for n, priority in enumerate(list(range(10)) * 2)]  # 0..9, 0..9
    with space.connect() as conn:
        _declared(conn, Queue("q"))
        producer = Producer(conn.channel())
        for n, priority in published:
            producer.publish([n, priority], routing_key="q", priority=priority)
        lengths = {step: space.raw.llen(space.list_key("q", step)) for step in (0, 3, 6, 9)}
        assert lengths == {0: 6, 3: 6, 6: 6, 9: 2}

        def step(priority: int) -> int:
            return max(s for s in (0, 3, 6, 9) if s <= priority)

        expected = sorted(published, key=lambda item: (-step(item[1]), item[0]))
        assert [tuple(body) for body in _consume_in_order(conn, "q", len(published))] == expected


def test_custom_priority_steps(space: Keyspace) -> None:
    """transport_options priority_steps=[0, 5]: priorities 5-9 first, then 0-4, each in publish order."""
    published = [(n, priority) for n, priority in enumerate([0, 9, 4, 5, 1, 7, 3, 6, 2, 8])]
    with space.connect(priority_steps=[0, 5]) as conn:
        _declared(conn, Queue("q"))
        producer = Producer(conn.channel())
        for n, priority in published:
            producer.publish([n, priority], routing_key="q", priority=priority)
        assert space.raw.llen(space.list_key("q", 5)) == 5 and space.raw.llen(space.list_key("q")) == 5
        expected = [item for item in published if item[1] >= 5] + [item for item in published if item[1] < 5]
        assert [tuple(body) for body in _consume_in_order(conn, "q", len(published))] == expected


# -- fanout -------------------------------------------------------------------------------


def test_fanout_reaches_the_queues_consumed_at_publish_time_only(space: Keyspace) -> None:
    """Fanout goes through PUB/SUB: two consuming connections each get the message;
    a queue that is bound but not consumed when it is published never gets it."""
    exchange = Exchange("fan", "fanout")
    queues = {key: Queue(key, exchange=exchange) for key in ("a", "b", "idle")}
    with space.connect() as a, space.connect() as b, space.connect() as publisher:
        idle = _declared(publisher, queues["idle"])
        got_a: List[Any] = []
        got_b: List[Any] = []
        Consumer(a.channel(), [queues["a"]], callbacks=[_collector(got_a)]).consume()
        Consumer(b.channel(), [queues["b"]], callbacks=[_collector(got_b)]).consume()
        channel = space.internal(f"fanout.0.{exchange.name}")
        assert space.raw.pubsub_numsub(channel) == [(channel.encode(), 2)]

        Producer(publisher.channel(), exchange).publish("to all", routing_key="ignored")
        drain_until(a, lambda: got_a)
        drain_until(b, lambda: got_b)
        assert [m.payload for m in got_a] == [m.payload for m in got_b] == ["to all"]
        assert idle.get() is None and space.raw.llen(space.list_key("idle")) == 0

        late: List[Any] = []  # consuming it now does not bring the message back
        Consumer(a.channel(), [queues["idle"]], callbacks=[_collector(late)]).consume()
        with pytest.raises(socket.timeout):
            a.drain_events(timeout=0.3)
        assert late == [] and len(got_a) == 1


# -- key prefix ---------------------------------------------------------------------------


def test_global_keyprefix_prefixes_every_key(space: Keyspace) -> None:
    """The queue's list is ``<prefix><queue>``; every internal key starts with the prefix."""
    name = f"kgt-plain-{uuid.uuid4().hex[:10]}"  # the unprefixed names must stay unused
    with space.connect() as conn:
        exchange = Exchange("x", "direct")
        queue = _declared(conn, Queue(name, exchange=exchange, routing_key="k"))
        Producer(conn.channel(), exchange).publish("hello", routing_key="k")
        assert space.raw.llen(f"{space.prefix}{name}") == 1
        assert space.raw.exists(name, f"_kombu_green.queue.{name}") == 0
        taken = queue.get()  # leaves an unacked record
        keys = space.keys()
        for internal in (f"queue.{name}", "exchanges", "bindings", "version", "unacked", "unacked_index"):
            assert space.internal(internal) in keys
        assert all(key.startswith(space.prefix) for key in keys)
        taken.ack()


def test_two_prefixes_do_not_see_each_other(space: Keyspace) -> None:
    """Same queue and exchange names under two prefixes are two separate worlds."""
    other = space.other_prefix()
    second = Connection(space.url, transport_options={"global_keyprefix": other})
    with space.connect() as first, second:
        exchange = Exchange("x", "direct")
        _declared(first, Queue("q", exchange=exchange, routing_key="k"))
        Producer(first.channel(), exchange).publish("first's", routing_key="k")

        with pytest.raises(NotFound):
            Queue("q")(second.channel()).queue_declare(passive=True)
        with pytest.raises(NotFound):
            exchange(second.channel()).declare(passive=True)
        mine = _declared(second, Queue("q"))
        Producer(second.channel()).publish("second's", routing_key="q")
        assert mine.get(no_ack=True).payload == "second's"
        assert mine.get() is None
        assert Queue("q")(first.channel()).get(no_ack=True).payload == "first's"
        assert space.keys(other) and not (space.keys(other) & space.keys())


# -- expiry -------------------------------------------------------------------------------


def test_expired_messages_are_never_delivered(space: Keyspace) -> None:
    """publish(expiration=0.2): dropped by basic_get and by a consumer once expired,
    and no unacked record is left behind for them."""
    with space.connect() as conn:
        queue = _declared(conn, Queue("q"))
        producer = Producer(conn.channel())
        producer.publish("short-lived", routing_key="q", expiration=0.2)
        producer.publish("kept", routing_key="q")
        gevent.sleep(0.4)
        assert queue.get(no_ack=True).payload == "kept"
        assert queue.get() is None

        producer.publish("short-lived", routing_key="q", expiration=0.2)
        producer.publish("kept too", routing_key="q")
        gevent.sleep(0.4)
        received: List[Any] = []
        Consumer(conn.channel(), [Queue("q")], callbacks=[_collector(received)]).consume()
        drain_until(conn, lambda: received)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.3)
        assert [m.payload for m in received] == ["kept too"]
        space.wait_for(lambda: space.unacked() == 0, "no record left for the expired messages")


def _exists(conn: Connection, queue: Queue) -> bool:
    try:
        queue(conn.channel()).queue_declare(passive=True)
    except NotFound:
        return False
    return True


def test_an_unused_queue_with_x_expires_disappears(space: Keyspace) -> None:
    """Queue(expires=1): one second unused, the queue and its messages are gone."""
    queue = Queue("q", expires=1)
    with space.connect() as conn:
        _declared(conn, queue)
        Producer(conn.channel()).publish("with the queue", routing_key="q")
        assert space.raw.pttl(space.internal("queue.q")) > 0
        space.wait_for(lambda: not _exists(conn, queue), "the unused queue expired")
        assert space.raw.exists(space.internal("queue.q"), space.list_key("q")) == 0


def test_a_consumed_queue_with_x_expires_stays(space: Keyspace) -> None:
    """While drain_events waits on it, an x-expires queue is kept alive (2.5 s > 1 s);
    once nobody consumes it, it expires."""
    queue = Queue("q", queue_arguments={"x-expires": 1000})
    with space.connect() as conn, space.connect() as observer:
        received: List[Any] = []
        consumer = Consumer(conn.channel(), [queue], callbacks=[_collector(received)])
        consumer.consume()
        seen: List[bool] = []

        def watch() -> None:
            while True:
                seen.append(_exists(observer, queue))
                gevent.sleep(0.1)

        watcher = gevent.spawn(watch)
        try:
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=2.5)
        finally:
            watcher.kill()
        assert len(seen) > 10 and all(seen)
        Producer(observer.channel()).publish("still there", routing_key="q")
        drain_until(conn, lambda: received)
        consumer.cancel()
        space.wait_for(lambda: not _exists(observer, queue), "the queue expired once unused")


def test_a_queue_whose_consumer_is_busy_does_not_expire(space: Keyspace) -> None:
    """AMQP: a queue with a consumer is in use and never expires, even while the
    consumer's callback runs for longer than x-expires."""
    queue = Queue("q", expires=1)
    with space.connect() as conn, space.connect() as observer:
        started = gevent.event.Event()
        received: List[Any] = []

        def slow(body: Any, message: Any) -> None:
            received.append(body)
            if body == "slow":
                started.set()
                gevent.sleep(2)
            message.ack()

        Consumer(conn.channel(), [queue], callbacks=[slow]).consume()
        producer = Producer(observer.channel())
        producer.publish("slow", routing_key="q")
        worker = gevent.spawn(drain_until, conn, lambda: len(received) == 2, WAIT + 2)
        try:
            assert started.wait(WAIT)
            gevent.sleep(1.5)  # the callback is still running
            assert _exists(observer, queue), "the queue expired under its busy consumer"
            producer.publish("published meanwhile", routing_key="q")
            worker.get()
        finally:
            worker.kill()
        assert received == ["slow", "published meanwhile"]
