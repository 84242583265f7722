"""SimpleQueue and SimpleBuffer on memory://: the queue.Queue-like API, and
what gevent adds: many greenlets may get() from one SimpleQueue, each
message goes to exactly one of them, and a get() that times out loses nothing."""
from __future__ import annotations

import queue
import random
from typing import List

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Exchange, Queue
from kombu_green.exceptions import ConnectionClosed
from kombu_green.simple import Empty, SimpleBuffer, SimpleQueue

from ..conftest import ready


def test_put_get_ack_in_order(conn: Connection) -> None:
    with conn.SimpleQueue("jobs") as jobs:
        for i in range(3):
            jobs.put({"n": i})
        got = []
        for _ in range(3):
            message = jobs.get(timeout=5)
            got.append(message.payload)
            message.ack()
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert ready(conn, "jobs") == 0


def test_the_queue_and_an_exchange_of_its_name_are_declared(conn: Connection) -> None:
    with conn.SimpleQueue("jobs") as jobs:
        assert isinstance(jobs, SimpleQueue)
        assert jobs.queue.name == "jobs" and jobs.queue.durable
        assert jobs.queue.exchange.name == "jobs" and jobs.queue.exchange.type == "direct"
        assert jobs.queue.routing_key == "jobs"


def test_qsize_len_and_clear(conn: Connection) -> None:
    with conn.SimpleQueue("jobs") as jobs:
        assert jobs.qsize() == len(jobs) == 0
        for i in range(5):
            jobs.put(i)
        assert jobs.qsize() == len(jobs) == 5
        jobs.get(timeout=5).ack()
        assert jobs.qsize() == 4
        assert jobs.clear() == 4
        assert jobs.qsize() == 0
    assert ready(conn, "jobs") == 0


def test_empty_is_a_class_attribute_a_module_name_and_a_stdlib_queue_empty(conn: Connection) -> None:
    assert SimpleQueue.Empty is Empty and issubclass(Empty, queue.Empty)
    with conn.SimpleQueue("jobs") as jobs:
        with pytest.raises(jobs.Empty):
            jobs.get(timeout=0.05)
        with pytest.raises(queue.Empty):
            jobs.get_nowait()
        with pytest.raises(Empty):
            jobs.get(block=False)
        with pytest.raises(gevent.queue.Empty):  # gevent's queues raise the stdlib class too
            jobs.get(timeout=0)


def test_get_nowait_takes_a_ready_message_without_consuming(conn: Connection) -> None:
    with conn.SimpleQueue("jobs") as jobs:
        jobs.put("x")
        message = jobs.get_nowait()
        assert message.payload == "x"
        message.ack()


def test_put_options_reach_the_message(conn: Connection) -> None:
    with conn.SimpleQueue("jobs", serializer="pickle", accept=["pickle"]) as jobs:
        jobs.put({1, 2}, headers={"h": "v"}, compression="zlib", priority=3)
        message = jobs.get(timeout=5)
        assert message.payload == {1, 2}
        assert message.headers["h"] == "v"
        assert message.content_type == "application/x-python-serialize"
        message.ack()


def test_a_queue_object_may_name_the_queue(conn: Connection) -> None:
    with conn.SimpleQueue(Queue("plain")) as plain:  # the default exchange, routed by name
        plain.put("a")
        assert plain.get(timeout=5).payload == "a"
    exchange = Exchange("ex", "topic")
    with conn.SimpleQueue(Queue("bound", exchange, "k.*")) as bound:
        bound.put("b", routing_key="k.1")
        assert bound.get(timeout=5).payload == "b"


def test_a_getter_wakes_when_another_greenlet_puts(conn: Connection) -> None:
    with conn.SimpleQueue("jobs") as jobs:
        getter = gevent.spawn(jobs.get, timeout=10)
        gevent.sleep(0.05)
        assert not getter.ready()
        jobs.put("late")
        with gevent.Timeout(10):
            assert getter.get().payload == "late"


def test_ten_greenlets_get_distinct_messages(conn: Connection) -> None:
    total = 100
    with conn.SimpleQueue("jobs") as jobs:
        taken: List[int] = []

        def worker() -> None:
            while True:
                try:
                    message = jobs.get(timeout=0.5)
                except Empty:
                    return
                taken.append(message.payload)
                message.ack()
                gevent.sleep(0)

        workers = [gevent.spawn(worker) for _ in range(10)]
        for i in range(total):
            jobs.put(i)
        with gevent.Timeout(30):
            gevent.joinall(workers, raise_error=True)
    assert sorted(taken) == list(range(total))
    assert ready(conn, "jobs") == 0


def test_gets_that_time_out_lose_nothing(conn: Connection) -> None:
    """Greenlets keep calling get() with timeouts far shorter than the gaps
    between publishes: every message still reaches exactly one of them."""
    total = 40
    rng = random.Random(7)
    taken: List[int] = []
    timeouts = [0]
    with conn.SimpleQueue("jobs") as jobs:
        done = gevent.event.Event()

        def getter() -> None:
            while not done.is_set():
                try:
                    message = jobs.get(timeout=rng.choice([0, 0.001, 0.003, 0.01]))
                except Empty:
                    timeouts[0] += 1
                    continue
                taken.append(message.payload)
                message.ack()
                if len(taken) == total:
                    done.set()

        getters = [gevent.spawn(getter) for _ in range(5)]
        for i in range(total):
            jobs.put(i)
            gevent.sleep(rng.choice([0, 0.002, 0.01]))
        with gevent.Timeout(30):
            done.wait()
            gevent.joinall(getters, raise_error=True)
        assert jobs.qsize() == 0
    assert sorted(taken) == list(range(total))
    assert timeouts[0] > 0


def test_close_gives_back_unacked_messages(conn: Connection) -> None:
    jobs = conn.SimpleQueue("jobs")
    for i in range(3):
        jobs.put(i)
    first = jobs.get(timeout=5)  # handed out, never acked
    assert first.payload == 0
    jobs.close()
    assert ready(conn, "jobs") == 3
    with conn.SimpleQueue("jobs") as again:
        got = sorted(again.get(timeout=5).payload for _ in range(3))
    assert got == [0, 1, 2]


def test_get_after_close_and_waiters_during_close_raise(conn: Connection) -> None:
    jobs = conn.SimpleQueue("jobs")
    waiter = gevent.spawn(jobs.get)
    gevent.sleep(0.05)
    jobs.close()
    with gevent.Timeout(10):
        waiter.join()
    assert isinstance(waiter.exception, ConnectionClosed)
    with pytest.raises(ConnectionClosed):
        jobs.get(timeout=1)
    jobs.close()  # twice is fine


def test_a_given_channel_is_used_and_left_open(conn: Connection) -> None:
    channel = conn.channel()
    jobs = conn.SimpleQueue("jobs", channel=channel)
    assert jobs.channel is channel
    jobs.put(1)
    assert jobs.get(timeout=5).payload == 1
    jobs.close()
    assert channel.is_open
    channel.close()


def test_a_closed_connection_is_reported_not_waited_on(conn: Connection) -> None:
    jobs = conn.SimpleQueue("jobs")
    waiter = gevent.spawn(jobs.get, timeout=20)
    gevent.sleep(0.05)
    conn.close()
    with gevent.Timeout(10):
        waiter.join()
    assert isinstance(waiter.exception, ConnectionClosed)


def test_prefetch_count_bounds_what_is_taken_from_the_broker(conn: Connection) -> None:
    with conn.SimpleQueue("jobs", prefetch_count=1) as jobs:
        for i in range(3):
            jobs.put(i)
        first = jobs.get(timeout=5)
        with pytest.raises(Empty):  # the unacked one fills the window
            jobs.get(timeout=0.05)
        first.ack()
        assert jobs.get(timeout=5).payload == 1


def test_simple_buffer_is_transient_and_needs_no_acks(memory_url: str) -> None:
    with Connection(memory_url) as conn:
        with conn.SimpleBuffer("buf") as buf:
            assert isinstance(buf, SimpleBuffer) and buf.no_ack
            assert not buf.queue.durable and buf.queue.auto_delete
            assert not buf.queue.exchange.durable and buf.queue.exchange.auto_delete
            buf.put("x")
            assert buf.get(timeout=5).payload == "x"  # not acked: already gone
            assert buf.qsize() == 0
