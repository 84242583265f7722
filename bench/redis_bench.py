#!/usr/bin/env python
"""Side-by-side Redis figures: kombu_green, kombu and raw redis-py on one server.

Measures publish and consume throughput and publish-to-delivery latency
for the three clients in one process, interleaving them round by round,
prints the figures with kombu_green's ratios to the other two, and below
them what redis-benchmark gets from the same server. See bench/README.rst
for how to run it and how to read it.
"""
import sys

# Decide on monkey-patching before anything imports socket, as a gunicorn
# gevent worker does; kombu's Redis transport and plain redis-py are only
# cooperative patched.
PATCHED = "--no-patch" not in sys.argv[1:]
if PATCHED:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
from importlib import import_module  # noqa: E402
from time import perf_counter  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402
from urllib.parse import unquote, urlsplit  # noqa: E402

import redis  # noqa: E402
from _common import (  # noqa: E402
    BenchError,
    Goals,
    Run,
    Runners,
    Titles,
    drain_until,
    env_line,
    json_bytes,
    km_consume,
    km_ping,
    km_publish,
    make_parser,
    parse,
    ping_loop,
    version,
)

from kombu_green.transport.redis.keys import Keys  # noqa: E402

TITLES: Titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw redis-py"}
#: (metric, other client, minimum kombu_green/other ratio) the project aims for
GOALS: Goals = [("consume", "kombu", 1.5)]

#: redis-benchmark's figures for the server itself: its default 50
#: connections, then one connection (comparable with one client here).
SERVER_RUNS = [("50 connections", ["-n", "100000"]), ("1 connection", ["-n", "20000", "-c", "1"])]
#: The list redis-benchmark's lpush and rpop tests push to and pop from.
SERVER_BENCH_KEY = "mylist"
SERVER_LINE = re.compile(r"^(\w+): ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?")
#: kombu_green's key names; a queue's lists are named as kombu names them.
KEYS = Keys()


# -- the server: URL pieces and housekeeping with plain redis-py ------------


def server_params(url: str) -> Dict[str, Any]:
    """Host, port, database and credentials of a redis:// URL, and how to show it."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    db = int(parts.path.strip("/") or 0)
    user = unquote(parts.username) if parts.username else None
    return {"url": url, "scheme": parts.scheme, "host": host, "port": port, "db": db,
            "username": user,
            "password": unquote(parts.password) if parts.password else None,
            "display": f"{parts.scheme}://{user + '@' if user else ''}{host}:{port}/{db}"}


def raw_client(params: Dict[str, Any]) -> redis.Redis:
    """A plain redis-py client, for the raw column and for housekeeping."""
    return redis.Redis.from_url(params["url"])


def keys_of(name: str) -> List[str]:
    """Every key a queue of this name may leave: its lists (one per priority
    step) and kombu_green's declaration of it."""
    return KEYS.lists(name) + [KEYS.meta(name)]


def queue_size(params: Dict[str, Any], name: str, n: int) -> None:
    """The queue must hold exactly n messages. Every publish waited for Redis's
    reply, so the count is exact at once: there is nothing to wait for."""
    client = raw_client(params)
    try:
        count = sum(client.llen(key) for key in KEYS.lists(name))
    finally:
        client.close()
    if count != n:
        raise BenchError(f"queue holds {count} messages after publishing {n}")


def sweep(params: Dict[str, Any], queues: List[str]) -> int:
    """Delete every key the bench's queues may have left; return how many
    queues had left any. Only these keys: the server may hold other data."""
    leftover = 0
    client = raw_client(params)
    try:
        for name in queues:
            if client.delete(*keys_of(name)):
                leftover += 1
    finally:
        client.close()
    return leftover


# -- raw redis-py ------------------------------------------------------------


def popper(client: redis.Redis, name: str, sink: Callable[[bytes], Any]) -> Callable[..., None]:
    """A drain_events look-alike: one BRPOP, the message handed to sink."""

    def drain(timeout: float) -> None:
        reply = client.brpop([name], timeout=timeout)
        if reply is None:
            raise TimeoutError
        sink(reply[1])

    return drain


def raw_publish(params: Dict[str, Any], name: str, n: int) -> float:
    client = raw_client(params)
    try:
        start = perf_counter()
        for i in range(n):
            client.lpush(name, json_bytes(i))
        return perf_counter() - start
    finally:
        client.close()


def raw_consume(params: Dict[str, Any], name: str, n: int) -> Tuple[float, List[int]]:
    """One BRPOP per message; there is no ack, nor any record of the message."""
    ids: List[int] = []
    client = raw_client(params)
    try:
        drain = popper(client, name, lambda raw: ids.append(json.loads(raw)["id"]))
        start = perf_counter()
        drain_until(drain, ids, n)
        elapsed = perf_counter() - start
        client.delete(name)
        return elapsed, ids
    finally:
        client.close()


def raw_ping(params: Dict[str, Any], name: str, m: int) -> List[float]:
    arrived: List[float] = []
    pclient, cclient = raw_client(params), raw_client(params)

    def on_message(raw: bytes) -> None:
        arrived.append(perf_counter())
        json.loads(raw)

    try:
        latencies = ping_loop(lambda i: pclient.lpush(name, json_bytes(i)),
                              popper(cclient, name, on_message), arrived, m)
        cclient.delete(name)
        return latencies
    finally:
        pclient.close()
        cclient.close()


# -- the server's own limit --------------------------------------------------


def server_limit(params: Dict[str, Any]) -> Tuple[List[str], Dict[str, Any]]:
    """redis-benchmark's LPUSH and RPOP figures: lines to print, and the data."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return ["server: redis-benchmark not found (Debian package redis-tools); "
                "no figures for the server itself"], {}
    if params["scheme"] != "redis":
        return [f"server: redis-benchmark is only run for redis:// URLs, "
                f"not {params['scheme']}://"], {}
    shown = ["redis-benchmark", "-h", params["host"], "-p", str(params["port"]), "-q",
             "-t", "lpush,rpop", "-d", "1000"]
    if params["db"]:
        shown += ["--dbnum", str(params["db"])]
    if params["username"]:
        shown += ["--user", params["username"]]
    secret = ["-a", params["password"], "--no-auth-warning"] if params["password"] else []
    client = raw_client(params)
    lines: List[str] = []
    data: Dict[str, Any] = {}
    try:
        if client.exists(SERVER_BENCH_KEY):
            return [f"server: redis-benchmark skipped: its key {SERVER_BENCH_KEY!r} exists in "
                    f"database {params['db']} and it would push to and pop from it"], {}
        for label, extra in SERVER_RUNS:
            command = shown + extra
            try:
                out = subprocess.run([exe] + command[1:] + secret, capture_output=True,
                                     text=True, timeout=300, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                lines.append(f"server ({label}): redis-benchmark failed: {exc}")
                continue
            finally:
                client.delete(SERVER_BENCH_KEY)  # it did not exist before
            figures = {}
            for line in re.split(r"[\r\n]", out):
                match = SERVER_LINE.match(line.strip())
                if match:
                    figures[match.group(1)] = {
                        "rps": float(match.group(2)),
                        "p50_us": float(match.group(3)) * 1000 if match.group(3) else None}
            data[label] = {"command": " ".join(command), "figures": figures}
            shown_figures = "; ".join(
                f"{test} {f['rps']:,.0f}/s" + (f" (p50 {f['p50_us']:,.0f}us)" if f["p50_us"] else "")
                for test, f in figures.items()) or "no figures in its output"
            lines.append(f"server, {label} ({' '.join(command)}): {shown_figures}")
    finally:
        client.close()
    return lines, {"server": data}


# -- driver ------------------------------------------------------------------


def runners(lib: str, params: Dict[str, Any]) -> Runners:
    """(publish, consume, ping) callables taking (queue name, count) for a client."""
    if lib == "raw":
        return (lambda q, n: raw_publish(params, q, n), lambda q, n: raw_consume(params, q, n),
                lambda q, m: raw_ping(params, q, m))
    mod, url = import_module(lib), params["url"]
    return (lambda q, n: km_publish(mod, url, q, n), lambda q, n: km_consume(mod, url, q, n),
            lambda q, m: km_ping(mod, url, q, m))


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], "KOMBU_GREEN_REDIS_URL",
                         "redis://127.0.0.1:6379/0")
    parser.add_argument("--no-server-bench", action="store_true",
                        help="do not run redis-benchmark after the rounds")
    args = parse(parser)
    params = server_params(args.url)
    try:
        client = raw_client(params)
        try:
            server_version = client.info("server").get("redis_version", "?")
        finally:
            client.close()
    except (OSError, redis.RedisError) as exc:
        print(f"cannot reach Redis at {params['display']}: {exc}", file=sys.stderr)
        return 2
    env = {"python": platform.python_version(), "gevent": version("gevent"),
           "kombu": version("kombu"), "redis-py": version("redis"),
           "hiredis": version("hiredis"), "kombu_green": version("kombu_green"),
           "redis-server": server_version, "monkey_patched": PATCHED,
           "messages": args.messages, "pings": args.pings, "repeat": args.repeat,
           "server": params["display"]}
    print(env_line(env), file=sys.stderr, flush=True)

    run = Run(args, TITLES, GOALS)
    token = uuid.uuid4().hex[:8]  # queue names never met before on this server
    try:
        run.interleave(lambda lib, rnd: run.round(
            lib, rnd, runners(lib, params), lambda q, n: queue_size(params, q, n),
            f"bench.{lib}.{os.getpid()}.{token}.r{rnd}"))
    finally:
        try:
            leftover = sweep(params, run.queues)
        except (OSError, redis.RedisError) as exc:
            run.errors.append(f"could not check that the queues were deleted: {exc}")
            leftover = 0
    if leftover:
        run.errors.append(f"{leftover} queue(s) left keys behind; they have been deleted")
    notes: List[str] = []
    extra: Dict[str, Any] = {}
    if not args.no_server_bench:
        print("  redis-benchmark ...", file=sys.stderr, flush=True)
        notes, extra = server_limit(params)
    return run.finish(env, notes, extra)


if __name__ == "__main__":
    sys.exit(main())
