"""The behaviour every transport must show, written once.

Subclass :class:`TransportConformance` in ``tests/integration/`` and give it
a ``url`` fixture; every test then runs against that transport unchanged.
Tests that depend on an optional capability consult the transport's
declared :class:`~kombu_green.transport.base.Capabilities`, so a claim in
the table is always backed by a passing test.
"""
from __future__ import annotations

import socket
import uuid
from typing import Any, Callable, Dict, Iterator, List

import gevent
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import ContentDisallowed, DecodeError, MessageStateError

#: Long enough for any real broker on loopback to deliver; never a speed claim.
WAIT = 5.0


def drain_until(conn: Connection, done: Callable[[], bool], timeout: float = WAIT) -> None:
    """Run ``conn.drain_events`` until ``done()`` or the time budget runs out."""
    with gevent.Timeout(timeout, AssertionError(f"condition not met within {timeout}s")):
        while not done():
            try:
                conn.drain_events(timeout=0.2)
            except socket.timeout:
                pass


def get_soon(queue: Queue, timeout: float = WAIT) -> Any:
    """``queue.get()`` until a message shows up: a real broker settles asynchronously
    (a requeue on channel close, or a publish on another channel, may land a moment later)."""
    with gevent.Timeout(timeout, False):
        while True:
            message = queue.get()
            if message is not None:
                return message
            gevent.sleep(0.01)
    return None


class TransportConformance:
    """Mix-in test suite; subclasses provide the ``url`` fixture."""

    @pytest.fixture
    def url(self) -> str:  # pragma: no cover - always overridden
        raise NotImplementedError

    @pytest.fixture
    def conn(self, url: str) -> Iterator[Connection]:
        with Connection(url) as connection:
            yield connection

    @pytest.fixture
    def name(self) -> str:
        """A unique prefix so runs against a shared server never collide."""
        return f"kgt-{uuid.uuid4().hex[:10]}"

    @pytest.fixture(autouse=True)
    def _cleanup(self, url: str) -> Iterator[List[Queue]]:
        self.created: List[Queue] = []
        yield self.created
        with Connection(url) as connection:
            for queue in self.created:
                try:
                    queue.bind(connection.channel()).delete()
                except Exception:  # noqa: BLE001 - best effort cleanup
                    pass

    def queue(self, name: str, **kwargs: Any) -> Queue:
        queue = Queue(name, **kwargs)
        self.created.append(queue)
        return queue

    def collect(self, conn: Connection, queues: Any, ack: bool = True, **kwargs: Any) -> List[Any]:
        """Start a consumer on ``queues``; return the list it fills with messages."""
        received: List[Any] = []

        def on_message(body: Any, message: Any) -> None:
            received.append(message)
            if ack:
                message.ack()

        consumer = Consumer(conn.channel(), queues, callbacks=[on_message], **kwargs)
        consumer.consume()
        return received

    # -- publish / consume -------------------------------------------------

    def test_round_trip_keeps_body_headers_and_properties(self, conn: Connection, name: str) -> None:
        exchange = Exchange(name, "direct")
        queue = self.queue(name, exchange=exchange, routing_key="rk")
        received = self.collect(conn, [queue])
        Producer(conn.channel(), exchange).publish(
            {"hello": "world", "n": [1, 2]}, routing_key="rk", headers={"h": "v"},
            correlation_id="cid-1", reply_to="replies", priority=3)
        drain_until(conn, lambda: received)
        message = received[0]
        assert message.payload == {"hello": "world", "n": [1, 2]}
        assert message.content_type == "application/json"
        assert message.headers["h"] == "v"
        assert message.properties["correlation_id"] == "cid-1"
        assert message.properties["reply_to"] == "replies"
        assert message.delivery_info["routing_key"] == "rk"
        assert message.delivery_info["exchange"] == name
        assert not message.redelivered

    def test_raw_bytes_pass_through(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received = self.collect(conn, [queue])
        blob = bytes(range(256)) * 4
        Producer(conn.channel()).publish(blob, routing_key=name, content_type="application/data",
                                         content_encoding="binary")
        drain_until(conn, lambda: received)
        assert received[0].body == blob and received[0].payload == blob

    def test_compressed_body(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received = self.collect(conn, [queue])
        Producer(conn.channel()).publish({"big": "x" * 5000}, routing_key=name, compression="zlib")
        drain_until(conn, lambda: received)
        assert received[0].payload == {"big": "x" * 5000}
        assert received[0].headers["compression"] == "application/x-gzip"

    # -- routing -----------------------------------------------------------

    def _route(self, conn: Connection, exchange: Exchange, bindings: Dict[str, Dict[str, Any]],
               publish: List[Dict[str, Any]]) -> Dict[str, List[Any]]:
        """Bind one queue per entry, publish, and return each queue's bodies."""
        queues = {key: self.queue(f"{exchange.name}-{key}", exchange=exchange, **kw)
                  for key, kw in bindings.items()}
        bodies: Dict[str, List[Any]] = {key: [] for key in queues}
        for key, queue in queues.items():
            Consumer(conn.channel(), [queue], callbacks=[
                lambda body, message, key=key: (bodies[key].append(body), message.ack())]).consume()
        producer = Producer(conn.channel(), exchange)
        for spec in publish:
            producer.publish(**spec)
        expected = sum(len(spec.get("expect", ())) for spec in publish)
        drain_until(conn, lambda: sum(map(len, bodies.values())) >= expected)
        with pytest.raises(socket.timeout):  # and nothing more arrives
            conn.drain_events(timeout=0.2)
        return {key: sorted(values) for key, values in bodies.items()}

    def test_direct_exchange(self, conn: Connection, name: str) -> None:
        got = self._route(conn, Exchange(name, "direct"),
                          {"a": {"routing_key": "a"}, "b": {"routing_key": "b"}},
                          [{"body": 1, "routing_key": "a", "expect": "a"},
                           {"body": 2, "routing_key": "b", "expect": "b"},
                           {"body": 3, "routing_key": "c"}])
        assert got == {"a": [1], "b": [2]}

    def test_topic_exchange(self, conn: Connection, name: str) -> None:
        got = self._route(conn, Exchange(name, "topic"),
                          {"stock": {"routing_key": "*.stock.#"}, "all": {"routing_key": "#"}},
                          [{"body": 1, "routing_key": "usd.stock", "expect": "sa"},
                           {"body": 2, "routing_key": "eur.stock.db", "expect": "sa"},
                           {"body": 3, "routing_key": "stock.nasdaq", "expect": "a"}])
        assert got == {"stock": [1, 2], "all": [1, 2, 3]}

    def test_fanout_exchange(self, conn: Connection, name: str) -> None:
        got = self._route(conn, Exchange(name, "fanout"),
                          {"x": {"routing_key": "ignored"}, "y": {}},
                          [{"body": 7, "routing_key": "whatever", "expect": "xy"}])
        assert got == {"x": [7], "y": [7]}

    def test_fanout_reaches_bound_queues_without_consumers(self, conn: Connection, name: str,
                                                           url: str) -> None:
        if not Connection(url).transport_class.capabilities.durable_fanout:
            pytest.skip("transport's fanout reaches only subscribers present at publish time")
        exchange = Exchange(name, "fanout")
        queues = [self.queue(f"{name}-{n}", exchange=exchange)(conn.channel()) for n in range(2)]
        for queue in queues:
            queue.declare()
        Producer(conn.channel(), exchange).publish("to all", routing_key="any")
        for queue in queues:
            message = None
            with gevent.Timeout(WAIT):
                while message is None:
                    message = queue.get(no_ack=True) or gevent.sleep(0.01)
            assert message.payload == "to all"

    def test_headers_exchange(self, conn: Connection, name: str) -> None:
        got = self._route(conn, Exchange(name, "headers"),
                          {"all": {"binding_arguments": {"x-match": "all", "a": "1", "b": "2"}},
                           "any": {"binding_arguments": {"x-match": "any", "a": "1", "b": "2"}}},
                          [{"body": 1, "headers": {"a": "1", "b": "2"}, "expect": "xy"},
                           {"body": 2, "headers": {"a": "1"}, "expect": "y"},
                           {"body": 3, "headers": {"c": "3"}}])
        assert got == {"all": [1], "any": [1, 2]}

    def test_exchange_to_exchange(self, conn: Connection, name: str, url: str) -> None:
        if not Connection(url).transport_class.capabilities.exchange_to_exchange:
            pytest.skip("transport does not claim exchange-to-exchange bindings")
        source, target = Exchange(f"{name}-src", "topic"), Exchange(f"{name}-dst", "direct")
        queue = self.queue(name, exchange=target, routing_key="k")
        received = self.collect(conn, [queue])
        channel = conn.channel()
        source.declare(channel=channel)
        bound = target(channel)
        bound.declare()
        bound.bind_to(source, routing_key="#")
        Producer(channel, source).publish("via source", routing_key="k")
        drain_until(conn, lambda: received)
        assert received[0].payload == "via source"
        bound.unbind_from(source, routing_key="#")
        source(channel).delete()
        bound.delete()

    # -- acknowledgement ---------------------------------------------------

    def test_ack_removes_message(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received = self.collect(conn, [queue])
        Producer(conn.channel()).publish("once", routing_key=name)
        drain_until(conn, lambda: received)
        conn.close()
        with Connection(conn.as_uri(include_password=True), transport_options=conn.transport_options) as again:
            assert queue.bind(again.channel()).get() is None

    def test_reject_drops_and_requeue_redelivers(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received = self.collect(conn, [queue], ack=False)
        producer = Producer(conn.channel())
        producer.publish("drop me", routing_key=name)
        drain_until(conn, lambda: received)
        received.pop().reject()
        producer.publish("again", routing_key=name)
        drain_until(conn, lambda: received)
        first = received.pop()
        assert first.payload == "again" and not first.redelivered
        first.requeue()
        drain_until(conn, lambda: received)
        second = received.pop()
        assert second.payload == "again" and second.redelivered
        second.ack()
        with pytest.raises(MessageStateError, match="already acknowledged"):
            second.ack()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)

    def test_prefetch_count_limits_unacked(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received = self.collect(conn, [queue], ack=False, prefetch_count=2)
        producer = Producer(conn.channel())
        for n in range(5):
            producer.publish(n, routing_key=name)
        drain_until(conn, lambda: len(received) == 2)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.3)
        assert len(received) == 2
        received[0].ack()
        drain_until(conn, lambda: len(received) == 3)
        for message in received[1:]:
            message.ack()
        drain_until(conn, lambda: len(received) == 5)
        assert sorted(m.payload for m in received) == [0, 1, 2, 3, 4]
        for message in received[3:]:
            message.ack()

    def test_no_ack_consumer(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received = self.collect(conn, [queue], ack=False, no_ack=True)
        Producer(conn.channel()).publish("fire and forget", routing_key=name)
        drain_until(conn, lambda: received)
        received[0].ack()  # a no-op for no_ack consumers, as in kombu

    def test_unacked_messages_return_when_connection_closes(self, url: str, name: str) -> None:
        queue = self.queue(name)
        with Connection(url) as first:
            received = self.collect(first, [queue], ack=False)
            producer = Producer(first.channel())
            for n in range(3):
                producer.publish(n, routing_key=name)
            drain_until(first, lambda: len(received) == 3)
        with Connection(url) as second:
            again = self.collect(second, [queue])
            drain_until(second, lambda: len(again) == 3)
            assert sorted(m.payload for m in again) == [0, 1, 2]
            assert all(m.redelivered for m in again)

    def test_unacked_messages_return_when_channel_closes(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        channel = conn.channel()
        received: List[Any] = []
        Consumer(channel, [queue], callbacks=[lambda body, m: received.append(m)]).consume()
        Producer(conn.channel()).publish("keep me", routing_key=name)
        drain_until(conn, lambda: received)
        channel.close()
        message = get_soon(queue.bind(conn.channel()))
        assert message is not None and message.payload == "keep me" and message.redelivered
        message.ack()

    # -- queue operations --------------------------------------------------

    def test_drain_events_times_out_when_idle(self, conn: Connection, name: str) -> None:
        self.collect(conn, [self.queue(name)])
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.1)

    def test_get_purge_and_delete(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)(conn.channel())
        queue.declare()
        assert queue.get() is None
        producer = Producer(queue.channel)  # one channel: AMQP keeps its operations in order
        for n in range(4):
            producer.publish(n, routing_key=name)
        message = queue.get()
        assert message is not None and message.payload == 0
        message.ack()
        assert queue.purge() == 3
        assert queue.get() is None
        producer.publish("last", routing_key=name)
        queue.delete()
        queue.declare()
        assert queue.get() is None

    def test_priorities(self, conn: Connection, name: str, url: str) -> None:
        if not Connection(url).transport_class.capabilities.priorities:
            pytest.skip("transport does not claim priorities")
        queue = self.queue(name, max_priority=9)(conn.channel())
        queue.declare()
        producer = Producer(conn.channel())
        for priority in (1, 5, 0, 9, 3):
            producer.publish(priority, routing_key=name, priority=priority)
        gevent.sleep(0.1)  # let every publish land before taking any
        order = []
        for _ in range(5):
            message = None
            with gevent.Timeout(WAIT):
                while message is None:
                    message = queue.get(no_ack=True)
                    if message is None:
                        gevent.sleep(0.01)
            order.append(message.payload)
        assert order == [9, 5, 3, 1, 0]

    # -- safety: bad input loses nothing -----------------------------------

    def test_disallowed_serializer_keeps_message(self, url: str, name: str) -> None:
        queue = self.queue(name)
        with Connection(url) as conn:
            self.collect(conn, [queue])
            Producer(conn.channel()).publish({"p": 1}, routing_key=name, serializer="pickle")
            with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
                drain_until(conn, lambda: False)
        with Connection(url) as conn:
            received = self.collect(conn, [queue], accept=["pickle"])
            drain_until(conn, lambda: received)
            assert received[0].payload == {"p": 1} and received[0].redelivered

    def test_malformed_body_keeps_message(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        errors: List[Any] = []
        Consumer(conn.channel(), [queue], callbacks=[lambda body, m: None],
                 on_decode_error=lambda message, exc: errors.append((message, exc))).consume()
        Producer(conn.channel()).publish(b"{not json", routing_key=name,
                                         content_type="application/json", content_encoding="utf-8")
        drain_until(conn, lambda: errors)
        message, exc = errors[0]
        assert isinstance(exc, DecodeError) and not message.acknowledged
        message.reject(requeue=True)
        drain_until(conn, lambda: len(errors) == 2)
        errors[1][0].reject()

    # -- gevent ------------------------------------------------------------

    def test_one_drain_serves_every_channel(self, conn: Connection, name: str) -> None:
        first, second = self.queue(f"{name}-1"), self.queue(f"{name}-2")
        got_first, got_second = self.collect(conn, [first]), self.collect(conn, [second])
        producer = Producer(conn.channel())
        producer.publish("one", routing_key=first.name)
        producer.publish("two", routing_key=second.name)
        drain_until(conn, lambda: got_first and got_second)

    def test_consumer_added_while_another_greenlet_waits(self, conn: Connection, name: str) -> None:
        queue = self.queue(name)
        received: List[Any] = []
        waiter = gevent.spawn(drain_until, conn, lambda: received)
        gevent.sleep(0.05)  # the waiter is now blocked in drain_events
        Consumer(conn.channel(), [queue], callbacks=[
            lambda body, m: (received.append(body), m.ack())]).consume()
        Producer(conn.channel()).publish("late", routing_key=name)
        waiter.get(timeout=WAIT)
        assert received == ["late"]

    def test_consumer_greenlets_each_get_their_own(self, url: str, name: str) -> None:
        count, per = 20, 5
        queues = [self.queue(f"{name}-{n}") for n in range(count)]
        results: Dict[int, List[Any]] = {}

        def worker(n: int) -> None:
            with Connection(url) as conn:
                results[n] = self.collect(conn, [queues[n]])
                drain_until(conn, lambda: len(results[n]) == per)

        workers = [gevent.spawn(worker, n) for n in range(count)]
        gevent.sleep(0.2)
        with Connection(url) as conn:
            producer = Producer(conn.channel())
            for n in range(count):
                for i in range(per):
                    producer.publish([n, i], routing_key=queues[n].name)
        gevent.joinall(workers, timeout=WAIT * 2, raise_error=True)
        for n in range(count):
            assert sorted(m.payload for m in results[n]) == [[n, i] for i in range(per)]

    def test_competing_consumers_get_each_message_once(self, url: str, name: str) -> None:
        queue, total = self.queue(name), 200
        seen: List[int] = []
        with Connection(url) as setup:
            queue.bind(setup.channel()).declare()

        def worker() -> None:
            with Connection(url) as conn:
                Consumer(conn.channel(), [queue], callbacks=[
                    lambda body, m: (seen.append(body), m.ack())]).consume()
                drain_until(conn, lambda: len(seen) >= total, timeout=WAIT * 3)

        workers = [gevent.spawn(worker) for _ in range(5)]
        with Connection(url) as conn:
            producer = Producer(conn.channel())
            for n in range(total):
                producer.publish(n, routing_key=name)
        gevent.joinall(workers, timeout=WAIT * 4, raise_error=True)
        assert sorted(seen) == list(range(total))

    def test_waiting_consumers_never_starve_other_greenlets(self, url: str, name: str) -> None:
        queues = [self.queue(f"{name}-{n}") for n in range(10)]
        ticks: List[int] = []

        def waiter(queue: Queue) -> None:
            with Connection(url) as conn:
                self.collect(conn, [queue])
                try:
                    conn.drain_events(timeout=1.0)
                except socket.timeout:
                    pass

        def ticker() -> None:
            for n in range(20):
                ticks.append(n)
                gevent.sleep(0.01)

        waiters = [gevent.spawn(waiter, q) for q in queues]
        gevent.sleep(0)
        tick = gevent.spawn(ticker)
        tick.join(timeout=WAIT)  # a blocked hub would never let the ticker finish
        assert ticks == list(range(20))
        assert not all(w.dead for w in waiters), "the ticker must have run while consumers waited"
        gevent.joinall(waiters, timeout=WAIT, raise_error=True)
