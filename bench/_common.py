"""What the benchmarks share: payloads, the kombu-API code path, the loops,
the round driver, statistics and the table.

Import this only after the gevent monkey-patching decision: it imports socket.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
from importlib import metadata
from time import perf_counter
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

LIBS = ("kombu_green", "kombu", "raw")
#: Client key -> column title, and (metric, other client, minimum
#: kombu_green/other ratio) goals: each bench passes its own to report().
Titles = Dict[str, str]
Goals = List[Tuple[str, str, float]]
Results = Dict[str, Dict[str, List[float]]]

PREFETCH = 100
DRAIN_TIMEOUT = 10.0  # seconds without any delivery before a run counts as failed
PING_WARMUP = 50  # round trips done before the recorded ones


class BenchError(Exception):
    """A run that did not deliver what it published: a correctness failure."""


class Unavailable(Exception):
    """A client that cannot be measured here (its transport fails on this
    server, say): shown as n/a with the reason, not counted as an error."""


PAYLOAD_TEXT = ("kombu_green bench " * 60)[:1000]


def payload(i: int) -> Dict[str, Any]:
    """The message body: an id and a 1,000-character string (about 1 KB of JSON)."""
    return {"id": i, "data": PAYLOAD_TEXT}


def json_bytes(i: int) -> bytes:
    """The same body encoded by hand, for the raw clients' column."""
    return json.dumps(payload(i)).encode("utf-8")


# -- kombu and kombu_green: one code path, parametrized by the module ------


def km_queue(mod: ModuleType, name: str) -> Any:
    return mod.Queue(name, exchange=mod.Exchange(""), routing_key=name,
                     durable=False, auto_delete=False)


def km_publish(mod: ModuleType, url: str, name: str, n: int) -> float:
    """Publish n messages; the clock stops after a passive declare answers."""
    with mod.Connection(url) as conn:
        channel = conn.channel()
        queue = km_queue(mod, name)(channel)
        queue.declare()
        producer = mod.Producer(channel)
        start = perf_counter()
        for i in range(n):
            producer.publish(payload(i), routing_key=name, exchange="",
                             serializer="json", delivery_mode=2)
        queue.queue_declare(passive=True)  # one round trip: nothing left in buffers
        return perf_counter() - start


def km_consumer(mod: Any, channel: Any, name: str, on_message: Callable[[Any, Any], Any]) -> Any:
    """Declare queue ``name`` on ``channel`` and start a JSON consumer on it with
    the bench's prefetch (the same for kombu and kombu_green); return the consumer."""
    queue = km_queue(mod, name)(channel)
    queue.declare()
    consumer = mod.Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"])
    consumer.qos(prefetch_count=PREFETCH)
    consumer.consume()
    return consumer


def km_consume(mod: ModuleType, url: str, name: str, n: int) -> Tuple[float, List[int]]:
    """Consume n messages with manual acks; the queue is deleted afterwards."""
    ids: List[int] = []

    def on_message(body: Any, message: Any) -> None:
        ids.append(body["id"])
        message.ack()

    with mod.Connection(url) as conn:
        consumer = km_consumer(mod, conn.channel(), name, on_message)
        queue = consumer.queues[0]
        start = perf_counter()
        drain_until(conn.drain_events, ids, n)
        elapsed = perf_counter() - start
        consumer.cancel()
        queue.delete()
    return elapsed, ids


def km_ping(mod: ModuleType, url: str, name: str, m: int, **connection: Any) -> List[float]:
    """m publish-to-delivery round trips over two connections, in seconds.

    ``connection``: extra keyword arguments for both connections
    (``transport_options``, say); none by default.
    """
    arrived: List[float] = []

    def on_message(body: Any, message: Any) -> None:
        arrived.append(perf_counter())
        message.ack()

    with mod.Connection(url, **connection) as pconn, mod.Connection(url, **connection) as cconn:
        consumer = km_consumer(mod, cconn.channel(), name, on_message)
        queue = consumer.queues[0]
        producer = mod.Producer(pconn.channel())

        def send(i: int) -> None:
            producer.publish(payload(i), routing_key=name, exchange="",
                             serializer="json", delivery_mode=2)

        latencies = ping_loop(send, cconn.drain_events, arrived, m)
        consumer.cancel()
        queue.delete()
    return latencies


# -- loops shared by every client ---------------------------------------------


def drain_until(drain: Callable[..., Any], received: List[Any], n: int) -> None:
    """Call drain_events until n messages arrived; a silent broker fails the run."""
    while len(received) < n:
        try:
            drain(timeout=DRAIN_TIMEOUT)
        except (socket.timeout, TimeoutError):
            raise BenchError(f"received {len(received)} of {n} messages, then "
                             f"nothing for {DRAIN_TIMEOUT:.0f}s") from None


def ping_loop(send: Callable[[int], None], drain: Callable[..., Any],
              arrived: List[float], m: int) -> List[float]:
    """Publish one message, drain until it arrives; the same for every client."""
    latencies: List[float] = []
    for i in range(PING_WARMUP + m):
        start = perf_counter()
        send(i)
        drain_until(drain, arrived, i + 1)
        if i >= PING_WARMUP:
            latencies.append(arrived[i] - start)
    return latencies


def check_ids(ids: List[int], n: int) -> None:
    if len(ids) != n or sorted(ids) != list(range(n)):
        missing = n - len(set(ids) & set(range(n)))
        raise BenchError(f"consumed {len(ids)} messages for {n} published, "
                         f"{missing} expected ids missing")


# -- statistics and the table ------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was observed."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value: Optional[float], spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(header: List[str], rows: List[List[str]]) -> str:
    """Left-align the first column, right-align the rest."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: List[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first] + rest)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def version(dist: str) -> str:
    """Installed version of a distribution, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def summarize(results: Dict[str, Dict[str, List[float]]]) -> Dict[str, Dict[str, Any]]:
    """Best of the repeats for throughput, median of the runs for latency."""
    return {lib: {"publish": max(r["publish"], default=None),
                  "consume": max(r["consume"], default=None),
                  "p50": median(r["p50"]) if r["p50"] else None,
                  "p99": median(r["p99"]) if r["p99"] else None}
            for lib, r in results.items()}


def report(summary: Dict[str, Dict[str, Any]], libs: List[str], titles: Titles,
           goals: Goals, unavailable: Sequence[str] = ()) -> Dict[str, Any]:
    """Print the table and how each goal fared; return the ratios. A client in
    ``unavailable`` shows n/a where it has no figure; no goals, no goals line."""
    metrics = [("publish", "publish msg/s (higher is better)"),
               ("consume", "consume msg/s (higher is better)"),
               ("p50", "ping p50 us (lower is better)"),
               ("p99", "ping p99 us (lower is better)")]
    get = lambda lib, key: summary.get(lib, {}).get(key)  # noqa: E731
    ratios: Dict[str, Any] = {}
    rows = []
    for key, label in metrics:
        vs_kombu, vs_raw = (ratio(get("kombu_green", key), get(other, key))
                            for other in ("kombu", "raw"))
        ratios[key] = {"kombu_green/kombu": vs_kombu, "kombu_green/raw": vs_raw}
        rows.append([label] + [("n/a" if lib in unavailable and get(lib, key) is None
                                else fmt(get(lib, key))) if lib in libs else "-"
                               for lib in LIBS]
                    + [fmt_ratio(vs_kombu), fmt_ratio(vs_raw)])
    print(table(["metric"] + [titles[lib] for lib in LIBS]
                + ["kombu_green/kombu", "kombu_green/raw"], rows))
    marks = []
    for key, other, target in goals:
        value = ratios[key][f"kombu_green/{other}"]
        shown = "n/a" if value is None else f"{value:.3f}x, " + (
            "met" if value >= target else "missed")
        marks.append(f"{key} >= {target:.1f}x {titles[other]} ({shown})")
    if marks:
        print("goals: " + "; ".join(marks))
    return ratios


# -- the driver: options, interleaved rounds, the result -------------------

Runners = Tuple[Callable[[str, int], float], Callable[[str, int], Tuple[float, List[int]]],
                Callable[[str, int], List[float]]]


def make_parser(description: str, url_env: str, default_url: str) -> argparse.ArgumentParser:
    """The options every bench takes; a bench may add its own before parse()."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default=os.environ.get(url_env, default_url))
    parser.add_argument("-n", "--messages", type=int, default=20000)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(LIBS),
                        help="comma-separated subset of: " + ",".join(LIBS))
    parser.add_argument("--no-patch", action="store_true",
                        help="do not call gevent.monkey.patch_all() first")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; ``args.libs`` is the list of clients to run."""
    args = parser.parse_args()
    args.libs = [lib.strip() for lib in args.only.split(",") if lib.strip()]
    unknown = set(args.libs) - set(LIBS)
    if unknown or not args.libs:
        parser.error(f"--only takes a subset of {','.join(LIBS)}")
    return args


def env_line(env: Dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in env.items())


class Run:
    """The figures, declared queues and errors of one bench invocation."""

    def __init__(self, args: argparse.Namespace, titles: Titles, goals: Goals) -> None:
        self.args, self.titles, self.goals = args, titles, goals
        self.results: Results = {lib: {"publish": [], "consume": [], "p50": [], "p99": []}
                                 for lib in args.libs}
        self.queues: List[str] = []
        self.errors: List[str] = []
        #: Client -> why it could not be measured (it raised Unavailable).
        self.unavailable: Dict[str, str] = {}

    def round(self, lib: str, rnd: int, runners: Runners,
              settle: Callable[[str, int], None], base: str) -> None:
        """One publish, consume and ping-pong run of one client, with its checks.

        ``settle(queue, n)`` raises BenchError unless the queue holds n messages.
        """
        publish, consume, ping = runners
        n, name = self.args.messages, base + ".tput"
        self.queues.append(name)
        elapsed = publish(name, n)
        settle(name, n)
        self.results[lib]["publish"].append(n / elapsed)
        elapsed, ids = consume(name, n)
        check_ids(ids, n)
        self.results[lib]["consume"].append(n / elapsed)
        self.queues.append(base + ".ping")
        latencies = [s * 1e6 for s in ping(base + ".ping", self.args.pings)]
        self.results[lib]["p50"].append(percentile(latencies, 50))
        self.results[lib]["p99"].append(percentile(latencies, 99))
        self.progress(lib, rnd)

    def progress(self, lib: str, rnd: int) -> None:
        """One stderr line with the latest figures of a client."""
        r = self.results[lib]
        print(f"  round {rnd + 1} {self.titles[lib]:<12} publish {r['publish'][-1]:>9,.0f}/s  "
              f"consume {r['consume'][-1]:>9,.0f}/s  p50 {r['p50'][-1]:>6,.0f}us  "
              f"p99 {r['p99'][-1]:>6,.0f}us", file=sys.stderr, flush=True)

    def interleave(self, one_round: Callable[[str, int], None]) -> None:
        """Every round runs each client once, rotating who goes first; a client
        that fails is dropped for the remaining rounds, the others carry on."""
        libs = self.args.libs
        active = list(libs)
        for rnd in range(self.args.repeat):
            shift = rnd % len(libs)
            for lib in libs[shift:] + libs[:shift]:
                if lib not in active:
                    continue
                try:
                    one_round(lib, rnd)
                except Unavailable as exc:
                    self.unavailable[lib] = f"{exc} (round {rnd + 1})"
                    print(f"  {self.titles[lib]}: n/a, {self.unavailable[lib]}",
                          file=sys.stderr, flush=True)
                    active.remove(lib)
                except Exception as exc:  # one broken client must not hide the others
                    self.errors.append(f"{self.titles[lib]} round {rnd + 1}: "
                                       f"{type(exc).__name__}: {exc}")
                    print("  " + self.errors[-1], file=sys.stderr, flush=True)
                    active.remove(lib)

    def finish(self, env: Dict[str, Any], notes: Sequence[str] = (),
               extra: Optional[Dict[str, Any]] = None) -> int:
        """Print the table, the notes and the errors; write --json; the exit status."""
        summary = summarize(self.results)
        print()
        print(env_line(env))
        ratios = report(summary, self.args.libs, self.titles, self.goals,
                        list(self.unavailable))
        for lib, reason in self.unavailable.items():
            print(f"n/a: {self.titles[lib]}: {reason}")
        for note in notes:
            print(note)
        for err in self.errors:
            print("ERROR: " + err)
        if self.args.json:
            with open(self.args.json, "w") as fh:
                json.dump({"env": env, "runs": self.results, "summary": summary,
                           "ratios": ratios, "errors": self.errors,
                           **({"unavailable": self.unavailable} if self.unavailable else {}),
                           **(extra or {})},
                          fh, indent=2)
        return 1 if self.errors else 0
