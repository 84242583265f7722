"""What the beanstalk transport does beyond the conformance suite.

Delivery: a consumer process killed holding unacked messages loses none; a
job held past its time-to-run goes to another consumer; priorities and
FIFO; fanout to several tubes; reject(requeue=False) buries; an ack that
comes too late is logged, not raised. Errors: unreachable servers and bad
URLs. Every test uses queue names of its own and drops their tubes after.
"""
from __future__ import annotations

import logging
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, List

import gevent
import gevent.subprocess
import greenstalk
import pytest

from kombu_green import Connection, Consumer, Exchange, Producer, Queue
from kombu_green.exceptions import ConfigurationError, OperationalError
from kombu_green.transport.beanstalk.config import tube_name

from ..conformance import WAIT, drain_until
from .beanstalk_support import Space, consume, declare, free_port, publish, quiet, raw_client

pytestmark = pytest.mark.beanstalk


@pytest.fixture
def space() -> Iterator[Space]:
    made = Space()
    yield made
    made.drop_all()


# -- a consumer process that dies ---------------------------------------------------------

CONSUMER_SCRIPT = '''
import sys
import gevent
from kombu_green import Connection, Consumer, Queue

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
held = []
with Connection(url) as conn:
    Consumer(conn.channel(), [Queue(name)], callbacks=[lambda body, message: held.append(body)],
             prefetch_count=count).consume()
    print("consuming", flush=True)
    while len(held) < count:
        conn.drain_events(timeout=10)
    print("holding", len(held), flush=True)
    gevent.sleep(60)  # holds every message unacked until killed
'''

PUBLISHER_SCRIPT = '''
import sys
from kombu_green import Connection, Producer

url, name = sys.argv[1], sys.argv[2]
with Connection(url) as conn:
    Producer(conn.channel()).publish("from another process", routing_key=name)
print("published", flush=True)
'''


EXCHANGE_PUBLISHER_SCRIPT = '''
import sys
from kombu_green import Connection, Exchange, Producer, Queue

url, exchange_name, name, declare = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "declare"
exchange = Exchange(exchange_name, "direct")
with Connection(url) as conn:
    queues = [Queue(name, exchange, routing_key="rk")] if declare else []
    Producer(conn.channel(), exchange).publish(sys.argv[4], routing_key="rk", declare=queues)
print("published", flush=True)
'''


class Child:
    """A script in a process of its own, read line by line, SIGKILLed at the end."""

    def __init__(self, tmp_path: Path, script: str, *args: str) -> None:
        path = tmp_path / "child.py"
        path.write_text(textwrap.dedent(script))
        self.errors = ""
        self.proc = gevent.subprocess.Popen(
            [sys.executable, str(path), *args],
            stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True)

    def says(self, expected: str) -> None:
        with gevent.Timeout(WAIT * 2, AssertionError(f"the child process never said {expected!r}")):
            line = self.proc.stdout.readline()
        if line.strip() != expected:
            self.kill()
            pytest.fail(f"the child process said {line!r}, not {expected!r}: {self.errors}")

    def kill(self) -> None:
        if self.proc.stdout.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.errors = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_a_killed_consumer_process_loses_nothing(space: Space, tmp_path: Path) -> None:
    """A process holding 10 unacked messages is SIGKILLed: beanstalkd releases its jobs,
    and another consumer gets all 10, each once, each marked redelivered."""
    count, name = 10, space.name()
    with space.connect() as conn:
        declare(conn, name)
        child = Child(tmp_path, CONSUMER_SCRIPT, space.url, name, str(count))
        try:
            child.says("consuming")
            publish(conn, name, range(count))
            child.says(f"holding {count}")
            assert space.count(name, "reserved") == count
        finally:
            child.kill()
        received = consume(conn, name)
        drain_until(conn, lambda: len(received) == count)
        quiet(conn, 0.3)
        assert sorted(m.payload for m in received) == list(range(count))
        assert all(m.redelivered for m in received)
    space.wait_for(lambda: space.count(name, "reserved") + space.count(name, "ready") == 0,
                   "every job was deleted by its ack")


def test_the_default_exchange_reaches_a_queue_declared_by_another_process(space: Space,
                                                                          tmp_path: Path) -> None:
    """The publishing process declares nothing: the tube exists because this process's
    connection declared the queue, so the default exchange routes there."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name)
        child = Child(tmp_path, PUBLISHER_SCRIPT, space.url, name)
        try:
            child.says("published")
        finally:
            child.kill()
        drain_until(conn, lambda: received)
        assert [m.payload for m in received] == ["from another process"]


def test_bindings_live_in_the_process_that_declares_them(space: Space, tmp_path: Path) -> None:
    """A process publishing through an exchange routes with its own bindings: without
    declaring the queue (and so its binding) its message reaches no queue; with
    ``publish(..., declare=[queue])`` it arrives."""
    exchange, name = space.name("ex"), space.name()
    with space.connect() as conn:
        Queue(name, Exchange(exchange, "direct"), routing_key="rk")(conn.channel()).declare()
        received = consume(conn, name)
        for mode in ("bare", "declare"):
            child = Child(tmp_path, EXCHANGE_PUBLISHER_SCRIPT, space.url, exchange, name, mode)
            try:
                child.says("published")
            finally:
                child.kill()
        drain_until(conn, lambda: received)
        quiet(conn, 0.3)
        assert [m.payload for m in received] == ["declare"]


# -- time-to-run --------------------------------------------------------------------------


def test_a_job_held_past_its_ttr_goes_to_another_consumer(space: Space,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The holder stays connected but does not ack within ttr=2 s: beanstalkd gives the
    job to another connection (redelivered); the holder's late ack is logged, not raised."""
    name = space.name()
    with space.connect(ttr=2) as holder, space.connect() as other:
        declare(holder, name)
        publish(holder, name, ["slow"])
        held = consume(holder, name, ack=False)
        drain_until(holder, lambda: held)
        assert not held[0].redelivered
        again = consume(other, name, ack=False)
        drain_until(other, lambda: again, timeout=WAIT + 2)
        assert [m.payload for m in again] == ["slow"] and again[0].redelivered
        with caplog.at_level(logging.WARNING, logger="kombu_green.transport.beanstalk"):
            held[0].ack()  # too late: the job is reserved by the other connection now
            again[0].ack()
            quiet(other, 0.3)  # the deletes are sent meanwhile
        assert "ack came too late" in caplog.text
    assert space.count(name, "ready") + space.count(name, "reserved") == 0


def test_jobs_of_many_idle_holders_all_come_back_after_their_ttr(space: Space) -> None:
    """Ten connections each hold a job and stay silent. beanstalkd 1.12 may miss an idle
    connection's time-to-run deadline until the connection speaks again: the transport
    nudges holding connections, so every job comes back (redelivered) all the same."""
    count = 10
    names = [space.name(f"q{n}") for n in range(count)]
    holders = [space.connect(ttr=2) for _ in range(count)]
    try:
        for holder, name in zip(holders, names):
            declare(holder, name)
            publish(holder, name, [name])
            held = consume(holder, name, ack=False)
            drain_until(holder, lambda: held)
        with space.connect() as other:
            again: List[Any] = []
            for name in names:
                Consumer(other.channel(), [Queue(name)],
                         callbacks=[lambda body, m: (again.append(m), m.ack())]).consume()
            drain_until(other, lambda: len(again) == count, timeout=WAIT * 2)
            assert sorted(m.payload for m in again) == sorted(names)
            assert all(m.redelivered for m in again)
    finally:
        for holder in holders:
            holder.close()


# -- priorities and routing ---------------------------------------------------------------


def test_priorities_first_then_fifo(space: Space) -> None:
    """Published mixed, priorities 9, 6, 3 and 0 come out in that order, and the
    messages of one priority in the order they were published."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        producer = Producer(conn.channel())
        sent = [(priority, n) for n in range(3) for priority in (0, 3, 9, 6)]
        for priority, n in sent:
            producer.publish([priority, n], routing_key=name, priority=priority)
        received = consume(conn, name, prefetch_count=1)
        drain_until(conn, lambda: len(received) == len(sent))
    assert [tuple(m.payload) for m in received] == sorted(sent, key=lambda item: (-item[0], item[1]))


def test_fanout_puts_a_job_in_every_bound_tube(space: Space) -> None:
    """No consumer anywhere: each bound queue's tube holds its own copy, consumable later."""
    exchange = Exchange(space.name("fan"), "fanout")
    names = [space.name(f"fan-{n}") for n in range(3)]
    with space.connect() as conn:
        channel = conn.channel()
        for name in names:
            Queue(name, exchange)(channel).declare()
        Producer(channel, exchange).publish({"to": "all"}, routing_key="ignored")
        assert [space.count(name, "ready") for name in names] == [1, 1, 1]
        for name in names:
            received = consume(conn, name)
            drain_until(conn, lambda: received)
            assert received[0].payload == {"to": "all"}
            assert received[0].delivery_info["exchange"] == exchange.name
    assert [space.count(name, "ready") for name in names] == [0, 0, 0]


def test_a_topic_binding_routes_by_pattern(space: Space) -> None:
    exchange = Exchange(space.name("topic"), "topic")
    stock, everything = space.name("stock"), space.name("all")
    with space.connect() as conn:
        channel = conn.channel()
        Queue(stock, exchange, routing_key="*.stock.#")(channel).declare()
        Queue(everything, exchange, routing_key="#")(channel).declare()
        producer = Producer(channel, exchange)
        for key in ("usd.stock", "eur.stock.db", "stock.nasdaq"):
            producer.publish(key, routing_key=key)
    assert (space.count(stock, "ready"), space.count(everything, "ready")) == (2, 3)


# -- reject -------------------------------------------------------------------------------


def test_reject_without_requeue_buries_and_a_kick_brings_it_back(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name, ack=False)
        publish(conn, name, ["bury me"])
        drain_until(conn, lambda: received)
        received[0].reject()
        space.wait_for(lambda: space.count(name, "buried") == 1, "the job is buried")
        quiet(conn, 0.3)  # a buried job is not delivered
        with raw_client() as raw:
            raw.use(tube_name(name))
            assert raw.kick(10) == 1
        drain_until(conn, lambda: len(received) == 2)
        assert received[1].payload == "bury me" and received[1].redelivered
        received[1].ack()
    assert space.count(name, "buried") + space.count(name, "ready") == 0


def test_requeue_releases_the_job_ahead_of_later_ones(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, ["first", "second"])
        received = consume(conn, name, ack=False, prefetch_count=1)
        drain_until(conn, lambda: received)
        received[0].requeue()
        drain_until(conn, lambda: len(received) == 2)
        assert received[1].payload == "first" and received[1].redelivered
        received[1].ack()
        drain_until(conn, lambda: len(received) == 3)
        assert received[2].payload == "second" and not received[2].redelivered
        received[2].ack()


def test_deleting_a_queue_drops_buried_jobs_too(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name, ack=False)
        publish(conn, name, ["buried", "ready"])
        drain_until(conn, lambda: len(received) == 2)
        received[0].reject()
        received[1].requeue()
        Queue(name)(conn.channel()).delete()
    assert space.stats(name) is None


def test_jobs_of_other_beanstalk_clients_arrive_as_raw_bytes(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        received = consume(conn, name)
        with raw_client() as raw:
            raw.use(tube_name(name))
            raw.put(b"plain job", priority=2 ** 31 - 5)
        drain_until(conn, lambda: received)
    message = received[0]
    assert message.body == b"plain job" and message.content_type == "application/data"
    assert message.properties["priority"] == 5


def test_queue_names_beanstalk_refuses_still_work(space: Space) -> None:
    name = space.name("video @ host #1")
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, ["odd name"])
        assert space.count(name, "ready") == 1
        message = Queue(name)(conn.channel()).get()
        assert message is not None and message.payload == "odd name"
        message.ack()


# -- errors -------------------------------------------------------------------------------


def test_an_unreachable_server_is_an_operational_error_naming_host_and_port() -> None:
    port = free_port()
    conn = Connection(f"beanstalk://127.0.0.1:{port}", connect_timeout=2)
    with pytest.raises(OperationalError, match=f"127.0.0.1:{port}") as caught:
        Producer(conn.channel())
    assert "Cannot reach beanstalkd" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize("url", ["beanstalk://127.0.0.1:11300/vhost", "beanstalk://127.0.0.1:port",
                                 "beanstalk://127.0.0.1:11300?ttr=0",
                                 "beanstalk://127.0.0.1:11300?max_connections=none"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Connection(url).connect()


def test_a_message_too_big_for_beanstalkd_names_its_size(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        producer = Producer(conn.channel())
        with pytest.raises(Exception, match=r"maximum job size.*-z") as caught:
            producer.publish(b"x" * 100_000, routing_key=name)
        assert "bytes" in str(caught.value)
        producer.publish("still fine", routing_key=name)  # the connection is in step
        assert space.count(name, "ready") == 1


def test_many_greenlets_publish_through_two_command_connections(space: Space) -> None:
    name, greenlets, each = space.name(), 50, 20
    with space.connect(max_connections=2) as conn:
        declare(conn, name)
        producer = Producer(conn.channel())
        received: List[Any] = []
        Consumer(conn.channel(), [Queue(name)],
                 callbacks=[lambda body, m: (received.append(tuple(body)), m.ack())]).consume()
        publishers = [gevent.spawn(lambda g=g: [producer.publish([g, i], routing_key=name)
                                                for i in range(each)]) for g in range(greenlets)]
        drain_until(conn, lambda: len(received) == greenlets * each, timeout=WAIT * 4)
        gevent.joinall(publishers, raise_error=True)
        assert len(conn.connection.store.pool.open) <= 2
    assert sorted(received) == [(g, i) for g in range(greenlets) for i in range(each)]


def test_holding_many_unacked_messages_takes_few_connections(space: Space) -> None:
    """100 unacked messages, taken in batches, are all held by one reserving connection."""
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, range(100))
        received = consume(conn, name, ack=False, prefetch_count=100)
        drain_until(conn, lambda: len(received) == 100)
        store = conn.connection.store
        assert len([r for r in store.held.reservers if r.held]) == 1
        assert len(store.held.reservers) <= 3
        for message in received:
            message.ack()
    assert space.count(name, "ready") + space.count(name, "reserved") == 0


def test_closing_leaves_nothing_reserved(space: Space) -> None:
    name = space.name()
    with space.connect() as conn:
        declare(conn, name)
        publish(conn, name, range(50))
        consume(conn, name, ack=False, prefetch_count=100)
        for _ in range(4):
            conn.drain_events(timeout=WAIT)
        assert space.count(name, "reserved") > 4, "expected jobs fetched ahead of delivery"
    space.wait_for(lambda: space.count(name, "reserved") == 0, "every job released")
    assert space.count(name, "ready") == 50
    with space.connect() as conn:
        again = consume(conn, name)
        drain_until(conn, lambda: len(again) == 50)
    assert sorted(m.payload for m in again) == list(range(50))
    assert all(m.redelivered for m in again if m.payload in (0, 1, 2, 3))
    with pytest.raises(greenstalk.NotFoundError):
        with raw_client() as raw:
            raw.stats_tube(tube_name(name))
