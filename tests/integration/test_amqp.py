"""What only a real AMQP broker does, and what the AMQP transport promises gevent.

The conformance suite proves the contract every transport shares. These
tests cover the rest: publisher confirms, headers routing, dead-lettering,
priorities, exchange-to-exchange bindings, heartbeats, TLS and the
broker's errors; and the transport's cooperative promises: one connection,
channel or producer may be shared by many greenlets at once, and waiting
never blocks the hub nor burns CPU.

Every name is unique per test and every queue and exchange is deleted
afterwards, so runs against a shared broker never collide. Every wait is
bounded; no test asserts how fast anything is, only that the hub never
stalls and that idle waiting costs no CPU.
"""
from __future__ import annotations

import collections
import random
import socket
import time
import urllib.parse
import uuid
from typing import Any, Dict, Iterator, List, Optional

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import (
    AccessRefused,
    ChannelError,
    ConnectionClosed,
    ConsumerCancelled,
    KombuError,
    MessageNacked,
    NotFound,
    OperationalError,
    PublishTimeout,
)

from ..conformance import WAIT, drain_until, get_soon
from ..conftest import error_chain
from .amqp_support import AMQP_URL, AMQPS_URL, amqps_url, require_rabbitmq

pytestmark = pytest.mark.amqp

#: Publisher confirms on: ``publish`` returns once the broker stored the message.
CONFIRMS = {"confirm_publish": True}
#: A password that must never show up in an error message.
SECRET = "wrong-secret-123"


def _where(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.hostname}:{parsed.port}"


def _with(url: str, password: Optional[str] = None, port: Optional[int] = None) -> str:
    """``url`` with another password and/or port."""
    parsed = urllib.parse.urlsplit(url)
    netloc = f"{parsed.username}:{password or parsed.password}@{parsed.hostname}:{port or parsed.port}"
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


WHERE = _where(AMQP_URL)


class Names:
    """Unique queue and exchange names for one test; all deleted afterwards."""

    def __init__(self) -> None:
        self.prefix = f"kgt-amqp-{uuid.uuid4().hex[:10]}"
        self.queues: List[str] = []
        self.exchanges: List[str] = []

    def queue(self, suffix: str = "q", **kwargs: Any) -> Queue:
        name = f"{self.prefix}-{suffix}"
        self.queues.append(name)
        return Queue(name, **kwargs)

    def exchange(self, suffix: str = "x", type: str = "direct", **kwargs: Any) -> Exchange:
        name = f"{self.prefix}-{suffix}"
        self.exchanges.append(name)
        return Exchange(name, type, **kwargs)

    def delete_all(self) -> None:
        with Connection(AMQP_URL) as conn:
            channel = conn.channel()
            for name in self.queues:
                try:
                    channel.queue_delete(name)
                except KombuError:  # best effort: the channel reopens by itself
                    pass
            for name in self.exchanges:
                try:
                    channel.exchange_delete(name)
                except KombuError:
                    pass


@pytest.fixture(autouse=True)
def _rabbitmq() -> None:
    """Skip locally, fail under CI=true, when RabbitMQ is not running."""
    require_rabbitmq()


@pytest.fixture
def names() -> Iterator[Names]:
    made = Names()
    yield made
    made.delete_all()


def _count(queue: Queue, conn: Connection) -> int:
    """Ready messages in ``queue``, as the broker reports them right now."""
    return queue(conn.channel()).queue_declare(passive=True).message_count


def _drain_bodies(queue: Queue) -> List[Any]:
    """Take every ready message off a bound ``queue``; return the bodies in order."""
    bodies: List[Any] = []
    while True:
        message = queue.get(no_ack=True)
        if message is None:
            return bodies
        bodies.append(message.payload)


def _collector(received: List[Any]) -> Any:
    """A consumer callback that keeps each body and acks."""
    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()
    return on_message


# -- publisher confirms -------------------------------------------------------------


def test_confirmed_publish_returns_only_once_the_broker_stored_the_message(names: Names) -> None:
    """Each confirmed publish is visible to another connection the moment it returns."""
    queue = names.queue()
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn, Connection(AMQP_URL) as observer:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel)
        watch = queue(observer.channel())
        for n in range(200):
            producer.publish(n, routing_key=queue.name)
            assert watch.queue_declare(passive=True).message_count == n + 1
        assert _drain_bodies(watch) == list(range(200))


def test_a_nacked_publish_raises_and_the_channel_carries_on(names: Names) -> None:
    """A full queue that rejects publishes makes the broker nack: publish raises MessageNacked."""
    full = names.queue("full", max_length=0, queue_arguments={"x-overflow": "reject-publish"})
    roomy = names.queue("roomy")
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        full(channel).declare()
        roomy(channel).declare()
        producer = Producer(channel)
        with pytest.raises(MessageNacked, match=WHERE):
            producer.publish("no room", routing_key=full.name)
        producer.publish("room", routing_key=roomy.name)  # a nack concerns one message only
        assert _count(roomy, conn) == 1
        assert _count(full, conn) == 0


def test_a_confirm_that_does_not_come_in_time_raises_publish_timeout(names: Names) -> None:
    """No confirm within the limit: PublishTimeout, a retryable error; later confirms are ignored."""
    queue = names.queue()
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel)
        with pytest.raises(PublishTimeout, match="may or may not be stored") as info:
            producer.publish("late", routing_key=queue.name, timeout=1e-9)  # no broker is that fast
        assert isinstance(info.value, conn.connection_errors)
        producer.publish("next", routing_key=queue.name)  # the late confirm does not confuse this one
        assert _drain_bodies(queue(channel)) == ["late", "next"]


# -- routing --------------------------------------------------------------------------


def test_headers_exchange_matches_all_or_any(names: Names) -> None:
    """x-match=all needs every bound header, x-match=any just one; the routing key is ignored."""
    exchange = names.exchange("headers", type="headers")
    wanted = {"format": "pdf", "kind": "report"}
    every = names.queue("all", exchange=exchange, binding_arguments={"x-match": "all", **wanted})
    some = names.queue("any", exchange=exchange, binding_arguments={"x-match": "any", **wanted})
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        every, some = every(channel), some(channel)
        every.declare()
        some.declare()
        producer = Producer(channel, exchange)
        producer.publish("both", routing_key="ignored", headers={"format": "pdf", "kind": "report", "x": "y"})
        producer.publish("one", headers={"format": "pdf", "kind": "log"})
        producer.publish("other value", headers={"format": "zip"})
        producer.publish("no headers")
        assert _drain_bodies(every) == ["both"]
        assert _drain_bodies(some) == ["both", "one"]


def test_exchange_to_exchange_binding_routes_until_unbound(names: Names) -> None:
    """bind_to forwards a source exchange's messages; unbind_from stops the flow."""
    source = names.exchange("src", type="topic")
    target = names.exchange("dst", type="direct")
    queue = names.queue(exchange=target, routing_key="k")
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        source(channel).declare()
        bound_target = target(channel)
        bound_target.declare()
        bound_queue = queue(channel)
        bound_queue.declare()
        producer = Producer(channel, source)

        bound_target.bind_to(source, routing_key="#")
        producer.publish("through", routing_key="k")
        producer.publish("forwarded, then unroutable", routing_key="other")
        assert _count(queue, conn) == 1

        bound_target.unbind_from(source, routing_key="#")
        producer.publish("after unbind", routing_key="k")
        assert _count(queue, conn) == 1  # confirmed, and not routed anywhere
        assert _drain_bodies(bound_queue) == ["through"]


# -- TTL and dead-lettering -------------------------------------------------------------


def _dead_lettered(names: Names, channel: Any, **source_options: Any) -> Any:
    """A source queue whose dead letters go through a DLX into a ``dead`` queue."""
    dlx = names.exchange("dlx")
    dead = names.queue("dead", exchange=dlx, routing_key="dead")(channel)
    dead.declare()
    source = names.queue("source", queue_arguments={
        "x-dead-letter-exchange": dlx.name, "x-dead-letter-routing-key": "dead"},
        **source_options)(channel)
    source.declare()
    return source, dead


def _death(message: Any) -> Dict[str, Any]:
    deaths = message.headers["x-death"]
    assert len(deaths) == 1
    return deaths[0]


def test_queue_ttl_expires_messages_into_the_dead_letter_exchange(names: Names) -> None:
    """message_ttl (seconds) becomes x-message-ttl; expired messages are dead-lettered."""
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        source, dead = _dead_lettered(names, conn.channel(), message_ttl=0.2)
        producer = Producer(conn.channel())
        for n in range(3):
            producer.publish(n, routing_key=source.name)
        got = []
        for _ in range(3):
            message = get_soon(dead)
            assert message is not None, "expired message never reached the dead-letter queue"
            got.append(message.payload)
            assert _death(message)["reason"] == "expired"
            assert _death(message)["queue"] == source.name
            message.ack()
        assert got == [0, 1, 2]
        assert _count(source, conn) == 0


def test_per_message_expiration_dead_letters_only_that_message(names: Names) -> None:
    """publish(expiration=0.1) is in seconds and reaches the broker as 100 ms."""
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        source, dead = _dead_lettered(names, conn.channel())
        producer = Producer(conn.channel())
        producer.publish("short-lived", routing_key=source.name, expiration=0.1)
        producer.publish("kept", routing_key=source.name)
        message = get_soon(dead)
        assert message is not None and message.payload == "short-lived"
        death = _death(message)
        assert death["reason"] == "expired"
        assert death["original-expiration"] == "100"
        message.ack()
        assert _count(source, conn) == 1
        assert dead.get() is None


def test_reject_without_requeue_dead_letters(names: Names) -> None:
    """reject(requeue=False) sends the message to the DLX; requeue=True does not."""
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        source, dead = _dead_lettered(names, conn.channel())
        Producer(conn.channel()).publish("refused", routing_key=source.name)
        message = source.get()
        message.reject(requeue=True)
        message = get_soon(source)
        assert message is not None and message.redelivered
        message.reject(requeue=False)
        dead_letter = get_soon(dead)
        assert dead_letter is not None and dead_letter.payload == "refused"
        assert _death(dead_letter)["reason"] == "rejected"
        dead_letter.ack()
        assert source.get() is None


# -- priorities -------------------------------------------------------------------------


def test_consumer_receives_highest_priority_first(names: Names) -> None:
    """Queue(max_priority=9) with prefetch 1 hands out waiting messages by priority."""
    queue = names.queue(max_priority=9)
    priorities = list(range(10))
    random.shuffle(priorities)
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel)
        for priority in priorities:  # all stored before anyone consumes
            producer.publish(priority, routing_key=queue.name, priority=priority)
        received: List[int] = []
        Consumer(conn.channel(), [queue], prefetch_count=1, callbacks=[_collector(received)]).consume()
        drain_until(conn, lambda: len(received) == 10)
    assert received == list(range(9, -1, -1)), f"published in order {priorities}"


# -- heartbeats -------------------------------------------------------------------------


def test_heartbeats_keep_the_connection_alive_through_a_long_callback(names: Names) -> None:
    """A callback that sleeps 4 heartbeats long does not get the connection dropped."""
    queue = names.queue()
    with Connection(AMQP_URL, heartbeat=1) as conn:
        assert conn.connection.heartbeat == 1  # negotiated with the broker
        received: List[str] = []

        def slow(body: str, message: Any) -> None:
            if body == "slow":
                gevent.sleep(4)  # the broker drops a silent client after 2 missed beats
            message.ack()
            received.append(body)

        Consumer(conn.channel(), [queue], callbacks=[slow]).consume()
        producer = Producer(conn.channel())
        producer.publish("slow", routing_key=queue.name)
        drain_until(conn, lambda: bool(received), timeout=WAIT + 4)
        producer.publish("after", routing_key=queue.name)
        drain_until(conn, lambda: len(received) == 2)
        assert received == ["slow", "after"]
        assert conn.connected and conn.connection.failure is None


# -- consumers --------------------------------------------------------------------------


def test_cancel_by_queue_stops_only_that_queue(names: Names) -> None:
    """After cancel_by_queue(q1), q1's messages stay in q1 while q2 keeps flowing."""
    first, second = names.queue("1"), names.queue("2")
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        received: List[Any] = []
        consumer = Consumer(conn.channel(), [first, second], callbacks=[_collector(received)])
        consumer.consume()
        consumer.cancel_by_queue(first)
        assert not consumer.consuming_from(first) and consumer.consuming_from(second)
        producer = Producer(conn.channel())
        for n in range(3):
            producer.publish(["first", n], routing_key=first.name)
            producer.publish(["second", n], routing_key=second.name)
        drain_until(conn, lambda: len(received) == 3)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.3)
        assert received == [["second", n] for n in range(3)]
        assert _count(first, conn) == 3


def test_deleting_a_consumed_queue_raises_consumer_cancelled(names: Names) -> None:
    """The broker cancels consumers of a deleted queue; drain_events says so once."""
    queue = names.queue()
    with Connection(AMQP_URL) as conn:
        Consumer(conn.channel(), [queue], callbacks=[_collector([])]).consume()
        with Connection(AMQP_URL) as other:
            queue(other.channel()).delete()
        with gevent.Timeout(WAIT), pytest.raises(ConsumerCancelled, match=WHERE):
            conn.drain_events(timeout=WAIT)
        with pytest.raises(socket.timeout):  # reported once; the connection is fine
            conn.drain_events(timeout=0.2)
        assert names.queue("after")(conn.channel()).declare()


def test_on_cancel_callback_hears_of_a_broker_cancel(names: Names) -> None:
    """With on_cancel given, a broker cancel calls it (in drain_events) instead of raising."""
    queue = names.queue()
    with Connection(AMQP_URL) as conn:
        bound = queue(conn.channel())
        bound.declare()
        cancelled: List[str] = []
        tag = bound.consume(callback=lambda message: None, on_cancel=cancelled.append)
        with Connection(AMQP_URL) as other:
            queue(other.channel()).delete()
        drain_until(conn, lambda: bool(cancelled))
        assert cancelled == [tag]


# -- sharing one connection between greenlets -----------------------------------------


@pytest.mark.parametrize("greenlets, each, options, default_channel", [
    pytest.param(100, 50, {}, False, id="shared-producer"),
    pytest.param(100, 50, {}, True, id="default-channel"),
    pytest.param(100, 10, CONFIRMS, False, id="shared-producer-confirms"),
    pytest.param(100, 10, CONFIRMS, True, id="default-channel-confirms"),
])
def test_many_greenlets_publish_through_one_producer(names: Names, greenlets: int, each: int,
                                                     options: Dict[str, Any],
                                                     default_channel: bool) -> None:
    """One Producer, many publishing greenlets, a consumer on the same connection:
    every message arrives exactly once and no greenlet fails (no concurrent socket use)."""
    queue = names.queue()
    total = greenlets * each
    with Connection(AMQP_URL, transport_options=options) as conn:
        if default_channel:  # producer, consumer and acks all share conn.default_channel
            producer, consumer_channel = Producer(conn), conn.default_channel
        else:
            producer, consumer_channel = Producer(conn.channel()), conn.channel()
        seen: "collections.Counter[tuple]" = collections.Counter()

        def on_message(body: Any, message: Any) -> None:
            seen[tuple(body)] += 1
            message.ack()

        Consumer(consumer_channel, [queue], callbacks=[on_message]).consume()

        def publish(g: int) -> None:
            for i in range(each):
                producer.publish([g, i], routing_key=queue.name)

        consuming = gevent.spawn(drain_until, conn, lambda: sum(seen.values()) >= total, 60)
        publishers = [gevent.spawn(publish, g) for g in range(greenlets)]
        with gevent.Timeout(90):
            gevent.joinall([*publishers, consuming], raise_error=True)
        with pytest.raises(socket.timeout):  # nothing more (no duplicates) arrives
            conn.drain_events(timeout=0.3)
        assert set(seen) == {(g, i) for g in range(greenlets) for i in range(each)}
        assert set(seen.values()) == {1}


def test_concurrent_first_use_opens_one_default_channel() -> None:
    """Greenlets racing for conn.default_channel all get the same channel (none leaks)."""
    with Connection(AMQP_URL) as conn:
        opened_before = len(conn.connection.channels)
        channels: List[Any] = []
        jobs = [gevent.spawn(lambda: channels.append(conn.default_channel)) for _ in range(20)]
        with gevent.Timeout(WAIT):
            gevent.joinall(jobs, raise_error=True)
        assert len({id(channel) for channel in channels}) == 1
        assert len(conn.connection.channels) == opened_before + 1


def test_many_greenlets_share_one_channel_for_rpcs(names: Names) -> None:
    """Concurrent declares on one channel each get their own reply, never another's."""
    queues = [names.queue(f"rpc-{n}") for n in range(50)]
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()

        def declare(queue: Queue) -> Any:
            declared = queue(channel).queue_declare()
            checked = queue(channel).queue_declare(passive=True)
            return declared.queue, checked.queue

        jobs = [gevent.spawn(declare, queue) for queue in queues]
        with gevent.Timeout(WAIT * 2):
            gevent.joinall(jobs, raise_error=True)
        assert [job.value for job in jobs] == [(q.name, q.name) for q in queues]


# -- errors ---------------------------------------------------------------------------------


def test_passive_declare_of_a_missing_queue_raises_not_found(names: Names) -> None:
    """NotFound names the queue; the channel is reopened and usable right away."""
    missing = names.queue("missing")
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        with pytest.raises(NotFound, match=missing.name) as info:
            missing(channel).queue_declare(passive=True)
        assert info.value.reply_code == 404  # type: ignore[attr-defined]
        assert WHERE in str(info.value)
        present = names.queue("present")
        assert present(channel).queue_declare().queue == present.name
        with pytest.raises(socket.timeout):  # the error was reported once, not again here
            conn.drain_events(timeout=0.2)


def test_wrong_password_is_refused_without_revealing_it() -> None:
    conn = Connection(_with(AMQP_URL, password=SECRET))
    with pytest.raises(KombuError) as info:
        conn.connect()
    assert isinstance(info.value, AccessRefused)
    assert WHERE in str(info.value)
    for exc in error_chain(info.value):
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    assert SECRET not in repr(conn)
    conn.close()


def test_closed_port_raises_operational_error_naming_it() -> None:
    conn = Connection(_with(AMQP_URL, password=SECRET, port=1), connect_timeout=2)
    where = f"{urllib.parse.urlsplit(AMQP_URL).hostname}:1"
    with gevent.Timeout(WAIT), pytest.raises(OperationalError, match=where) as info:
        conn.connect()
    for exc in error_chain(info.value):
        assert SECRET not in str(exc)
    conn.close()


def test_error_tuples_hold_kombu_green_errors() -> None:
    """What ensure() and friends catch: our own error classes, as tuples."""
    conn = Connection(AMQP_URL)
    assert isinstance(conn.connection_errors, tuple) and OperationalError in conn.connection_errors
    assert isinstance(conn.channel_errors, tuple) and ChannelError in conn.channel_errors


def test_publish_to_a_missing_exchange_fails_the_next_channel_operation(names: Names) -> None:
    """Without confirms the broker's refusal comes later: the next call on the channel raises."""
    missing = names.exchange("missing")  # never declared
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        Producer(channel, missing, auto_declare=False).publish("lost?", routing_key="k")
        queue = names.queue()
        with gevent.Timeout(WAIT), pytest.raises(NotFound, match=missing.name):
            queue(channel).queue_declare()
        assert queue(channel).queue_declare().queue == queue.name  # usable again


def test_publish_to_a_missing_exchange_fails_the_next_drain_events(names: Names) -> None:
    """Nobody uses the channel again: drain_events reports the refusal instead."""
    missing = names.exchange("missing")
    with Connection(AMQP_URL) as conn:
        Producer(conn.channel(), missing, auto_declare=False).publish("lost?", routing_key="k")
        with gevent.Timeout(WAIT), pytest.raises(NotFound, match=missing.name):
            conn.drain_events(timeout=WAIT)


def test_confirmed_publish_to_a_missing_exchange_raises_itself(names: Names) -> None:
    """With confirms the publish call raises, and the error is not reported a second time."""
    missing = names.exchange("missing")
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        with gevent.Timeout(WAIT), pytest.raises(NotFound, match=missing.name):
            Producer(channel, missing, auto_declare=False).publish("lost?", routing_key="k")
        queue = names.queue()
        assert queue(channel).queue_declare().queue == queue.name
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)


# -- the hub is never blocked -------------------------------------------------------------


class Ticker:
    """A greenlet that wakes every 10 ms and records ``probe()`` each time."""

    def __init__(self, probe: Any = lambda: None) -> None:
        self.probe = probe
        self.seen: List[Any] = []
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.seen.append(self.probe())
            gevent.sleep(0.01)

    def stop(self) -> None:
        self.greenlet.kill()


def test_ticker_runs_while_consumers_wait(names: Names) -> None:
    """Three greenlets blocked in drain_events on empty queues leave the hub free."""
    queues = [names.queue(str(n)) for n in range(3)]
    waiting = [0]

    def waiter(queue: Queue) -> None:
        with Connection(AMQP_URL) as conn:
            Consumer(conn.channel(), [queue], callbacks=[_collector([])]).consume()
            waiting[0] += 1
            try:
                with pytest.raises(socket.timeout):
                    conn.drain_events(timeout=1.0)
            finally:
                waiting[0] -= 1

    ticker = Ticker(lambda: waiting[0])
    try:
        waiters = [gevent.spawn(waiter, queue) for queue in queues]
        with gevent.Timeout(WAIT * 2):
            gevent.joinall(waiters, raise_error=True)
    finally:
        ticker.stop()
    assert ticker.seen.count(3) >= 3, "the ticker must run while all three consumers wait"


def test_ticker_runs_while_thousands_of_messages_flow(names: Names) -> None:
    """Publishing and consuming 2,000 messages yields to the whole hub all along:
    the ticker (a timer) runs while the publisher and the consumer are part way through.
    """
    queue, total = names.queue(), 2000
    published: List[int] = []
    received: List[int] = []
    with Connection(AMQP_URL) as consumer_side, Connection(AMQP_URL) as producer_side:
        Consumer(consumer_side.channel(), [queue], callbacks=[_collector(received)]).consume()
        producer = Producer(producer_side.channel())

        def publish() -> None:
            for n in range(total):
                producer.publish(n, routing_key=queue.name)
                published.append(n)

        ticker = Ticker(lambda: (time.monotonic(), len(published), len(received)))
        gevent.sleep(0.05)  # the ticker is in its stride
        try:
            jobs = [gevent.spawn(publish),
                    gevent.spawn(drain_until, consumer_side, lambda: len(received) == total, 60)]
            with gevent.Timeout(90):
                gevent.joinall(jobs, raise_error=True)
            gevent.sleep(0.05)
        finally:
            ticker.stop()
    assert sorted(received) == list(range(total))
    assert any(0 < sent < total for _, sent, _ in ticker.seen), "the publisher never let the ticker run"
    assert any(0 < got < total for _, _, got in ticker.seen), "the consumer never let the ticker run"


def test_idle_consumers_on_many_connections_burn_no_cpu(names: Names) -> None:
    """50 connections waiting 1 s each on empty queues cost next to no CPU."""
    count = 50
    ready, go, done = [0], gevent.event.Event(), gevent.event.Event()

    def waiter(n: int) -> None:
        with Connection(AMQP_URL) as conn:
            Consumer(conn.channel(), [names.queue(f"idle-{n}")], callbacks=[_collector([])]).consume()
            ready[0] += 1
            go.wait()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=1.0)
            ready[0] -= 1
            done.wait()  # close only after the measurement

    waiters = [gevent.spawn(waiter, n) for n in range(count)]
    try:
        with gevent.Timeout(WAIT * 4):
            while ready[0] < count:
                gevent.sleep(0.01)
                for job in waiters:
                    if job.dead:
                        job.get()  # a failed setup: its error, not a timeout
            started = time.process_time()
            go.set()
            while ready[0]:
                gevent.sleep(0.05)
            used = time.process_time() - started
    finally:
        done.set()
        with gevent.Timeout(WAIT * 2):
            gevent.joinall(waiters, raise_error=True)
    # An event-driven wait costs nothing per second; polling 50 sockets would.
    assert used < 0.25, f"idle waiting used {used:.3f}s of CPU"


def test_one_idle_wait_does_not_spin(names: Names) -> None:
    with Connection(AMQP_URL) as conn:
        Consumer(conn.channel(), [names.queue()], callbacks=[_collector([])]).consume()
        started = time.process_time()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
        used = time.process_time() - started
    assert used < 0.05, f"one idle drain_events(timeout=0.5) used {used:.3f}s of CPU"


def test_one_greenlet_per_connection_waits_on_all_of_them(names: Names) -> None:
    """The way to wait on several connections: a drain_events loop per connection."""
    queues = [names.queue(str(n)) for n in range(3)]
    received: Dict[int, List[Any]] = {n: [] for n in range(3)}
    declared = [0]

    def worker(n: int) -> None:
        with Connection(AMQP_URL) as conn:
            Consumer(conn.channel(), [queues[n]], callbacks=[_collector(received[n])]).consume()
            declared[0] += 1
            drain_until(conn, lambda: len(received[n]) == 5)

    workers = [gevent.spawn(worker, n) for n in range(3)]
    with gevent.Timeout(WAIT):
        while declared[0] < 3:
            gevent.sleep(0.01)
    with Connection(AMQP_URL) as conn:
        producer = Producer(conn.channel())
        for i in range(5):
            for n in range(3):
                producer.publish([n, i], routing_key=queues[n].name)
    with gevent.Timeout(WAIT * 2):
        gevent.joinall(workers, raise_error=True)
    assert received == {n: [[n, i] for i in range(5)] for n in range(3)}


# -- TLS ------------------------------------------------------------------------------------


def test_amqps_round_trip(names: Names) -> None:
    queue = names.queue()
    with Connection(amqps_url()) as conn:
        received: List[Any] = []
        Consumer(conn.channel(), [queue], callbacks=[_collector(received)]).consume()
        Producer(conn.channel()).publish({"over": "tls"}, routing_key=queue.name)
        drain_until(conn, lambda: bool(received))
    assert received == [{"over": "tls"}]


def test_amqps_never_falls_back_to_plain_tcp() -> None:
    """amqps:// pointed at the plain AMQP port must fail the TLS handshake, not connect."""
    plain = urllib.parse.urlsplit(AMQP_URL)
    url = urllib.parse.urlunsplit(plain._replace(scheme="amqps"))
    with Connection(url) as conn:
        with gevent.Timeout(WAIT), pytest.raises(OperationalError, match="TLS"):
            conn.connect()


def test_amqps_against_system_cas_only_refuses_a_self_signed_broker() -> None:
    """Without ssl_ca_certs the broker's certificate is checked against the system's CAs."""
    amqps_url()  # skips (or fails in CI) when the TLS port is closed
    where = _where(AMQPS_URL)
    conn = Connection(AMQPS_URL)
    with gevent.Timeout(WAIT), pytest.raises(OperationalError, match=where) as info:
        conn.connect()
    text = str(info.value)
    assert "TLS" in text and "certificate" in text.lower()
    conn.close()


# -- basic_get ------------------------------------------------------------------------------


def test_get_returns_every_property(names: Names) -> None:
    """Properties and headers survive the broker round trip through basic_get."""
    queue = names.queue()
    with Connection(AMQP_URL, transport_options=CONFIRMS) as conn:
        channel = conn.channel()
        bound = queue(channel)
        bound.declare()
        producer = Producer(channel)
        producer.publish({"k": "v"}, routing_key=queue.name, correlation_id="cid-7",
                         reply_to="replies", headers={"h": "v", "n": 3}, priority=7,
                         delivery_mode="transient", message_id="m-1", expiration=60, type="demo",
                         app_id="tests")
        producer.publish("plain text", routing_key=queue.name, content_type="text/plain")

        message = bound.get()
        assert message.payload == {"k": "v"}
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        assert message.headers == {"h": "v", "n": 3}
        props = message.properties
        assert props["correlation_id"] == "cid-7"
        assert props["reply_to"] == "replies"
        assert props["priority"] == 7
        assert props["delivery_mode"] == 1
        assert props["message_id"] == "m-1"
        assert props["expiration"] == "60000"
        assert props["type"] == "demo" and props["app_id"] == "tests"
        assert message.delivery_info["routing_key"] == queue.name
        assert not message.redelivered
        message.ack()

        message = bound.get()
        assert message.body == b"plain text" and message.payload == "plain text"
        assert message.content_type == "text/plain" and message.content_encoding == "utf-8"
        assert message.properties["delivery_mode"] == 2  # persistent unless told otherwise
        message.ack()
        assert bound.get() is None


# -- closing ---------------------------------------------------------------------------------


def test_closing_a_connection_wakes_a_greenlet_in_drain_events(names: Names) -> None:
    """drain_events() with no timeout must not outlive its connection."""
    conn = Connection(AMQP_URL)
    Consumer(conn.channel(), [names.queue()], callbacks=[_collector([])]).consume()
    waiter = gevent.spawn(conn.drain_events)
    gevent.sleep(0.1)  # it is waiting now
    assert not waiter.dead
    conn.close()
    with gevent.Timeout(WAIT):
        waiter.join()
    assert isinstance(waiter.exception, ConnectionClosed), repr(waiter.exception)


def test_a_dead_socket_wakes_a_greenlet_in_drain_events(names: Names) -> None:
    """The network dropping under a waiting consumer raises instead of hanging."""
    with Connection(AMQP_URL) as conn:
        Consumer(conn.channel(), [names.queue()], callbacks=[_collector([])]).consume()
        waiter = gevent.spawn(conn.drain_events)
        gevent.sleep(0.1)
        assert not waiter.dead
        conn.connection._transport.sock.shutdown(socket.SHUT_RDWR)
        with gevent.Timeout(WAIT):
            waiter.join()
        assert isinstance(waiter.exception, OperationalError), repr(waiter.exception)
        assert WHERE in str(waiter.exception)
        assert not conn.connected
