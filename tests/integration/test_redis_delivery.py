"""The Redis transport's at-least-once delivery.

A message taken from a queue is recorded in Redis until it is acked, and
comes back -- marked redelivered, exactly once -- when its consumer
closes, is SIGKILLed, or simply holds it past the visibility timeout,
however many connections run restorers.

Every test works under a key prefix of its own (see :mod:`.redis_keyspace`),
so short visibility timeouts only ever restore the test's own messages.
"""
from __future__ import annotations

import collections
from pathlib import Path

import gevent
import pytest

from kombu_green import Connection, Consumer, Queue

from ..conformance import WAIT, drain_until
from .broker_helpers import ChildProcess, consume, declare, publish, quiet
from .redis_keyspace import Keyspace

pytestmark = pytest.mark.redis

#: Restore leases held longer than 1 s, looking every 0.2 s.
SHORT_LEASES = {"visibility_timeout": 1, "unacked_restore_interval": 0.2}


# -- visibility timeout -------------------------------------------------------------------


def test_an_unacked_message_comes_back_after_the_visibility_timeout(space: Keyspace) -> None:
    """The holder's restorer runs in the background: while the holder's connection stays
    open and idle, another connection gets the message back, redelivered, exactly once."""
    with space.connect(**SHORT_LEASES) as holder, space.connect() as other:
        declare(holder, "q")
        held = consume(holder, "q", ack=False)
        publish(holder, "q", ["lease me"])
        drain_until(holder, lambda: held)
        assert not held[0].redelivered

        # ``other`` restores nothing itself (one-hour leases, a restorer that wakes
        # once a minute): only the idle holder's restorer can bring the message back.
        again = consume(other, "q")
        drain_until(other, lambda: again)
        assert [m.payload for m in again] == ["lease me"] and again[0].redelivered
        quiet(other, 1.5)

        held[0].reject(requeue=True)  # too late: the lease was restored, nothing goes back twice
    with space.connect() as after:
        assert Queue("q")(after.channel()).get() is None
    assert space.unacked() == 0


def test_no_message_is_restored_twice_by_competing_restorers(space: Keyspace) -> None:
    """Three connections restore the same expired leases every 0.05 s: each message is
    delivered exactly once over many restore rounds, and the holder's close adds nothing."""
    total = 150
    fast = {"visibility_timeout": 0.5, "unacked_restore_interval": 0.05}
    with space.connect() as holder:  # one-hour leases: it never restores anything itself
        declare(holder, "q")
        publish(holder, "q", range(total))
        held = consume(holder, "q", ack=False)
        drain_until(holder, lambda: len(held) == total)
        assert space.unacked() == total

        seen: "collections.Counter[int]" = collections.Counter()
        connections = [space.connect(**fast) for _ in range(3)]
        try:
            def work(conn: Connection) -> None:
                Consumer(conn.channel(), [Queue("q")], callbacks=[
                    lambda body, message: (seen.update([body]), message.ack())]).consume()
                drain_until(conn, lambda: sum(seen.values()) >= total, timeout=WAIT * 2)
                quiet(conn, 1.0)  # 20 more restore rounds each

            workers = [gevent.spawn(work, conn) for conn in connections]
            gevent.joinall(workers, timeout=WAIT * 3, raise_error=True)
            assert all(worker.successful() for worker in workers)
        finally:
            for conn in connections:
                conn.close()
    assert set(seen) == set(range(total)) and set(seen.values()) == {1}
    assert space.unacked() == 0 and space.raw.llen(space.list_key("q")) == 0


# -- a consumer process that dies ---------------------------------------------------------

CONSUMER_SCRIPT = '''
import sys
import gevent
from kombu_green import Connection, Consumer, Queue

url, prefix, name, count, mode = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
held = []
with Connection(url, transport_options={"global_keyprefix": prefix}) as conn:
    Consumer(conn.channel(), [Queue(name)], callbacks=[lambda body, message: held.append(body)]).consume()
    if mode == "interrupted":
        with gevent.Timeout(0.3, False):  # an interrupted wait, then no more draining
            conn.drain_events()
        print("interrupted", flush=True)
    else:
        print("consuming", flush=True)
        while len(held) < count:
            conn.drain_events(timeout=10)
        print("holding", len(held), flush=True)
    gevent.sleep(60)  # holds every message unacked until killed
'''


def test_a_killed_consumer_process_loses_nothing(space: Keyspace, tmp_path: Path) -> None:
    """A process holding 10 unacked messages (whether its blocking pop or a batch took
    them) is SIGKILLed: all 10 come back, each redelivered, each exactly once."""
    count = 10
    with space.connect(**SHORT_LEASES) as conn:
        declare(conn, "q")
        child = ChildProcess(tmp_path, CONSUMER_SCRIPT, space.url, space.prefix, "q", str(count), "hold",
                             role="consumer")
        try:
            child.says("consuming")
            publish(conn, "q", range(count))
            child.says(f"holding {count}")
            assert space.unacked() == count
        finally:
            child.kill()
        received = consume(conn, "q")
        drain_until(conn, lambda: len(received) == count)
        quiet(conn, 1.5)
        assert sorted(m.payload for m in received) == list(range(count))
        assert all(m.redelivered for m in received)
    assert space.unacked() == 0


def test_a_killed_process_whose_wait_was_interrupted_loses_nothing(space: Keyspace, tmp_path: Path) -> None:
    """drain_events interrupted by gevent.Timeout, then the process does something else:
    a message published right after stays in the queue or is recorded as unacked
    (never only in the process), so a SIGKILL loses nothing."""
    with space.connect(**SHORT_LEASES) as conn:
        declare(conn, "q")
        child = ChildProcess(tmp_path, CONSUMER_SCRIPT, space.url, space.prefix, "q", "1", "interrupted",
                             role="consumer")
        try:
            child.says("interrupted")
            publish(conn, "q", ["right after"])
            space.wait_for(lambda: space.raw.llen(space.list_key("q")) + space.unacked() == 1,
                           "the message is in Redis")
        finally:
            child.kill()
        received = consume(conn, "q")
        drain_until(conn, lambda: received)
        quiet(conn, 1.5)
        assert [m.payload for m in received] == ["right after"]
    assert space.unacked() == 0


# -- closing ------------------------------------------------------------------------------


def test_closing_returns_messages_fetched_ahead_and_unacked(space: Keyspace) -> None:
    """50 published, a consumer with prefetch 100 delivered 3 (more were fetched ahead):
    after close, a new connection gets all 50 once; the 3 delivered ones redelivered."""
    total = 50
    with space.connect() as first:
        declare(first, "q")
        publish(first, "q", range(total))
        delivered = consume(first, "q", ack=False, prefetch_count=100)
        for _ in range(3):
            first.drain_events(timeout=WAIT)
        assert [m.payload for m in delivered] == [0, 1, 2]
        assert space.unacked() > 3, "expected messages fetched ahead of delivery"
    assert space.unacked() == 0
    with space.connect() as second:
        received = consume(second, "q")
        drain_until(second, lambda: len(received) == total)
        quiet(second, 0.3)
    bodies = [m.payload for m in received]
    assert sorted(bodies) == list(range(total))
    assert all(m.redelivered for m in received if m.payload in (0, 1, 2))
    assert bodies == list(range(total)), "the original order is kept"
