"""Clients surviving a real broker restart (RabbitMQ and Redis).

Each test restarts the broker through ``scripts/brokers.sh restart`` while
greenlets publish or consume, and checks that nothing was lost and that no
greenlet hangs. Duplicates are allowed -- at-least-once delivery means a
message whose confirmation or ack was cut off by the restart comes again --
but counted and reported at the end of the run, as are the restart times.
"""
from __future__ import annotations

import socket
from typing import Any, Dict, List

import gevent
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue

from .restarts import REPORT, Restart, drain_all, duplicates, require_restartable, restart_in_background, unique_name

TRANSPORTS = [pytest.param("amqp", marks=pytest.mark.amqp), pytest.param("redis", marks=pytest.mark.redis)]
#: No test may take longer than this: a hang fails instead of stalling CI.
BOUND = 150
RETRY = {"max_retries": None, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


def connect(broker: Dict[str, Any]) -> Connection:
    return Connection(broker["url"], transport_options=dict(broker["options"]))


def durable_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, "direct", durable=True), routing_key=name, durable=True)


def publish_across_restart(conn: Connection, broker: Dict[str, Any], queue: Queue, total: int,
                           restart_at: int, kill: bool = False, pace: float = 0.0,
                           errback: Any = None) -> Restart:
    """Publish ids ``0..total-1`` with ``retry=True``, restarting the broker
    (``kill``: crashing it) when ``restart_at`` is reached; return the restart.

    ``declare=[queue]``: a crash may lose a binding made moments before it
    (metadata not yet on disk); the first publish after the reconnection
    declares the queue and its binding again.
    """
    producer = Producer(conn, exchange=queue.exchange, routing_key=queue.routing_key)
    policy = dict(RETRY, errback=errback) if errback else RETRY
    restart = thread = None
    for i in range(total):
        if i == restart_at:
            restart, thread = restart_in_background(broker["script"], down=1.0, kill=kill)
            gevent.sleep(0.3)  # the broker is going down while we publish
        producer.publish({"id": i}, delivery_mode="persistent", retry=True, retry_policy=policy,
                         declare=[queue])
        if pace:
            gevent.sleep(pace)  # a steady stream a consumer keeps up with
    assert thread is not None and restart is not None
    thread.get()
    return restart


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retried_publishes_survive_a_restart(transport: str) -> None:
    """2,000 publishes with retry=True while the broker restarts: every one arrives."""
    broker = require_restartable(transport)
    queue = durable_queue(unique_name("restart-publish"))
    total, restart_at = 2000, 500
    retries: List[float] = []
    with gevent.Timeout(BOUND):
        with connect(broker) as conn:
            queue(conn.default_channel).declare()
            restart = publish_across_restart(conn, broker, queue, total, restart_at,
                                             errback=lambda exc, interval: retries.append(interval))
        seen = drain_all(broker, queue, until=total)
    assert set(seen) == set(range(total)), f"missing: {sorted(set(range(total)) - set(seen))[:20]}"
    REPORT.append(f"{transport}: 2,000 retried publishes across a restart: {duplicates(seen)} duplicates, "
                  f"{len(retries)} retries; restart took {restart.seconds:.1f} s (1 s down)")


@pytest.mark.amqp
def test_confirmed_publishes_survive_a_broker_crash() -> None:
    """RabbitMQ SIGKILLed mid-way through 2,000 confirmed, retried publishes: none is lost.

    A confirm for a persistent message comes after RabbitMQ wrote it to
    disk, so a crash can only cost the unconfirmed ones, which the retry
    sends again -- possibly a second time, if the crash ate only the confirm.
    """
    broker = require_restartable("amqp")
    queue = durable_queue(unique_name("crash-publish"))
    total, crash_at = 2000, 500
    with gevent.Timeout(BOUND):
        with connect(broker) as conn:
            queue(conn.default_channel).declare()
            restart = publish_across_restart(conn, broker, queue, total, crash_at, kill=True)
        seen = drain_all(broker, queue, until=total)
    assert set(seen) == set(range(total)), f"missing: {sorted(set(range(total)) - set(seen))[:20]}"
    REPORT.append(f"amqp: 2,000 retried publishes across a SIGKILL of RabbitMQ: {duplicates(seen)} duplicates; "
                  f"kill and restart took {restart.seconds:.1f} s (1 s down)")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_consuming_greenlet_survives_a_restart(transport: str) -> None:
    """A greenlet consuming through ensure() keeps consuming after the broker returns."""
    broker = require_restartable(transport)
    queue = durable_queue(unique_name("restart-consume"))
    total = 600
    seen: List[int] = []
    revived: List[Any] = []
    consuming = connect(broker)

    def on_message(body: Any, message: Any) -> None:
        seen.append(body["id"])
        message.ack()

    def consume_forever() -> None:
        consumer = Consumer(consuming, [queue], callbacks=[on_message], prefetch_count=20)
        consumer.consume()
        drain = consuming.ensure(consumer, consuming.drain_events, on_revive=revived.append, **RETRY)
        while len(set(seen)) < total:
            try:
                drain(timeout=1)
            except socket.timeout:
                pass

    with gevent.Timeout(BOUND):
        queue(consuming.default_channel).declare()  # bound before the first publish
        worker = gevent.spawn(consume_forever)
        with connect(broker) as conn:
            restart = publish_across_restart(conn, broker, queue, total, total // 3, pace=0.002)
        worker.join(timeout=60)
        missing = sorted(set(range(total)) - set(seen))
        assert worker.dead, f"the consumer stopped receiving: {len(missing)} missing, e.g. {missing[:10]}"
        worker.get()  # the same greenlet, still running, consumed everything
    consuming.release()
    assert set(seen) == set(range(total))
    assert revived, "the consumer never had to reconnect: the restart was not noticed"
    REPORT.append(f"{transport}: a consuming greenlet across a restart: {len(seen)} deliveries of {total}, "
                  f"{duplicates(seen)} duplicates, revived {len(revived)} time(s); "
                  f"restart took {restart.seconds:.1f} s (1 s down)")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_many_greenlets_on_one_connection_all_resume(transport: str) -> None:
    """Ten consumers sharing a Connection: one reconnection, and all ten consume again."""
    broker = require_restartable(transport)
    names = [unique_name(f"restart-many-{n}") for n in range(10)]
    queues = [durable_queue(name) for name in names]
    got: Dict[str, List[int]] = {name: [] for name in names}
    shared = connect(broker)
    phase = gevent.event.Event()

    def worker(queue: Queue) -> None:
        def on_message(body: Any, message: Any) -> None:
            got[queue.name].append(body["id"])
            message.ack()
        consumer = Consumer(shared, [queue], callbacks=[on_message])
        consumer.consume()
        drain = shared.ensure(consumer, shared.drain_events, **RETRY)
        while len(got[queue.name]) < 2 or not phase.is_set():
            try:
                drain(timeout=0.5)
            except socket.timeout:
                pass

    with gevent.Timeout(BOUND):
        for queue in queues:  # declared before the workers start, so the first publish lands
            queue(shared.default_channel).declare()
        generation_before = shared._generation
        workers = [gevent.spawn(worker, queue) for queue in queues]
        with connect(broker) as conn:
            producer = Producer(conn)
            for queue in queues:
                producer.publish({"id": 0}, exchange=queue.exchange, routing_key=queue.routing_key,
                                 delivery_mode="persistent", retry=True, retry_policy=RETRY)
            restart, thread = restart_in_background(broker["script"], down=1.0)
            thread.get()
            phase.set()
            for queue in queues:
                producer.publish({"id": 1}, exchange=queue.exchange, routing_key=queue.routing_key,
                                 delivery_mode="persistent", retry=True, retry_policy=RETRY)
        gevent.joinall(workers, raise_error=True)
    reconnections = shared._generation - generation_before
    shared.release()
    assert all(set(ids) == {0, 1} for ids in got.values()), got
    REPORT.append(f"{transport}: 10 consuming greenlets sharing one connection across a restart: "
                  f"{reconnections} reconnection(s); restart took {restart.seconds:.1f} s (1 s down)")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_consumer_mixin_worker_survives_a_restart(transport: str) -> None:
    """A ConsumerMixin worker reconnects by itself and handles every message."""
    from kombu_green.mixins import ConsumerMixin

    broker = require_restartable(transport)
    queue = durable_queue(unique_name("restart-mixin"))
    total = 300
    seen: List[int] = []
    errors: List[BaseException] = []

    class Worker(ConsumerMixin):
        def __init__(self, connection: Connection) -> None:
            self.connection = connection

        def get_consumers(self, Consumer: Any, channel: Any) -> List[Any]:
            return [Consumer([queue], callbacks=[self.on_message], prefetch_count=20)]

        def on_message(self, body: Any, message: Any) -> None:
            seen.append(body["id"])
            message.ack()
            if len(set(seen)) >= total:
                self.should_stop = True

        def on_connection_error(self, exc: BaseException, interval: float) -> None:
            errors.append(exc)

    with gevent.Timeout(BOUND):
        with connect(broker) as conn:
            queue(conn.default_channel).declare()
            worker = Worker(connect(broker))
            running = gevent.spawn(worker.run)
            restart = publish_across_restart(conn, broker, queue, total, total // 3, pace=0.002)
        running.join(timeout=60)
        missing = sorted(set(range(total)) - set(seen))
        assert running.dead, f"the worker stopped receiving: {len(missing)} missing, e.g. {missing[:10]}"
        running.get()
    assert set(seen) == set(range(total))
    REPORT.append(f"{transport}: a ConsumerMixin worker across a restart: {len(seen)} deliveries of {total}, "
                  f"{duplicates(seen)} duplicates, {len(errors)} failed connection attempts; "
                  f"restart took {restart.seconds:.1f} s (1 s down)")
