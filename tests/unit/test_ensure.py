"""Retrying, failover and revival logic, on a memory broker that fails on demand.

The real broker restarts are in tests/integration/test_resilience.py; here a
memory transport refuses connections or operations a set number of times,
so every branch of the retry logic runs in milliseconds.
"""
from __future__ import annotations

import itertools
import socket
from typing import Any, Iterator, List

import gevent
import pytest

from kombu_green import Connection, Consumer, Producer, Queue
from kombu_green.exceptions import ConfigurationError, NotFound, OperationalError
from kombu_green.retry import failover_cycle, intervals, retry_over_time


@pytest.fixture
def conn(flaky_conn: Connection) -> Connection:
    return flaky_conn


def lose_connection(conn: Connection) -> None:
    """What a broker going away looks like to the virtual transport."""
    conn.transport._connected = False


# -- retry_over_time and the intervals ------------------------------------------------


def test_intervals_grow_by_step_up_to_the_maximum() -> None:
    assert list(itertools.islice(intervals(1, 2, 6), 5)) == [1, 3, 5, 6, 6]


def test_retry_over_time_retries_until_success_and_reports_each_failure() -> None:
    calls: List[int] = []
    told: List[float] = []

    def fun() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("down")
        return "up"

    result = retry_over_time(fun, OperationalError, errback=lambda exc, interval: told.append(interval),
                             interval_start=0, interval_step=0.01, interval_max=0.01)
    assert result == "up" and len(calls) == 3 and told == [0, 0.01]


def test_retry_over_time_gives_up_after_max_retries() -> None:
    calls: List[int] = []

    def fun() -> None:
        calls.append(1)
        raise OperationalError("down")

    with pytest.raises(OperationalError):
        retry_over_time(fun, OperationalError, max_retries=2, interval_start=0, errback=lambda *a: None)
    assert len(calls) == 3


def test_retry_over_time_lets_other_errors_through() -> None:
    with pytest.raises(KeyError):
        retry_over_time(lambda: {}["x"], OperationalError)


def test_retry_over_time_stops_at_its_timeout() -> None:
    def fun() -> None:
        raise OperationalError("down")

    with gevent.Timeout(5):
        with pytest.raises(OperationalError):
            retry_over_time(fun, OperationalError, interval_start=0.05, interval_step=0,
                            timeout=0.2, errback=lambda *a: None)


def test_pauses_between_retries_let_other_greenlets_run() -> None:
    ticks: List[int] = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0.01) for _ in range(1000)])
    with pytest.raises(OperationalError):
        retry_over_time(lambda: (_ for _ in ()).throw(OperationalError("down")), OperationalError,
                        max_retries=3, interval_start=0.05, interval_step=0, errback=lambda *a: None)
    ticker.kill()
    assert len(ticks) >= 5  # the hub ran the ticker during the 0.15 s of pauses


def test_callback_runs_while_pausing_and_can_abort() -> None:
    class Abort(Exception):
        pass

    def callback() -> None:
        raise Abort()

    with pytest.raises(Abort):
        retry_over_time(lambda: (_ for _ in ()).throw(OperationalError("down")), OperationalError,
                        interval_start=5, callback=callback, errback=lambda *a: None)


# -- failover order --------------------------------------------------------------------


def test_round_robin_goes_through_the_urls_in_order() -> None:
    assert list(itertools.islice(failover_cycle("round-robin", ["a", "b", "c"]), 7)) == list("abcabca")


def test_shuffle_visits_every_url_each_round_and_never_repeats_one_back_to_back() -> None:
    order = list(itertools.islice(failover_cycle("shuffle", ["a", "b", "c"]), 300))
    for start in range(0, 300, 3):
        assert sorted(order[start:start + 3]) == ["a", "b", "c"]
    assert all(first != second for first, second in zip(order, order[1:]))


def test_a_callable_strategy_is_used_as_is() -> None:
    def backwards(urls: Any) -> Iterator[str]:
        return itertools.cycle(list(reversed(urls)))

    assert next(failover_cycle(backwards, ["a", "b"])) == "b"


def test_an_unknown_strategy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="round-robin"):
        failover_cycle("random-walk", ["a", "b"])


# -- Connection.ensure_connection and default_channel ---------------------------------


def test_ensure_connection_retries_until_the_broker_answers(conn: Connection, flaky: Any) -> None:
    flaky.refusals = 3
    told: List[float] = []
    assert conn.ensure_connection(errback=lambda exc, interval: told.append(interval),
                                  interval_start=0, interval_step=0.01) is conn
    assert conn.connected and flaky.attempts == 4 and len(told) == 3


def test_ensure_connection_raises_the_last_error_after_max_retries(conn: Connection, flaky: Any) -> None:
    flaky.refusals = 10
    with pytest.raises(OperationalError, match="refused"):
        conn.ensure_connection(max_retries=2, interval_start=0, errback=lambda *a: None)
    assert flaky.attempts == 3


def test_default_channel_tries_once_without_a_retry_policy(conn: Connection, flaky: Any) -> None:
    flaky.refusals = 1
    with pytest.raises(OperationalError):
        conn.default_channel  # noqa: B018
    assert flaky.attempts == 1


def test_default_channel_honours_max_retries_in_transport_options(flaky: Any, memory_url: str) -> None:
    flaky.refusals = 2
    with Connection(hostname=memory_url.split("://")[1], transport=flaky,
                    transport_options={"max_retries": 3, "interval_start": 0, "interval_step": 0}) as conn:
        assert conn.default_channel.is_open
    assert flaky.attempts == 3


def test_failover_moves_to_the_next_url_when_one_is_down(memory_url: str) -> None:
    with Connection(f"amqp://guest:guest@127.0.0.1:1//;{memory_url}", connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, errback=lambda *a: None)
        assert conn.as_uri() == memory_url + "/" or conn.as_uri().startswith(memory_url)
        assert conn.transport_cls == "memory"


def test_default_channel_fails_over_without_a_retry_policy(memory_url: str) -> None:
    with Connection(["amqp://guest:guest@127.0.0.1:1//", memory_url], connect_timeout=2) as conn:
        assert conn.default_channel.is_open
        assert conn.transport_cls == "memory"


def test_every_failover_url_down_raises_after_one_round() -> None:
    conn = Connection("amqp://guest:guest@127.0.0.1:1//;amqp://guest:guest@127.0.0.1:2//", connect_timeout=2)
    with pytest.raises(OperationalError, match="127.0.0.1"):
        conn.default_channel  # noqa: B018


# -- Connection.ensure -------------------------------------------------------------------


def test_ensure_reconnects_revives_and_retries(conn: Connection, flaky: Any) -> None:
    producer = Producer(conn)
    first_channel = producer.channel
    revived: List[Any] = []
    calls: List[int] = []

    def publish() -> str:
        calls.append(1)
        if len(calls) == 1:
            lose_connection(conn)
            raise OperationalError("connection lost (test)")
        producer.publish({"n": 1}, routing_key="q")
        return "sent"

    flaky.refusals = 2  # the broker is still down for two attempts
    ensured = conn.ensure(producer, publish, on_revive=revived.append, interval_start=0, interval_step=0)
    assert ensured() == "sent"
    assert producer.channel is not first_channel and producer.channel.is_open
    assert revived == [producer.channel]


def test_ensure_does_not_retry_channel_errors_or_timeouts(conn: Connection) -> None:
    calls: List[int] = []

    def missing() -> None:
        calls.append(1)
        raise NotFound("no such queue")

    with pytest.raises(NotFound):
        conn.ensure(None, missing)()
    with pytest.raises(socket.timeout):
        conn.ensure(None, conn.drain_events)(timeout=0.01)
    assert calls == [1] and conn._generation == 1


def test_ensure_gives_up_after_max_retries(conn: Connection) -> None:
    def down() -> None:
        raise OperationalError("down")

    with pytest.raises(OperationalError):
        conn.ensure(None, down, max_retries=2, interval_start=0)()
    assert conn._generation == 2  # the two reconnections (the call itself never connected)


def test_ensure_does_not_revive_a_connection_closed_on_purpose(conn: Connection) -> None:
    conn.connect()

    def closed_meanwhile() -> None:
        conn.close()
        raise OperationalError("closed")

    with pytest.raises(OperationalError):
        conn.ensure(None, closed_meanwhile)()
    assert not conn.connected


def test_greenlets_failing_together_reconnect_once(conn: Connection) -> None:
    conn.connect()
    generation = conn._generation
    failed = gevent.event.Event()

    def worker() -> str:
        if not failed.is_set():
            gevent.sleep(0)  # all ten fail on the same (old) connection
            failed.set()
            raise OperationalError("connection lost (test)")
        return "ok"

    def run() -> str:
        return conn.ensure(None, worker, interval_start=0)()

    lose_connection(conn)
    results = [g.get() for g in gevent.joinall([gevent.spawn(run) for _ in range(10)], raise_error=True)]
    assert results == ["ok"] * 10
    assert conn._generation == generation + 1


def test_a_consumer_consumes_again_after_a_reconnection(conn: Connection) -> None:
    got: List[Any] = []
    queue = Queue("revive-me")
    consumer = Consumer(conn, [queue], callbacks=[lambda body, message: (got.append(body), message.ack())])
    consumer.consume()
    drain = conn.ensure(consumer, conn.drain_events, interval_start=0)
    conn.collect()  # the connection is gone; the store (a memory broker) keeps the queue
    Producer(conn.clone()).publish({"n": 1}, routing_key="revive-me")
    lose_connection(conn)
    drain(timeout=5)
    assert got == [{"n": 1}]
    assert consumer.channel is conn.default_channel


def test_publish_with_retry_delivers_once_after_a_lost_connection(conn: Connection) -> None:
    producer = Producer(conn)
    Queue("retried")(conn.default_channel).declare()
    real = producer.channel.basic_publish
    failures = [OperationalError("connection lost (test)")]

    def basic_publish(*args: Any, **kwargs: Any) -> Any:
        if failures:
            lose_connection(conn)
            raise failures.pop()
        return real(*args, **kwargs)

    producer.channel.basic_publish = basic_publish
    producer.publish({"n": 1}, routing_key="retried", retry=True, retry_policy={"interval_start": 0})
    message = Queue("retried")(conn.default_channel).get(no_ack=True)
    assert message is not None and message.decode() == {"n": 1}
    assert Queue("retried")(conn.default_channel).get(no_ack=True) is None


def test_autoretry_passes_the_channel_and_returns_it(conn: Connection) -> None:
    calls: List[Any] = []

    def declare(name: str, channel: Any = None) -> str:
        calls.append(channel)
        if len(calls) == 1:
            lose_connection(conn)
            raise OperationalError("connection lost (test)")
        return Queue(name)(channel).declare()

    result, channel = conn.autoretry(declare, interval_start=0)("declared")
    assert result == "declared" and channel is calls[-1] and channel.is_open


# -- messages a failed close could not give back -----------------------------------------


def test_unacked_messages_a_dead_store_kept_come_back_on_the_next_connection(conn: Connection) -> None:
    channel = conn.default_channel
    Queue("kept")(channel).declare()
    Producer(channel).publish({"n": 1}, routing_key="kept")
    message = Queue("kept")(channel).get()
    assert message is not None
    store = conn.transport.store
    real = store.requeue

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("store unreachable (test)")

    store.requeue = unreachable  # type: ignore[method-assign]
    conn.collect()  # close fails to requeue: the message is kept as an orphan
    store.requeue = real  # type: ignore[method-assign]
    assert len(conn.transport.orphans) == 1
    again = Queue("kept")(conn.default_channel).get(no_ack=True)
    assert again is not None and again.redelivered and again.decode() == {"n": 1}
    assert not conn.transport.orphans


@pytest.mark.parametrize("copy", ["clone", "pickle"])
def test_a_copy_of_a_failover_connection_fails_over_the_same_way(copy: str) -> None:
    import pickle

    original = Connection("amqp://u:p@h1:5673//;amqp://u:p@h2//", failover_strategy="round-robin")
    made = original.clone() if copy == "clone" else pickle.loads(pickle.dumps(original))
    assert made.alt == original.alt and (made.hostname, made.port) == ("h1", 5673)
    made.maybe_switch_next()
    assert (made.hostname, made.port) == ("h2", 5672)  # h1's port is not carried over
