"""ConsumerMixin and ConsumerProducerMixin on memory://.

What kombu's mixin does (consume until should_stop, reconnect after
connection errors), and what the gevent version adds: each consumer's
callbacks run in a greenlet of their own, and stopping is clean -- the
message in hand is finished, the others go back to their queue.
"""
from __future__ import annotations

import logging
import socket
from typing import Any, Callable, Dict, List, Optional

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Consumer, Producer, Queue
from kombu_green.mixins import ConsumerMixin, ConsumerProducerMixin

from ..conftest import ready

#: Bounds every wait so a failing test ends instead of hanging.
LIMIT = 30


def publish(conn: Connection, name: str, bodies: Any) -> None:
    channel = conn.channel()
    Queue(name)(channel).declare()
    producer = Producer(channel)
    for body in bodies:
        producer.publish(body, routing_key=name)
    channel.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    with gevent.Timeout(LIMIT, AssertionError(f"{what}: not within {LIMIT}s")):
        while not condition():
            gevent.sleep(0.01)


class Worker(ConsumerMixin):
    """Consumes queues ``a`` and ``b``; handlers are given per queue."""

    def __init__(self, connection: Connection, handlers: Dict[str, Callable[[Any, Any], None]],
                 **consumer_options: Any) -> None:
        self.connection = connection
        self.handlers = handlers
        self.consumer_options = consumer_options
        self.revived = 0
        self.ready_connections: List[Connection] = []
        self.ended = 0

    def get_consumers(self, Consumer: Callable[..., Consumer], channel: Any) -> List[Consumer]:
        return [Consumer(queues=[Queue(name)], callbacks=[handler], **self.consumer_options.get(name, {}))
                for name, handler in self.handlers.items()]

    def on_connection_revived(self) -> None:
        self.revived += 1

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        self.ready_connections.append(connection)

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        self.ended += 1


def start(worker: ConsumerMixin, **kwargs: Any) -> gevent.Greenlet:
    kwargs.setdefault("safety_interval", 0.1)
    return gevent.spawn(worker.run, **kwargs)


def finish(worker: ConsumerMixin, runner: gevent.Greenlet) -> None:
    worker.should_stop = True
    with gevent.Timeout(LIMIT, AssertionError("run() did not return after should_stop")):
        runner.get()


def acking(into: List[Any]) -> Callable[[Any, Any], None]:
    def handler(body: Any, message: Any) -> None:
        into.append(body)
        message.ack()
    return handler


def test_consumes_every_queue_and_stops_on_should_stop(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", range(5))
        publish(conn, "b", range(5, 10))
        got: List[Any] = []
        worker = Worker(Connection(memory_url), {"a": acking(got), "b": acking(got)})
        runner = start(worker)
        wait_until(lambda: len(got) == 10, "all ten handled")
        finish(worker, runner)
        assert sorted(got) == list(range(10))
        assert ready(conn, "a") == ready(conn, "b") == 0
        assert worker.revived == 1 and worker.ended == 1
        assert not worker.ready_connections[0].connected  # its clone was closed
        assert worker.ready_connections[0] is not worker.connection


def test_a_handler_may_stop_the_worker_itself(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", range(10))
        got: List[Any] = []

        def handler(body: Any, message: Any) -> None:
            got.append(body)
            message.ack()
            if body == 2:
                worker.should_stop = True

        worker = Worker(Connection(memory_url), {"a": handler})
        with gevent.Timeout(LIMIT):
            worker.run(safety_interval=0.1)
        assert got == [0, 1, 2]
        assert ready(conn, "a") == 7


def test_each_consumer_runs_its_callbacks_in_a_greenlet_of_its_own(memory_url: str) -> None:
    """A handler of queue a blocked for good does not hold up queue b, and
    each consumer sees its own messages in order."""
    with Connection(memory_url) as conn:
        release = gevent.event.Event()
        seen: Dict[str, List[Any]] = {"a": [], "b": []}
        greenlets: Dict[str, set] = {"a": set(), "b": set()}

        def slow(body: Any, message: Any) -> None:
            greenlets["a"].add(gevent.getcurrent())
            release.wait()
            seen["a"].append(body)
            message.ack()

        def fast(body: Any, message: Any) -> None:
            greenlets["b"].add(gevent.getcurrent())
            seen["b"].append(body)
            message.ack()

        worker = Worker(Connection(memory_url), {"a": slow, "b": fast})
        runner = start(worker)
        publish(conn, "a", range(3))
        publish(conn, "b", range(20))
        wait_until(lambda: len(seen["b"]) == 20, "b handled while a is stuck")
        assert seen["a"] == []
        release.set()
        wait_until(lambda: len(seen["a"]) == 3, "a handled once released")
        finish(worker, runner)
        assert seen == {"a": [0, 1, 2], "b": list(range(20))}
        assert len(greenlets["a"]) == len(greenlets["b"]) == 1
        assert greenlets["a"] != greenlets["b"] and runner not in greenlets["a"] | greenlets["b"]


def test_stopping_finishes_the_message_in_hand_and_returns_the_rest(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", range(10))
        holding = gevent.event.Event()
        release = gevent.event.Event()
        handled: List[Any] = []

        def handler(body: Any, message: Any) -> None:
            holding.set()
            release.wait()
            handled.append(body)
            message.ack()

        worker = Worker(Connection(memory_url), {"a": handler}, a={"prefetch_count": 5})
        runner = start(worker)
        with gevent.Timeout(LIMIT):
            holding.wait()
        wait_until(lambda: ready(conn, "a") == 5, "the prefetch window filled")
        worker.should_stop = True
        gevent.sleep(0.3)  # the drain loop has noticed; the handler still holds its message
        assert not runner.ready()
        release.set()
        with gevent.Timeout(LIMIT):
            runner.get()
        assert handled == [0]
        assert ready(conn, "a") == 9


def test_stopping_handles_what_a_no_ack_consumer_already_received(memory_url: str) -> None:
    """The broker has forgotten no_ack messages once sent: they are handled, not dropped."""
    with Connection(memory_url) as conn:
        publish(conn, "a", range(5))
        holding, release = gevent.event.Event(), gevent.event.Event()
        handled: List[Any] = []

        def handler(body: Any, message: Any) -> None:
            holding.set()
            release.wait()
            handled.append(body)

        worker = Worker(Connection(memory_url), {"a": handler}, a={"no_ack": True})
        runner = start(worker)
        with gevent.Timeout(LIMIT):
            holding.wait()
        wait_until(lambda: ready(conn, "a") == 0, "all five received")
        worker.should_stop = True
        release.set()
        with gevent.Timeout(LIMIT):
            runner.get()
        assert handled == [0, 1, 2, 3, 4]


def test_a_handler_that_never_finishes_is_stopped_after_shutdown_timeout(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", ["stuck"])
        holding = gevent.event.Event()

        def handler(body: Any, message: Any) -> None:
            holding.set()
            gevent.event.Event().wait()  # for ever

        worker = Worker(Connection(memory_url), {"a": handler})
        worker.shutdown_timeout = 0.1
        runner = start(worker)
        with gevent.Timeout(LIMIT):
            holding.wait()
        finish(worker, runner)
        assert ready(conn, "a") == 1  # its message went back


def test_stop_while_idle(memory_url: str) -> None:
    worker = Worker(Connection(memory_url), {"a": acking([])})
    with Connection(memory_url) as conn:
        publish(conn, "a", [])
    runner = start(worker)
    wait_until(lambda: worker.ready_connections, "consuming")
    finish(worker, runner)


def test_a_handler_error_ends_run_and_its_message_goes_back(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", ["boom"])

        def handler(body: Any, message: Any) -> None:
            raise ValueError(body)

        worker = Worker(Connection(memory_url), {"a": handler})
        with gevent.Timeout(LIMIT), pytest.raises(ValueError, match="boom"):
            worker.run(safety_interval=0.1)
        assert ready(conn, "a") == 1
        assert worker.ended == 1


def test_undecodable_messages_are_rejected_and_logged(memory_url: str, caplog: Any) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", [])
        producer = Producer(conn)
        producer.publish(b"{not json", routing_key="a", content_type="application/json")
        producer.publish({"fine": True}, routing_key="a")
        got: List[Any] = []
        worker = Worker(Connection(memory_url), {"a": acking(got)})
        with caplog.at_level(logging.ERROR, logger="kombu_green.mixins"):
            runner = start(worker)
            wait_until(lambda: got, "the good message handled")
            finish(worker, runner)
        assert got == [{"fine": True}]
        assert "Can't decode message body" in caplog.text
        assert ready(conn, "a") == 0


@pytest.mark.parametrize("how", ["collect", "transport"])
def test_reconnects_after_losing_the_connection(memory_url: str, how: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", [])
        got: List[Any] = []
        worker = Worker(Connection(memory_url), {"a": acking(got)})
        runner = start(worker)
        wait_until(lambda: worker.ready_connections, "consuming")
        publish(conn, "a", range(3))
        wait_until(lambda: len(got) == 3, "first batch")
        lost = worker.ready_connections[0]
        if how == "collect":
            lost.collect()
        else:
            lost.transport.close_connection(lost.connection)
        wait_until(lambda: len(worker.ready_connections) == 2, "consuming again")
        publish(conn, "a", range(3, 6))
        wait_until(lambda: len(got) == 6, "second batch")
        finish(worker, runner)
        assert sorted(got) == list(range(6))
        assert worker.revived == 2


def test_consume_with_a_limit_and_a_timeout(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "a", range(3))
        got: List[Any] = []
        worker = Worker(Connection(memory_url), {"a": acking(got)})
        with gevent.Timeout(LIMIT):
            events = list(worker.consume(limit=3, safety_interval=0.1))
        assert len(events) == 3
        wait_until(lambda: len(got) == 3, "handled")
        with gevent.Timeout(LIMIT), pytest.raises(socket.timeout):
            for _ in worker.consume(timeout=0.3, safety_interval=0.1):
                pass


def test_a_stop_during_the_restart_pause_returns(memory_url: str) -> None:
    """Errors make run() pause before consuming again; should_stop ends the pause."""
    class Broken(Worker):
        def get_consumers(self, Consumer: Any, channel: Any) -> List[Consumer]:
            raise self.connection.connection_errors[0]("broken on purpose")

    worker = Broken(Connection(memory_url), {})
    runner = start(worker)
    gevent.sleep(0.2)
    finish(worker, runner)
    assert worker.revived >= 1


def test_should_stop_as_a_plain_class_attribute_still_works(memory_url: str) -> None:
    class Plain(Worker):
        should_stop = False  # kombu's spelling: shadows the property

    with Connection(memory_url) as conn:
        publish(conn, "a", [])
    worker = Plain(Connection(memory_url), {"a": acking([])})
    runner = start(worker)
    wait_until(lambda: worker.ready_connections, "consuming")
    finish(worker, runner)


class Replier(ConsumerProducerMixin):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.publishing_connections: List[Optional[Connection]] = []

    def get_consumers(self, Consumer: Any, channel: Any) -> List[Consumer]:
        return [Consumer(queues=[Queue("requests")], callbacks=[self.on_request])]

    def on_request(self, body: Any, message: Any) -> None:
        producer = self.producer
        self.publishing_connections.append(producer.connection)
        producer.publish({"echo": body}, routing_key="replies")
        message.ack()


def test_consumer_producer_mixin_publishes_on_a_connection_of_its_own(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        publish(conn, "replies", [])
        publish(conn, "requests", [1, 2])
        worker = Replier(Connection(memory_url))
        runner = gevent.spawn(worker.run, safety_interval=0.1)
        wait_until(lambda: ready(conn, "replies") == 2, "two replies")
        producer_conn = worker.producer_connection
        assert producer_conn is not worker.connection
        assert set(worker.publishing_connections) == {producer_conn}
        finish(worker, runner)
        assert not producer_conn.connected  # closed when consuming ended
        with conn.SimpleQueue("replies") as replies:
            assert sorted(replies.get(timeout=5).payload["echo"] for _ in range(2)) == [1, 2]
