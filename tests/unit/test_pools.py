"""Connection, channel and producer pools on memory://, and the per-URL groups."""
from __future__ import annotations

import importlib.util
import os
import pickle
import socket
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, List

import gevent
import pytest

from kombu_green import Connection, Consumer, Producer, Queue, pools
from kombu_green.exceptions import ChannelLimitExceeded, ConnectionLimitExceeded, LimitExceeded, OperationalError

GUARD = 10  # seconds: bounds a test that would otherwise hang


@pytest.fixture(autouse=True)
def fresh_groups() -> Iterator[None]:
    """Every test starts with empty groups and the default limit."""
    pools.reset()
    pools.set_limit(pools.DEFAULT_LIMIT)
    with gevent.Timeout(GUARD):
        yield
    pools.reset()
    pools.set_limit(pools.DEFAULT_LIMIT)


def received(url: str, name: str) -> List[object]:
    """Every body waiting in queue ``name`` (acked)."""
    bodies: List[object] = []
    with Connection(url) as conn:
        with Consumer(conn, [Queue(name)], callbacks=[lambda body, m: (bodies.append(body), m.ack())]):
            while True:
                try:
                    conn.drain_events(timeout=0.1)
                except socket.timeout:
                    return bodies


# -- ConnectionPool -----------------------------------------------------------------------


def test_creating_and_acquiring_do_not_connect(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=2)
    conn = pool.acquire()
    assert not conn.connected
    assert conn.as_uri() == Connection(memory_url).as_uri()
    conn.release()


def test_a_released_connection_stays_connected_and_is_reused(memory_url: str) -> None:
    template = Connection(memory_url)
    pool = pools.ConnectionPool(template, limit=2)
    with pool.acquire() as conn:
        conn.connect()
    assert conn.connected and conn is not template and not template.connected
    with pool.acquire() as again:
        assert again is conn
    pool.force_close_all()
    assert not conn.connected


def test_the_limit_refuses_without_blocking(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=2)
    held = [pool.acquire(), pool.acquire()]
    with pytest.raises(ConnectionLimitExceeded):
        pool.acquire()
    assert issubclass(ConnectionLimitExceeded, LimitExceeded)
    held[0].release()
    assert pool.acquire() is held[0]


def test_a_blocking_acquire_times_out(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    pool.acquire()
    with pytest.raises(ConnectionLimitExceeded):
        pool.acquire(block=True, timeout=0.05)


def test_waiting_blocks_only_the_calling_greenlet(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    holder = pool.acquire()
    ticks = []

    def ticker() -> None:
        while len(ticks) < 5:
            ticks.append(1)
            gevent.sleep(0.001)
        holder.release()  # only once the ticker ran while the waiter waited

    waiter = gevent.spawn(pool.acquire, block=True)
    gevent.spawn(ticker)
    assert waiter.get() is holder
    assert len(ticks) == 5


def test_waiters_are_served_in_order(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    conn = pool.acquire()
    order: List[int] = []

    def wait(n: int) -> None:
        with pool.acquire(block=True):
            order.append(n)
            gevent.sleep(0)

    waiters = [gevent.spawn(wait, n) for n in range(5)]
    gevent.sleep(0)
    conn.release()
    gevent.joinall(waiters, raise_error=True)
    assert order == list(range(5))


def test_a_waiter_killed_or_timed_out_gives_no_slot_away(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    conn = pool.acquire()
    killed = gevent.spawn(pool.acquire, block=True)
    gevent.sleep(0)
    killed.kill()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.01):
            pool.acquire(block=True)
    conn.release()
    assert pool.acquire() is conn
    with pytest.raises(ConnectionLimitExceeded):
        pool.acquire()


def test_an_error_in_the_with_block_replaces_the_connection(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    with pytest.raises(ZeroDivisionError):
        with pool.acquire() as conn:
            conn.connect()
            _ = 1 / 0
    assert not conn.connected
    with pool.acquire() as fresh:
        assert fresh is not conn and not fresh.connected
        fresh.connect()  # and it works


def test_a_connection_found_dead_is_replaced(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    with pool.acquire() as conn:
        conn.connect()
    conn.transport._connected = False  # the broker link is gone while it was idle
    with pool.acquire() as fresh:
        assert fresh is not conn
        Producer(fresh).publish({"ok": 1}, routing_key="q")


def test_release_twice_and_release_after_close_are_harmless(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    conn = pool.acquire()
    conn.release()
    conn.release()
    other = pool.acquire()
    assert other is conn
    pool.force_close_all()
    other.release()
    with pytest.raises(RuntimeError):
        pool.acquire()


def test_closing_the_pool_wakes_its_waiters(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    pool.acquire()
    waiters = [gevent.spawn(pool.acquire, block=True) for _ in range(3)]
    gevent.sleep(0)
    pool.force_close_all()
    gevent.joinall(waiters)
    assert all(isinstance(w.exception, RuntimeError) for w in waiters)


def test_an_unlimited_pool_lends_any_number_and_reuses(memory_url: str) -> None:
    for limit in (None, 0):
        pool = pools.ConnectionPool(Connection(memory_url), limit=limit)
        held = [pool.acquire() for _ in range(50)]
        assert len(set(map(id, held))) == 50 and pool.limit is None
        for conn in held:
            conn.release()
        assert pool.acquire() is held[-1]


def test_resize(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    first = pool.acquire()
    waiter = gevent.spawn(pool.acquire, block=True)
    gevent.sleep(0)
    pool.resize(2)  # the waiter gets the new slot
    second = waiter.get()
    assert second is not first
    pool.resize(1)
    first.release()
    with pytest.raises(ConnectionLimitExceeded):  # still one too many lent
        pool.acquire()
    second.release()
    assert pool.acquire() in (first, second)


def test_a_lent_connection_pickles_as_a_plain_connection(memory_url: str) -> None:
    pool = pools.ConnectionPool(Connection(memory_url), limit=1)
    with pool.acquire() as conn:
        copy = pickle.loads(pickle.dumps(conn))
    assert type(copy) is Connection and copy.as_uri() == conn.as_uri()
    copy.release()  # a real close: the copy belongs to no pool
    assert pool.acquire() is conn


def test_connection_pool_method(conn: Connection) -> None:
    pool = conn.Pool(limit=3)
    assert isinstance(pool, pools.ConnectionPool) and pool.limit == 3


# -- ChannelPool --------------------------------------------------------------------------


def test_channel_pool(conn: Connection) -> None:
    pool = conn.ChannelPool(limit=2)
    assert not conn.connected
    with pool.acquire() as channel:
        assert channel.is_open and conn.connected
    assert pool.acquire() is channel
    pool.acquire()
    with pytest.raises(ChannelLimitExceeded):
        pool.acquire()
    with pytest.raises(ChannelLimitExceeded):
        pool.acquire(block=True, timeout=0.01)


def test_channel_pool_replaces_closed_and_failed_channels(conn: Connection) -> None:
    pool = pools.ChannelPool(conn, limit=1)
    with pool.acquire() as channel:
        pass
    channel.close()
    with pytest.raises(KeyError):
        with pool.acquire() as other:
            assert other is not channel and other.is_open
            raise KeyError("boom")
    assert not other.is_open
    with pool.acquire() as third:
        assert third not in (channel, other) and third.is_open


# -- ProducerPool -------------------------------------------------------------------------


def test_producer_pool_publishes_and_returns_the_connection(memory_url: str) -> None:
    Queue("jobs")(Connection(memory_url).channel()).declare()
    connections = pools.ConnectionPool(Connection(memory_url), limit=2)
    producers = pools.ProducerPool(connections)
    assert producers.limit == 2
    with producers.acquire(block=True) as producer:
        assert isinstance(producer, Producer)
        conn = producer.connection
        producer.publish({"n": 1}, routing_key="jobs")
    assert producer.connection is None
    assert connections.acquire() is conn  # given back, still connected
    assert conn.connected
    assert received(memory_url, "jobs") == [{"n": 1}]


def test_producer_pool_limit_and_timeout(memory_url: str) -> None:
    producers = pools.ProducerPool(pools.ConnectionPool(Connection(memory_url), limit=5), limit=1)
    producers.acquire()
    with pytest.raises(ConnectionLimitExceeded):
        producers.acquire()
    with pytest.raises(ConnectionLimitExceeded):
        producers.acquire(block=True, timeout=0.01)


def test_producer_pool_waits_for_a_connection(memory_url: str) -> None:
    connections = pools.ConnectionPool(Connection(memory_url), limit=1)
    producers = pools.ProducerPool(connections, limit=3)
    held = connections.acquire()
    with pytest.raises(ConnectionLimitExceeded):
        producers.acquire(block=True, timeout=0.01)
    gevent.spawn_later(0.01, held.release)
    with producers.acquire(block=True, timeout=GUARD) as producer:
        assert producer.connection is held


def test_an_error_while_publishing_replaces_the_producers_connection(memory_url: str) -> None:
    connections = pools.ConnectionPool(Connection(memory_url), limit=1)
    producers = pools.ProducerPool(connections)
    with pytest.raises(RuntimeError):
        with producers.acquire() as producer:
            conn = producer.connection
            raise RuntimeError("request failed")
    assert not conn.connected
    with producers.acquire() as producer:
        assert producer.connection is not conn
        producer.publish("fine", routing_key="anywhere")


def test_a_released_producer_does_not_follow_its_old_connection(memory_url: str) -> None:
    if not hasattr(Connection, "revive_attached"):
        pytest.skip("Connection.revive_attached is not there yet")
    producers = pools.ProducerPool(pools.ConnectionPool(Connection(memory_url), limit=1))
    with producers.acquire() as producer:
        conn = producer.connection
    conn.revive_attached()  # as after a reconnection: lent objects move along, idle ones not
    assert producer.connection is None and producer.channel is None


# -- the groups ---------------------------------------------------------------------------


def test_groups_have_one_pool_per_url_and_options(memory_url: str) -> None:
    pool = pools.producers[memory_url]
    assert pools.producers[memory_url] is pool
    assert pools.producers[Connection(memory_url)] is pool
    assert pools.connections[memory_url] is pool.connections
    assert pools.producers[memory_url + "-other"] is not pool
    tuned = Connection(memory_url, transport_options={"polling_interval": 1})
    assert pools.producers[tuned] is not pool
    assert pools.producers[Connection(memory_url, transport_options={"polling_interval": 1})] \
        is pools.producers[tuned]
    assert pool.limit == pools.get_limit() == pools.DEFAULT_LIMIT == 10


def test_set_limit_resizes_and_reset_closes(memory_url: str) -> None:
    pool = pools.connections[memory_url]
    pools.set_limit(2)
    assert pools.get_limit() == 2 and pool.limit == 2
    assert pools.producers[memory_url].limit == 2
    held = [pool.acquire(), pool.acquire()]
    with pytest.raises(ConnectionLimitExceeded):
        pool.acquire()
    held[0].connect()
    pools.reset()
    assert not held[0].connected
    assert pools.connections[memory_url] is not pool
    assert pools.connections[memory_url].acquire() is not held[0]


def test_with_producers_acquire_publishes(memory_url: str) -> None:
    """The documented idiom, from many greenlets through a pool of 3."""
    pools.set_limit(3)
    Queue("tasks")(Connection(memory_url).channel()).declare()

    def publish(n: int) -> None:
        with pools.producers[memory_url].acquire(block=True, timeout=GUARD) as producer:
            gevent.sleep(0)
            producer.publish({"n": n}, routing_key="tasks")

    gevent.joinall([gevent.spawn(publish, n) for n in range(30)], raise_error=True)
    assert sorted(body["n"] for body in received(memory_url, "tasks")) == list(range(30))
    assert len({id(c) for c in pools.connections[memory_url]._free}) <= 3


def test_a_forked_child_forgets_the_parents_pools(memory_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = pools.connections[memory_url]
    conn = pool.acquire()
    conn.connect()
    conn.release()
    monkeypatch.setattr(pools.os, "getpid", lambda: -1)  # as in a child after fork()
    assert pools.connections[memory_url] is not pool
    assert conn.connected  # left alone: its socket would be the parent's


# -- the gunicorn and worker-pool examples, in-process on memory:// ----------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(app: Any, path: str, query: str = "") -> tuple:
    """One WSGI request: (status, body text)."""
    seen = []
    body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query},
                        lambda status, headers: seen.append(status)))
    return seen[0], body.decode()


def test_the_gunicorn_example_publishes_and_the_worker_pool_consumes(
        memory_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMBU_GREEN_URL", memory_url)
    monkeypatch.setenv("KOMBU_GREEN_QUEUE", "web")
    app = load_example("gunicorn_app")
    assert not pools.connections[app.connection]._free  # importing connected nothing
    calls = [gevent.spawn(call, app.app, "/publish", f"id={n}") for n in range(40)]
    gevent.joinall(calls, raise_error=True)
    assert {c.value for c in calls} == {("200 OK", f"published {n}\n") for n in range(40)}
    lines: List[str] = []
    handled = load_example("worker_pool").run(memory_url, "web", workers=4, count=40,
                                                report=lines.append)
    assert sorted(int(body["id"]) for body in handled) == list(range(40))
    assert len(lines) == 40 and received(memory_url, "web") == []


def test_the_gunicorn_example_answers_503_when_the_broker_is_down(
        memory_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMBU_GREEN_URL", memory_url)
    app = load_example("gunicorn_app")
    assert call(app.app, "/health") == ("200 OK", f"ok (worker {os.getpid()})\n")
    assert call(app.app, "/publish")[0] == "400 Bad Request"
    assert call(app.app, "/elsewhere")[0] == "404 Not Found"
    for error in (OperationalError("Connection refused"), ConnectionLimitExceeded("all busy")):
        def fail(request_id: str, error: Exception = error) -> None:
            raise error
        monkeypatch.setattr(app, "publish", fail)
        status, text = call(app.app, "/publish", "id=7")
        assert status == "503 Service Unavailable"
        assert ("unreachable" in text) if isinstance(error, OperationalError) else ("busy" in text)
