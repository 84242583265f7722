"""Helpers for the benchmarks: URLs, payloads, broker housekeeping, the table.

Import this only after the gevent monkey-patching decision: it imports amqp.
"""
from __future__ import annotations

import json
import statistics
import time
from importlib import metadata
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote, unquote, urlsplit

import amqp

LIBS = ("kombu_green", "kombu", "raw")
TITLES = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw py-amqp"}
#: (metric, other client, minimum kombu_green/other ratio) the project aims for
GOALS = [("consume", "kombu", 1.2), ("consume", "raw", 0.9), ("publish", "kombu", 1.0)]

PAYLOAD_TEXT = ("kombu_green bench " * 60)[:1000]


def payload(i: int) -> Dict[str, Any]:
    """The message body: an id and a 1,000-character string (about 1 KB of JSON)."""
    return {"id": i, "data": PAYLOAD_TEXT}


def json_bytes(i: int) -> bytes:
    """The same body encoded by hand, for the raw py-amqp column."""
    return json.dumps(payload(i)).encode("utf-8")


def broker_params(url: str) -> Dict[str, Any]:
    """Split an amqp:// URL into the pieces each client wants.

    The path after the first slash is the virtual host, so ``//`` means
    ``/`` as in kombu.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5672
    user = unquote(parts.username or "guest")
    password = unquote(parts.password or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
    path = "/" + (parts.path[1:] if len(parts.path) > 1 else "/")
    return {
        "host": host, "port": port, "userid": user, "password": password,
        "virtual_host": vhost,
        "kombu_green_url": f"amqp://{netloc}{path}",
        "kombu_url": f"pyamqp://{netloc}{path}",
        "display": f"amqp://{user}@{host}:{port}{path}",
    }


# -- broker housekeeping, done with plain py-amqp whatever is measured ----


class BenchError(Exception):
    """A run that did not deliver what it published: a correctness failure."""


def raw_connect(params: Dict[str, Any]) -> amqp.Connection:
    """A plain py-amqp connection, for the raw column and for housekeeping."""
    conn = amqp.Connection(host=f"{params['host']}:{params['port']}",
                           userid=params["userid"], password=params["password"],
                           virtual_host=params["virtual_host"])
    conn.connect()
    return conn


def await_count(params: Dict[str, Any], name: str, n: int, wait: float = 10.0) -> None:
    """The queue must come to hold n messages (the broker's count lags a little)."""
    conn = raw_connect(params)
    try:
        channel = conn.channel()
        deadline = time.monotonic() + wait
        while True:
            count = channel.queue_declare(name, passive=True).message_count
            if count == n:
                return
            if count > n or time.monotonic() > deadline:
                raise BenchError(f"queue holds {count} messages after publishing {n}")
            time.sleep(0.01)
    finally:
        conn.close()


def sweep(params: Dict[str, Any], queues: List[str]) -> int:
    """Delete every queue the bench declared; return how many were left over."""
    leftover = 0
    conn = raw_connect(params)
    try:
        for name in queues:
            channel = conn.channel()
            try:
                channel.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                continue  # the run deleted it, as it should
            leftover += 1
            channel.queue_delete(name)
            channel.close()
    finally:
        conn.close()
    return leftover


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


def report(summary: Dict[str, Dict[str, Any]], libs: List[str]) -> Dict[str, Any]:
    """Print the table; return the ratios."""
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
        rows.append([label] + [fmt(get(lib, key)) if lib in libs else "-" for lib in LIBS]
                    + [fmt_ratio(vs_kombu), fmt_ratio(vs_raw)])
    print(table(["metric"] + [TITLES[lib] for lib in LIBS]
                + ["kombu_green/kombu", "kombu_green/raw"], rows))
    marks = []
    for key, other, target in GOALS:
        value = ratios[key][f"kombu_green/{other}"]
        shown = "n/a" if value is None else f"{value:.3f}x, " + (
            "met" if value >= target else "missed")
        marks.append(f"{key} >= {target:.1f}x {TITLES[other]} ({shown})")
    print("goals: " + "; ".join(marks))
    return ratios
