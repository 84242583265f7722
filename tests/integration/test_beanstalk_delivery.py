"""The beanstalk transport's at-least-once delivery.

A consumer process killed holding unacked messages loses none; a job held
past its time-to-run goes to another consumer, redelivered, and the late
ack is logged, not raised; bindings live in the declaring process while
the default exchange works across processes. Every test uses queue names
of its own and drops their tubes after.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from kombu_green import Consumer, Exchange, Queue

from ..conformance import WAIT, drain_until
from .beanstalk_support import Space
from .broker_helpers import ChildProcess, consume, declare, publish, quiet

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


def test_a_killed_consumer_process_loses_nothing(space: Space, tmp_path: Path) -> None:
    """A process holding 10 unacked messages is SIGKILLed: beanstalkd releases its jobs,
    and another consumer gets all 10, each once, each marked redelivered."""
    count, name = 10, space.name()
    with space.connect() as conn:
        declare(conn, name)
        child = ChildProcess(tmp_path, CONSUMER_SCRIPT, space.url, name, str(count))
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
        child = ChildProcess(tmp_path, PUBLISHER_SCRIPT, space.url, name)
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
            child = ChildProcess(tmp_path, EXCHANGE_PUBLISHER_SCRIPT, space.url, exchange, name, mode)
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
            drain_until(holder, lambda held=held: held)
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
