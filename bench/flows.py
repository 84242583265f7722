"""The message flows of the broker benches, and the kombu-API code path.

Every client of a broker bench opens :class:`Ends` on a set of queues: a
publishing connection and a consuming one. :class:`BrokerBench` runs the
same loops over them for every client -- throughput (in batches), the
ping-pong, and the steps of a ``--scale`` curve -- with the same checks.
kombu and kombu_green get their ends from :func:`km_ends`, one function
given the module, so both make exactly the same calls; a bench writes only
its raw client's ends, the checks on its server, and its names.
"""
import harness  # first: it settles monkey-patching before socket is imported

# isort: split
import json
import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from time import perf_counter
from types import ModuleType
from typing import Any, Callable, ContextManager, Dict, FrozenSet, Iterator, List, Optional, Sequence

import gevent
import gevent.lock
from harness import BenchError, Figures, Metric, Run, check_ids, percentile

PREFETCH = 100
DRAIN_TIMEOUT = 10.0  # seconds without a delivery before a run counts as failed
PAYLOAD_TEXT = ("kombu_green bench " * 60)[:1000]
#: --scale dimensions: messages spread over that many queues, or published
#: by that many greenlets sharing the one publishing connection.
SCALES = ("queues", "greenlets")
Send = Callable[[int], None]
Sink = Callable[[int], None]


def payload(i: int) -> Dict[str, Any]:
    """The body every client sends: an id and 1,000 characters (about 1 KB of JSON)."""
    return {"id": i, "data": PAYLOAD_TEXT}


def json_bytes(i: int) -> bytes:
    """The same body encoded by hand, as the raw clients send it."""
    return json.dumps(payload(i)).encode("utf-8")


def nothing() -> None:
    """For the Ends steps a client has no use for."""


@dataclass
class Ends:
    """One client's publishing and consuming ends on a list of queues.

    Message ``i`` goes to queue ``i % len(names)``; every message consumed
    has its id handed to the sink the ends were opened with, then is acked.
    """

    #: A publish function for one greenlet (several may share a connection).
    sender: Callable[[], Send]
    #: Start consuming every queue; clocked with the consume loop (a broker
    #: may push, and a client run, deliveries before it returns).
    subscribe: Callable[[], None]
    #: ``drain(timeout=...)``: deliver at least one message or raise a timeout.
    drain: Callable[..., Any]
    #: After a publish loop, clocked: until the broker holds everything sent.
    flush: Callable[[], None] = nothing
    #: After a consume loop, clocked: until the acks given are recorded.
    acked: Callable[[], None] = nothing


def drain_until(drain: Callable[..., Any], received: List[Any], n: int) -> None:
    """Drain until n messages arrived; a silent broker fails the run."""
    while len(received) < n:
        try:
            drain(timeout=DRAIN_TIMEOUT)
        except (socket.timeout, TimeoutError):
            raise BenchError(f"received {len(received)} of {n} messages, then "
                             f"nothing for {DRAIN_TIMEOUT:.0f}s") from None


# -- kombu and kombu_green: one code path, given the module ------------------


@contextmanager
def km_ends(mod: ModuleType, url: str, names: List[str], sink: Sink, connection: Dict[str, Any],
            acked: Callable[[Any], None]) -> Iterator[Ends]:
    """Producers on the publishing connection's default channel, one prefetching
    JSON consumer with manual acks on the other; the queues are deleted after.

    ``connection``: keyword arguments for both connections; ``acked(conn)``
    waits for the consuming connection's acks (a no-op but for MongoDB).
    """
    def on_message(body: Any, message: Any) -> None:
        sink(body["id"])
        message.ack()

    with mod.Connection(url, **connection) as pconn, mod.Connection(url, **connection) as cconn:
        channel = pconn.default_channel
        queues = [mod.Queue(name, exchange=mod.Exchange(""), routing_key=name, durable=False,
                            auto_delete=False) for name in names]
        declared = [queue(channel) for queue in queues]
        for queue in declared:
            queue.declare()
        consumer = mod.Consumer(cconn.channel(), queues=queues, callbacks=[on_message], accept=["json"])

        def sender() -> Send:
            producer = mod.Producer(channel)

            def send(i: int) -> None:
                producer.publish(payload(i), routing_key=names[i % len(names)], exchange="",
                                 serializer="json", delivery_mode=2)
            return send

        def subscribe() -> None:
            consumer.qos(prefetch_count=PREFETCH)
            consumer.consume()

        yield Ends(sender, subscribe, cconn.drain_events,
                   # one round trip on the channel: nothing published is left in a buffer
                   flush=lambda: declared[-1].queue_declare(passive=True), acked=lambda: acked(cconn))
        consumer.cancel()
        for queue in declared:
            queue.delete()


# -- the broker bench ----------------------------------------------------------


class BrokerBench(harness.Bench):
    """Throughput, ping-pong latency and an optional --scale curve, per client.

    A bench fills in :meth:`raw_ends`, :meth:`settle` and :meth:`sweep`, and
    :meth:`km_url`/:meth:`km_options` when kombu's URL or options differ.
    """

    defaults: Dict[str, Any] = {"messages": 20000, "pings": 2000, "batch": 0}
    shown = ("messages", "pings", "repeat", "warmup", "batch", "scale")
    #: The dimensions --scale may grow here.
    scales: Sequence[str] = SCALES
    #: Clients whose one connection several greenlets may publish on at
    #: once; the others take turns through a lock, as an app would make them.
    shared: FrozenSet[str] = frozenset({"kombu_green"})
    #: True if settle() counts messages delivered but not yet acked, so it
    #: can check every batch, not just the first (before the consumer starts).
    counts_unacked = False

    @classmethod
    def options(cls, parser: Any) -> None:
        parser.add_argument("--pings", type=int, help="recorded ping-pong round trips")
        parser.add_argument("--batch", type=int, help="publish then consume this many at a time "
                            "(0: all -n at once)")
        parser.add_argument("--scale", metavar="DIM=STEPS", help="a curve, one row per step: "
                            f"DIM is one of {', '.join(cls.scales)}; STEPS like 1,10,100 "
                            "(or 100 alone for 1,10,100)")

    @classmethod
    def invalid(cls, args: Any) -> Optional[str]:
        """Check the sizes, and turn --scale into ``args.steps``: (dim, step) pairs."""
        args.steps = []
        if args.scale:
            dim, _, spec = args.scale.partition("=")
            try:
                steps = [int(s) for s in spec.split(",")]
            except ValueError:
                steps = []
            if dim not in cls.scales or not steps or min(steps) < 1:
                return f"--scale takes DIM=N,N,... with DIM one of {', '.join(cls.scales)}"
            if len(steps) == 1:  # 1000 alone: 1, 10, 100, 1000
                steps = [10 ** k for k in range(len(str(steps[0]))) if 10 ** k < steps[0]] + steps
            args.steps = [(dim, step) for step in steps]
        if args.pings < 1 or args.batch < 0:
            return "--pings must be at least 1, --batch at least 0"
        return None

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.stem = f"bench.{os.getpid()}.{uuid.uuid4().hex[:8]}"  # names new to the server
        self.queues: List[str] = []

    # -- what a bench fills in --

    def raw_ends(self, names: List[str], sink: Sink) -> ContextManager[Ends]:
        """The raw client's ends; like km_ends it deletes its queues after."""
        raise NotImplementedError

    def settle(self, lib: str, names: List[str], n: int) -> None:
        """Raise BenchError unless the queues together hold n messages."""
        raise NotImplementedError

    def sweep(self, names: List[str]) -> int:
        """Delete what is left of these queues; return how many had anything left."""
        raise NotImplementedError

    def km_url(self, lib: str) -> str:
        """The URL kombu (or kombu_green) is given; the same by default."""
        return str(self.args.url)

    def km_options(self, lib: str) -> Dict[str, Any]:
        """Keyword arguments for kombu's (or kombu_green's) Connection."""
        return {}

    def km_acked(self, conn: Any) -> None:
        """Wait for the acks given on conn to be recorded, where they are written later."""

    # -- the flows --

    def ends(self, lib: str, names: List[str], sink: Sink) -> ContextManager[Ends]:
        """lib's ends on these queues, which are noted for the sweep at the end."""
        self.queues.extend(names)
        if lib == "raw":
            return self.raw_ends(names, sink)
        return km_ends(import_module(lib), self.km_url(lib), names, sink, self.km_options(lib),
                       self.km_acked)

    def metrics(self) -> List[Metric]:
        """The four rows of every broker bench, then two per --scale step."""
        rows = [Metric("publish", "publish msg/s"), Metric("consume", "consume msg/s"),
                Metric("p50", "ping p50 us", higher=False), Metric("p99", "ping p99 us", higher=False)]
        for dim, step in self.args.steps:
            rows += [Metric(f"{dim}={step} publish", f"{dim}={step}: publish msg/s"),
                     Metric(f"{dim}={step} consume", f"{dim}={step}: consume msg/s")]
        return rows

    def round(self, lib: str, rnd: int) -> Figures:
        """Throughput, ping-pong, then each scale step, on queues new to the server."""
        base = f"{self.stem}.{lib}.r{rnd}"
        figures = self.throughput(lib, [base + ".tput"], 1, "")
        figures.update(self.ping(lib, base + ".ping"))
        for dim, step in self.args.steps:
            names = [f"{base}.{dim}{step}.{k}" for k in range(step if dim == "queues" else 1)]
            figures.update(self.throughput(lib, names, step if dim == "greenlets" else 1, f"{dim}={step} "))
        return figures

    def publisher(self, lib: str, ends: Ends, greenlets: int) -> Callable[[int, int], None]:
        """publish(first, last): ids first..last-1, from one greenlet or split over several."""
        sends = [ends.sender() for _ in range(greenlets)]
        if greenlets > 1 and lib not in self.shared:
            lock = gevent.lock.Semaphore()
            sends = [self.locked(lock, send) for send in sends]

        def loop(send: Send, ids: range) -> None:
            for i in ids:
                send(i)

        def publish(first: int, last: int) -> None:
            if greenlets == 1:
                return loop(sends[0], range(first, last))
            gevent.joinall([gevent.spawn(loop, send, range(first + k, last, greenlets))
                            for k, send in enumerate(sends)], raise_error=True)
        return publish

    @staticmethod
    def locked(lock: gevent.lock.Semaphore, send: Send) -> Send:
        """send, one greenlet at a time: for connections not made to be shared."""
        def turn(i: int) -> None:
            with lock:
                send(i)
        return turn

    def throughput(self, lib: str, names: List[str], greenlets: int, prefix: str) -> Figures:
        """Publish n messages (at least one per queue), consume them on one
        connection, a batch at a time; check that each arrived once."""
        n = max(self.args.messages, len(names))
        batch = self.args.batch or n
        ids: List[int] = []
        published = consumed = 0.0
        with self.ends(lib, names, ids.append) as ends:
            publish = self.publisher(lib, ends, greenlets)
            for first in range(0, n, batch):
                last = min(n, first + batch)
                start = perf_counter()
                publish(first, last)
                ends.flush()
                published += perf_counter() - start
                if first == 0 or self.counts_unacked:
                    self.settle(lib, names, last - first)
                start = perf_counter()
                if first == 0:
                    ends.subscribe()
                drain_until(ends.drain, ids, last)
                ends.acked()
                consumed += perf_counter() - start
        check_ids(ids, n)
        return {prefix + "publish": n / published, prefix + "consume": n / consumed,
                prefix + "publish seconds": published, prefix + "consume seconds": consumed,
                prefix + "messages": n}

    def ping(self, lib: str, name: str) -> Figures:
        """Round trips: publish one message, drain the other connection until it
        arrives; the first --warmup trips are not recorded."""
        arrived: List[float] = []
        warmup, m = self.args.warmup, self.args.pings
        latencies: List[float] = []
        with self.ends(lib, [name], lambda _: arrived.append(perf_counter())) as ends:
            send = ends.sender()
            ends.subscribe()
            for i in range(warmup + m):
                start = perf_counter()
                send(i)
                drain_until(ends.drain, arrived, i + 1)
                if i >= warmup:
                    latencies.append((arrived[i] - start) * 1e6)
        return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                "ping mean": sum(latencies) / len(latencies), "ping max": max(latencies)}

    def close(self, run: Run) -> List[str]:
        leftover = self.sweep(self.queues)
        return [f"{leftover} queue(s) still held messages or existed after the runs; deleted"] if leftover else []
