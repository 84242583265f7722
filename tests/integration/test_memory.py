"""memory:// runs the whole conformance suite, plus what only it promises."""
from __future__ import annotations

import socket
import time

import gevent
import pytest

from kombu_green import Connection, Consumer, Producer, Queue
from kombu_green.transport import memory

from ..conformance import TransportConformance

pytestmark = pytest.mark.memory


class TestMemoryConformance(TransportConformance):
    @pytest.fixture
    def url(self, memory_url: str) -> str:
        return memory_url


def test_connections_with_the_same_name_share_a_broker(memory_url: str) -> None:
    with Connection(memory_url) as producer_side, Connection(memory_url) as consumer_side:
        queue = Queue("shared")
        queue(producer_side.channel()).declare()
        Producer(producer_side).publish("hi", routing_key="shared")
        message = queue(consumer_side.channel()).get()
        assert message is not None and message.payload == "hi"


def test_brokers_with_other_names_or_vhosts_are_separate(memory_url: str) -> None:
    with Connection(memory_url) as one, Connection(memory_url + "/other") as two:
        queue = Queue("q")
        queue(one.channel()).declare()
        queue(two.channel()).declare()
        Producer(one).publish("only here", routing_key="q")
        assert queue(two.channel()).get() is None
        assert queue(one.channel()).get() is not None
    memory.forget_broker(memory_url.split("//")[1], "other")


def test_forget_broker_drops_state(memory_url: str) -> None:
    name = memory_url.split("//")[1]
    with Connection(memory_url) as conn:
        Queue("q")(conn.channel()).declare()
    assert memory.get_broker(name).has_queue("q")
    memory.forget_broker(name)
    assert not memory.get_broker(name).has_queue("q")


def test_broker_state_is_per_broker_not_per_class(memory_url: str) -> None:
    other = memory.MemoryBroker("other")
    mine = memory.get_broker(memory_url.split("//")[1])
    mine.state.declare_exchange("only-mine", "fanout")
    assert "only-mine" not in other.state.exchanges


def test_idle_consumers_burn_no_cpu(memory_url: str) -> None:
    """50 greenlets wait on empty queues; the process stays idle meanwhile."""
    def waiter(n: int) -> None:
        with Connection(memory_url) as conn:
            Consumer(conn.channel(), [Queue(f"idle-{n}")], callbacks=[lambda b, m: None]).consume()
            try:
                conn.drain_events(timeout=1.0)
            except socket.timeout:
                pass

    greenlets = [gevent.spawn(waiter, n) for n in range(50)]
    gevent.sleep(0.1)  # all are waiting now
    started = time.process_time()
    gevent.joinall(greenlets, raise_error=True)
    used = time.process_time() - started
    # An event-driven wait costs nothing per second; a polling loop would
    # spend far more than this across 50 greenlets.
    assert used < 0.25, f"idle waiting used {used:.3f}s of CPU"


def test_waiting_is_event_driven_not_polling(memory_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One idle drain_events performs a single wait, however long it lasts."""
    from kombu_green import green

    waits = []
    real_wait_any = green.wait_any
    monkeypatch.setattr(green, "wait_any", lambda bells, timeout=None: (
        waits.append(timeout), real_wait_any(bells, timeout))[1])
    with Connection(memory_url) as conn:
        Consumer(conn.channel(), [Queue("q")], callbacks=[lambda b, m: None]).consume()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.3)
    assert len(waits) == 1
