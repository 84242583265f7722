#!/usr/bin/env python
"""Side-by-side beanstalkd figures: kombu_green and raw greenstalk on one server.

Measures publish and consume throughput and publish-to-delivery latency
for both clients in one process, interleaving them round by round, and
prints the figures with kombu_green's ratio to raw greenstalk. kombu has
no beanstalk transport, so its column stays empty. See bench/README.rst
for how to run it and how to read it.
"""
import sys

# Decide on monkey-patching before anything imports socket, as a gunicorn
# gevent worker does; raw greenstalk is only cooperative patched.
PATCHED = "--no-patch" not in sys.argv[1:]
if PATCHED:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import uuid  # noqa: E402
from time import perf_counter  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import greenstalk  # noqa: E402
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

import kombu_green  # noqa: E402
from kombu_green.transport.beanstalk.config import tube_name  # noqa: E402

TITLES: Titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw greenstalk"}
#: (metric, other client, minimum kombu_green/other ratio) the project aims for:
#: none set for beanstalk yet; the table gives the ratios to raw greenstalk.
GOALS: Goals = []
#: Seconds a raw reserve waits (greenstalk takes whole seconds).
RESERVE_TIMEOUT = 10


# -- the server: URL pieces and housekeeping with plain greenstalk ----------


def server_params(url: str) -> Dict[str, Any]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 11300
    return {"url": url, "host": host, "port": port, "display": f"beanstalk://{host}:{port}"}


def raw_client(params: Dict[str, Any]) -> "greenstalk.Client[bytes]":
    """A plain greenstalk client, for the raw column and for housekeeping."""
    return greenstalk.Client((params["host"], params["port"]), encoding=None)


def queue_size(params: Dict[str, Any], name: str, n: int) -> None:
    """The tube must hold exactly n ready jobs. Every put was answered, so the
    count is exact at once: there is nothing to wait for."""
    with raw_client(params) as client:
        try:
            count = client.stats_tube(tube_name(name))["current-jobs-ready"]
        except greenstalk.NotFoundError:
            count = 0
    if count != n:
        raise BenchError(f"tube holds {count} ready jobs after publishing {n}")


def sweep(params: Dict[str, Any], queues: List[str]) -> int:
    """Delete every job the bench's tubes still hold; return how many tubes had any.
    Only these tubes: the server can hold other work."""
    leftover = 0
    with raw_client(params) as client:
        for name in queues:
            client.use(tube_name(name))
            found = False
            for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                while True:
                    try:
                        client.delete(peek())
                        found = True
                    except greenstalk.NotFoundError:
                        break
            leftover += found
    return leftover


# -- raw greenstalk ------------------------------------------------------------


def reserver(client: "greenstalk.Client[bytes]", sink: Callable[[bytes], Any]) -> Callable[..., None]:
    """A drain_events look-alike: one reserve, the body handed to sink, then delete."""

    def drain(timeout: float) -> None:
        try:
            job = client.reserve(timeout=RESERVE_TIMEOUT)
        except greenstalk.TimedOutError:
            raise TimeoutError from None
        sink(job.body)
        client.delete(job)

    return drain


def raw_publish(params: Dict[str, Any], name: str, n: int) -> float:
    with raw_client(params) as client:
        client.use(name)
        start = perf_counter()
        for i in range(n):
            client.put(json_bytes(i))
        return perf_counter() - start


def raw_consume(params: Dict[str, Any], name: str, n: int) -> Tuple[float, List[int]]:
    """reserve, decode, delete: two round trips per message, one connection."""
    ids: List[int] = []
    with raw_client(params) as client:
        client.watch(name)
        client.ignore("default")
        drain = reserver(client, lambda raw: ids.append(json.loads(raw)["id"]))
        start = perf_counter()
        drain_until(drain, ids, n)
        return perf_counter() - start, ids


def raw_ping(params: Dict[str, Any], name: str, m: int) -> List[float]:
    arrived: List[float] = []

    def on_message(raw: bytes) -> None:
        arrived.append(perf_counter())
        json.loads(raw)

    with raw_client(params) as pclient, raw_client(params) as cclient:
        pclient.use(name)
        cclient.watch(name)
        cclient.ignore("default")
        return ping_loop(lambda i: pclient.put(json_bytes(i)), reserver(cclient, on_message),
                         arrived, m)


# -- driver ------------------------------------------------------------------


def runners(lib: str, params: Dict[str, Any]) -> Runners:
    """(publish, consume, ping) callables taking (queue name, count) for a client."""
    if lib == "raw":
        return (lambda q, n: raw_publish(params, q, n), lambda q, n: raw_consume(params, q, n),
                lambda q, m: raw_ping(params, q, m))
    url = params["url"]
    return (lambda q, n: km_publish(kombu_green, url, q, n),
            lambda q, n: km_consume(kombu_green, url, q, n),
            lambda q, m: km_ping(kombu_green, url, q, m))


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], "KOMBU_GREEN_BEANSTALK_URL",
                         "beanstalk://127.0.0.1:11300")
    parser.set_defaults(only="kombu_green,raw")
    args = parse(parser)
    if "kombu" in args.libs:
        parser.error("kombu has no beanstalk transport: --only takes kombu_green,raw")
    params = server_params(args.url)
    try:
        with raw_client(params) as client:
            server_version = client.stats().get("version", "?")
    except (OSError, greenstalk.Error) as exc:
        print(f"cannot reach beanstalkd at {params['display']}: {exc}", file=sys.stderr)
        return 2
    env = {"python": platform.python_version(), "gevent": version("gevent"),
           "greenstalk": version("greenstalk"), "kombu_green": version("kombu_green"),
           "beanstalkd": server_version, "monkey_patched": PATCHED,
           "messages": args.messages, "pings": args.pings, "repeat": args.repeat,
           "server": params["display"]}
    print(env_line(env), file=sys.stderr, flush=True)

    run = Run(args, TITLES, GOALS)
    token = uuid.uuid4().hex[:8]  # tube names never met before on this server
    try:
        run.interleave(lambda lib, rnd: run.round(
            lib, rnd, runners(lib, params), lambda q, n: queue_size(params, q, n),
            f"bench.{lib}.{os.getpid()}.{token}.r{rnd}"))
    finally:
        try:
            leftover = sweep(params, run.queues)
        except (OSError, greenstalk.Error) as exc:
            run.errors.append(f"could not check that the tubes were emptied: {exc}")
            leftover = 0
    if leftover:
        run.errors.append(f"{leftover} tube(s) still held jobs; they have been deleted")
    return run.finish(env)


if __name__ == "__main__":
    sys.exit(main())
