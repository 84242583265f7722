#!/usr/bin/env python
"""Side-by-side AMQP figures: kombu_green, kombu and raw py-amqp on one broker.

Measures publish and consume throughput and publish-to-delivery latency
for the three clients in one process, interleaving them round by round,
and prints the figures with kombu_green's ratios to the other two. See
bench/README.rst for how to run it and how to read it.
"""
import sys

# Decide on monkey-patching before anything imports socket, as a gunicorn
# gevent worker does; kombu's py-amqp transport is only cooperative patched.
PATCHED = "--no-patch" not in sys.argv[1:]
if PATCHED:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from importlib import import_module  # noqa: E402
from time import perf_counter  # noqa: E402
from typing import Any, Dict, List, Tuple  # noqa: E402
from urllib.parse import quote, unquote, urlsplit  # noqa: E402

import amqp  # noqa: E402
from _common import (  # noqa: E402
    PREFETCH,
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

TITLES: Titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw py-amqp"}
#: (metric, other client, minimum kombu_green/other ratio) the project aims for
GOALS: Goals = [("consume", "kombu", 1.2), ("consume", "raw", 0.9), ("publish", "kombu", 1.0)]


# -- the broker: URL pieces and housekeeping with plain py-amqp -------------


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


# -- AMQP housekeeping, done with plain py-amqp whatever is measured ------


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


# -- raw py-amqp -------------------------------------------------------------


def raw_message(i: int) -> amqp.Message:
    return amqp.Message(json_bytes(i), content_type="application/json",
                        content_encoding="utf-8", delivery_mode=2)


def raw_publish(params: Dict[str, Any], name: str, n: int) -> float:
    conn = raw_connect(params)
    try:
        channel = conn.channel()
        channel.queue_declare(name, durable=False, auto_delete=False)
        start = perf_counter()
        for i in range(n):
            channel.basic_publish(raw_message(i), exchange="", routing_key=name)
        channel.queue_declare(name, passive=True)
        return perf_counter() - start
    finally:
        conn.close()


def raw_consume(params: Dict[str, Any], name: str, n: int) -> Tuple[float, List[int]]:
    ids: List[int] = []
    conn = raw_connect(params)
    try:
        channel = conn.channel()

        def on_message(msg: amqp.Message) -> None:
            ids.append(json.loads(msg.body)["id"])
            channel.basic_ack(msg.delivery_tag)

        channel.basic_qos(0, PREFETCH, False)
        tag = channel.basic_consume(name, callback=on_message, no_ack=False)
        start = perf_counter()
        drain_until(conn.drain_events, ids, n)
        elapsed = perf_counter() - start
        channel.basic_cancel(tag)
        channel.queue_delete(name)
        return elapsed, ids
    finally:
        conn.close()


def raw_ping(params: Dict[str, Any], name: str, m: int) -> List[float]:
    arrived: List[float] = []
    pconn, cconn = raw_connect(params), raw_connect(params)
    try:
        pchan, cchan = pconn.channel(), cconn.channel()
        cchan.queue_declare(name, durable=False, auto_delete=False)

        def on_message(msg: amqp.Message) -> None:
            arrived.append(perf_counter())
            json.loads(msg.body)
            cchan.basic_ack(msg.delivery_tag)

        cchan.basic_qos(0, PREFETCH, False)
        tag = cchan.basic_consume(name, callback=on_message, no_ack=False)

        def send(i: int) -> None:
            pchan.basic_publish(raw_message(i), exchange="", routing_key=name)

        latencies = ping_loop(send, cconn.drain_events, arrived, m)
        cchan.basic_cancel(tag)
        cchan.queue_delete(name)
        return latencies
    finally:
        pconn.close()
        cconn.close()


# -- driver ------------------------------------------------------------------


def runners(lib: str, params: Dict[str, Any]) -> Runners:
    """(publish, consume, ping) callables taking (queue name, count) for a client."""
    if lib == "raw":
        return (lambda q, n: raw_publish(params, q, n), lambda q, n: raw_consume(params, q, n),
                lambda q, m: raw_ping(params, q, m))
    mod = import_module(lib)
    url = params["kombu_green_url" if lib == "kombu_green" else "kombu_url"]
    return (lambda q, n: km_publish(mod, url, q, n), lambda q, n: km_consume(mod, url, q, n),
            lambda q, m: km_ping(mod, url, q, m))


def main() -> int:
    args = parse(make_parser(__doc__.splitlines()[0], "KOMBU_GREEN_AMQP_URL",
                             "amqp://guest:guest@127.0.0.1:5672//"))
    params = broker_params(args.url)
    env = {"python": platform.python_version(), "gevent": version("gevent"),
           "kombu": version("kombu"), "amqp": version("amqp"),
           "kombu_green": version("kombu_green"), "monkey_patched": PATCHED,
           "messages": args.messages, "pings": args.pings, "repeat": args.repeat,
           "broker": params["display"]}
    try:
        raw_connect(params).close()
    except (OSError, amqp.exceptions.AMQPError) as exc:
        print(f"cannot reach the broker at {params['display']}: {exc}", file=sys.stderr)
        return 2
    print(env_line(env), file=sys.stderr, flush=True)

    run = Run(args, TITLES, GOALS)
    try:
        run.interleave(lambda lib, rnd: run.round(
            lib, rnd, runners(lib, params), lambda q, n: await_count(params, q, n),
            f"bench.{lib}.{os.getpid()}.r{rnd}"))
    finally:
        try:
            leftover = sweep(params, run.queues)
        except (OSError, amqp.exceptions.AMQPError) as exc:
            run.errors.append(f"could not check that the queues were deleted: {exc}")
            leftover = 0
    if leftover:
        run.errors.append(f"{leftover} queue(s) were left behind and have been deleted")
    return run.finish(env)


if __name__ == "__main__":
    sys.exit(main())
