"""Broker outages as an app meets them, on every server transport.

The app's objects are made while the broker is away -- a Connection, the
producer pool, ``Producer(conn)``, ``conn.Producer()``, ``conn.ensure`` --
or the broker goes away while fifty greenlets publish through the pool.
A publish that asked for retry must return once the broker is back, and
every publish that returned must be in the queue; one that did not ask for
retry fails at once with our error naming host:port, and the next one,
after the broker is back, works without the app doing anything.

"Down" is a proxy with nothing listening on its port: connecting is
refused, exactly as with a stopped broker. A restart is the real one
(``scripts/brokers.sh restart``) where the broker keeps its data across it
-- RabbitMQ, Redis, beanstalkd with its binlog; the in-memory MongoDB
stand-in would come back empty, so there the proxy cuts every connection
and refuses new ones for a second instead.
"""
from __future__ import annotations

import urllib.parse
from typing import Any, Callable, Dict, Iterator, List

import gevent
import gevent.event
import pytest

from kombu_green import Connection, Producer, Queue, pools
from kombu_green.exceptions import OperationalError
from kombu_green.mixins import ConsumerMixin

from ..conformance import WAIT
from .amqp_support import AMQP_URL, require_rabbitmq
from .beanstalk_support import beanstalk_url
from .mongodb_support import private_url
from .redis_support import redis_url
from .restarts import REPORT, drain_all, duplicates, require_script, restart_in_background, unique_name
from .tcp_proxy import TcpProxy

#: A web app's retry policy: about a minute of attempts, pauses from 0.2 s to 1 s.
POLICY = {"max_retries": 60, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1.0}
#: No test may take longer: a hang fails instead of stalling CI.
BOUND = 150
GREENLETS = 50
EACH = 20


def _amqp() -> Dict[str, Any]:
    require_rabbitmq()
    return {"transport": "amqp", "url": AMQP_URL, "options": {"confirm_publish": True}, "script": "rabbitmq"}


def _redis() -> Dict[str, Any]:
    return {"transport": "redis", "url": redis_url(), "options": {}, "script": "redis"}


def _beanstalk() -> Dict[str, Any]:
    return {"transport": "beanstalk", "url": beanstalk_url(), "options": {}, "script": "beanstalkd"}


def _mongodb() -> Dict[str, Any]:
    return {"transport": "mongodb", "url": private_url(), "options": {}, "script": None}


@pytest.fixture(params=[pytest.param(_amqp, id="amqp", marks=pytest.mark.amqp),
                        pytest.param(_redis, id="redis", marks=pytest.mark.redis),
                        pytest.param(_beanstalk, id="beanstalk", marks=pytest.mark.beanstalk),
                        pytest.param(_mongodb, id="mongodb", marks=pytest.mark.mongodb)])
def broker(request: pytest.FixtureRequest) -> Iterator[Dict[str, Any]]:
    pools.reset()
    yield request.param()
    pools.reset()


@pytest.fixture
def gate(broker: Dict[str, Any]) -> Iterator[TcpProxy]:
    """A proxy in front of the broker, to make it unreachable on cue."""
    parsed = urllib.parse.urlsplit(broker["url"])
    made = TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 0)
    yield made
    made.close()


def through(gate: TcpProxy, broker: Dict[str, Any]) -> Connection:
    """A Connection to the broker through ``gate`` (made without connecting)."""
    return Connection(gate.url(broker["url"]), connect_timeout=1, transport_options=dict(broker["options"]))


def make_queue() -> Queue:
    return Queue(unique_name("outage"), durable=True, auto_delete=False)


def back_after(gate: TcpProxy, seconds: float) -> gevent.Greenlet:
    return gevent.spawn_later(seconds, gate.listen)


def test_publishes_that_asked_for_retry_ride_out_a_broker_down_when_the_app_starts(
        broker: Dict[str, Any], gate: TcpProxy) -> None:
    """Every public way to publish, each made while the broker is down; it is up 2 s later."""
    gate.refuse()
    conn, queue = through(gate, broker), make_queue()
    retry = {"retry": True, "retry_policy": POLICY, "declare": [queue], "routing_key": queue.name}

    def pooled(body: int) -> None:
        with pools.producers[conn].acquire(block=True, timeout=WAIT) as producer:
            producer.publish({"id": body}, **retry)

    producer = Producer(conn)
    made_by_connection = conn.Producer()
    ensured = Producer(conn)
    simple = conn.SimpleQueue(queue)
    paths: Dict[str, Callable[[int], None]] = {
        "pool": pooled,
        "Producer(conn)": lambda body: producer.publish({"id": body}, **retry),
        "conn.Producer()": lambda body: made_by_connection.publish({"id": body}, **retry),
        "conn.ensure": lambda body: conn.ensure(ensured, ensured.publish, **POLICY)(
            {"id": body}, routing_key=queue.name, declare=[queue]),
        "SimpleQueue.put": lambda body: simple.put({"id": body}, retry=True, retry_policy=POLICY),
    }
    with gevent.Timeout(BOUND):
        up = back_after(gate, 2.0)
        publishers = [gevent.spawn(path, index) for index, path in enumerate(paths.values())]
        gevent.joinall(publishers, raise_error=True)
        up.join()
    seen = drain_all(broker, queue, until=len(paths))
    simple.close()
    conn.release()
    assert sorted(set(seen)) == list(range(len(paths)))
    REPORT.append(f"{broker['transport']}: {len(paths)} publishes made while the broker was down, "
                  f"up 2 s later: all delivered, {duplicates(seen)} duplicates")


class Worker(ConsumerMixin):
    def __init__(self, connection: Connection, queue: Queue) -> None:
        self.connection, self.queue, self.seen = connection, queue, []

    def get_consumers(self, Consumer: Any, channel: Any) -> List[Any]:
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], prefetch_count=10)]

    def on_message(self, body: Any, message: Any) -> None:
        self.seen.append(body["id"])
        message.ack()


def test_a_consumer_started_while_the_broker_is_down_consumes_once_it_is_up(
        broker: Dict[str, Any], gate: TcpProxy) -> None:
    gate.refuse()
    queue = make_queue()
    worker = Worker(through(gate, broker), queue)
    with gevent.Timeout(BOUND):
        running = gevent.spawn(worker.run)
        back_after(gate, 2.0).join()
        with Connection(broker["url"], transport_options=dict(broker["options"])) as conn:
            producer = conn.Producer()
            for body in range(10):
                producer.publish({"id": body}, routing_key=queue.name, declare=[queue])
            while len(worker.seen) < 10:
                gevent.sleep(0.05)
        worker.should_stop = True
        running.get()
    assert sorted(worker.seen) == list(range(10))


def test_a_publish_without_retry_fails_fast_naming_the_broker_and_the_next_one_works(
        broker: Dict[str, Any], gate: TcpProxy) -> None:
    gate.refuse()
    conn, queue = through(gate, broker), make_queue()
    held = conn.Producer()  # kept by the app across requests
    where = f"127.0.0.1:{gate.port}"
    with gevent.Timeout(BOUND):
        with pytest.raises(OperationalError) as pooled_failure:
            with pools.producers[conn].acquire(block=True, timeout=WAIT) as producer:
                producer.publish({"id": -1}, routing_key=queue.name, declare=[queue])
        with pytest.raises(OperationalError) as held_failure:
            held.publish({"id": -2}, routing_key=queue.name, declare=[queue])
        gate.listen()
        with pools.producers[conn].acquire(block=True, timeout=WAIT) as producer:
            producer.publish({"id": 1}, routing_key=queue.name, declare=[queue])
        held.publish({"id": 2}, routing_key=queue.name, declare=[queue])
    for failure in (pooled_failure, held_failure):
        assert where in str(failure.value)
    seen = drain_all(broker, queue, until=2)
    conn.release()
    assert sorted(seen) == [1, 2]


def test_fifty_greenlets_publishing_through_the_pool_ride_out_a_restart(
        broker: Dict[str, Any], gate: TcpProxy) -> None:
    """A third of the way through, the broker restarts (or, for the in-memory
    MongoDB, its connections are cut and refused for a second): no publish
    raises, and every one that returned is in the queue."""
    script = broker["script"]
    if script is not None:
        require_script(script)
        conn = Connection(broker["url"], transport_options=dict(broker["options"]))
    else:
        conn = through(gate, broker)
    queue, total = make_queue(), GREENLETS * EACH
    returned: List[int] = []
    third = gevent.event.Event()

    def publish(g: int) -> None:
        for i in range(EACH):
            body = g * EACH + i
            with pools.producers[conn].acquire(block=True, timeout=BOUND) as producer:
                producer.publish({"id": body}, routing_key=queue.name, declare=[queue], retry=True,
                                 retry_policy=POLICY, delivery_mode="persistent")
            returned.append(body)
            if len(returned) >= total // 3:
                third.set()
            gevent.sleep(0.005)  # paced, so the outage lands mid-run

    with gevent.Timeout(BOUND):
        publishers = [gevent.spawn(publish, g) for g in range(GREENLETS)]
        third.wait()
        if script is not None:
            restart, restarting = restart_in_background(script, down=1.0)
            restarting.join()
            restarting.get()
            outage = f"restart took {restart.seconds:.1f} s"
        else:
            gate.refuse()
            gevent.sleep(1.0)
            gate.listen()
            outage = "connections cut, refused for 1 s"
        gevent.joinall(publishers, raise_error=True)
    seen = drain_all(broker, queue, until=total)
    conn.release()
    lost = sorted(set(returned) - set(seen))
    REPORT.append(f"{broker['transport']}: {GREENLETS} greenlets, {total} pooled publishes with retry "
                  f"across an outage ({outage}): {len(lost)} lost, {duplicates(seen)} duplicates")
    assert sorted(returned) == list(range(total))
    assert not lost
