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

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
from importlib import import_module  # noqa: E402
from time import perf_counter  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402

import amqp  # noqa: E402

from _common import (LIBS, TITLES, BenchError, await_count, broker_params,  # noqa: E402
                     json_bytes, payload, percentile, raw_connect, report, summarize,
                     sweep, version)

PREFETCH = 100
DRAIN_TIMEOUT = 10.0  # seconds without any delivery before a run counts as failed
PING_WARMUP = 50  # round trips done before the recorded ones


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


def km_consume(mod: ModuleType, url: str, name: str, n: int) -> Tuple[float, List[int]]:
    """Consume n messages with manual acks; the queue is deleted afterwards."""
    ids: List[int] = []

    def on_message(body: Any, message: Any) -> None:
        ids.append(body["id"])
        message.ack()

    with mod.Connection(url) as conn:
        channel = conn.channel()
        queue = km_queue(mod, name)(channel)
        consumer = mod.Consumer(channel, queues=[queue], callbacks=[on_message],
                                accept=["json"])
        consumer.qos(prefetch_count=PREFETCH)
        consumer.consume()
        start = perf_counter()
        drain_until(conn.drain_events, ids, n)
        elapsed = perf_counter() - start
        consumer.cancel()
        queue.delete()
    return elapsed, ids


def km_ping(mod: ModuleType, url: str, name: str, m: int) -> List[float]:
    """m publish-to-delivery round trips over two connections, in seconds."""
    arrived: List[float] = []

    def on_message(body: Any, message: Any) -> None:
        arrived.append(perf_counter())
        message.ack()

    with mod.Connection(url) as pconn, mod.Connection(url) as cconn:
        queue = km_queue(mod, name)(cconn.channel())
        queue.declare()
        producer = mod.Producer(pconn.channel())
        consumer = mod.Consumer(queue.channel, queues=[queue], callbacks=[on_message],
                                accept=["json"])
        consumer.qos(prefetch_count=PREFETCH)
        consumer.consume()

        def send(i: int) -> None:
            producer.publish(payload(i), routing_key=name, exchange="",
                             serializer="json", delivery_mode=2)

        latencies = ping_loop(send, cconn.drain_events, arrived, m)
        consumer.cancel()
        queue.delete()
    return latencies


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


# -- shared loops ------------------------------------------------------------


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


# -- driver ------------------------------------------------------------------


def runners(lib: str, params: Dict[str, Any]) -> Tuple[Callable, Callable, Callable]:
    """(publish, consume, ping) callables taking (queue name, count) for a client."""
    if lib == "raw":
        return (lambda q, n: raw_publish(params, q, n), lambda q, n: raw_consume(params, q, n),
                lambda q, m: raw_ping(params, q, m))
    mod = import_module(lib)
    url = params["kombu_green_url" if lib == "kombu_green" else "kombu_url"]
    return (lambda q, n: km_publish(mod, url, q, n), lambda q, n: km_consume(mod, url, q, n),
            lambda q, m: km_ping(mod, url, q, m))


def run_round(lib: str, params: Dict[str, Any], rnd: int, args: argparse.Namespace,
              queues: List[str], results: Dict[str, Dict[str, List[float]]]) -> None:
    """One publish, consume and ping-pong run of one client, with its checks."""
    publish, consume, ping = runners(lib, params)
    base = f"bench.{lib}.{os.getpid()}.r{rnd}"
    name = base + ".tput"
    queues.append(name)
    elapsed = publish(name, args.messages)
    await_count(params, name, args.messages)
    results[lib]["publish"].append(args.messages / elapsed)
    elapsed, ids = consume(name, args.messages)
    check_ids(ids, args.messages)
    results[lib]["consume"].append(args.messages / elapsed)
    queues.append(base + ".ping")
    latencies = [s * 1e6 for s in ping(base + ".ping", args.pings)]
    results[lib]["p50"].append(percentile(latencies, 50))
    results[lib]["p99"].append(percentile(latencies, 99))
    r = results[lib]
    print(f"  round {rnd + 1} {TITLES[lib]:<12} publish {r['publish'][-1]:>9,.0f}/s  consume "
          f"{r['consume'][-1]:>9,.0f}/s  p50 {r['p50'][-1]:>6,.0f}us  p99 {r['p99'][-1]:>6,.0f}us",
          file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "KOMBU_GREEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    parser.add_argument("-n", "--messages", type=int, default=20000)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(LIBS),
                        help="comma-separated subset of: " + ",".join(LIBS))
    parser.add_argument("--no-patch", action="store_true",
                        help="do not call gevent.monkey.patch_all() first")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    libs = [lib.strip() for lib in args.only.split(",") if lib.strip()]
    unknown = set(libs) - set(LIBS)
    if unknown or not libs:
        parser.error(f"--only takes a subset of {','.join(LIBS)}")
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
    env_line = ", ".join(f"{k} {v}" for k, v in env.items())
    print(env_line, file=sys.stderr, flush=True)

    results: Dict[str, Dict[str, List[float]]] = {
        lib: {"publish": [], "consume": [], "p50": [], "p99": []} for lib in libs}
    errors: List[str] = []
    queues: List[str] = []
    active = list(libs)
    try:
        for rnd in range(args.repeat):
            shift = rnd % len(libs)  # rotate who goes first each round
            for lib in libs[shift:] + libs[:shift]:
                if lib not in active:
                    continue
                try:
                    run_round(lib, params, rnd, args, queues, results)
                except Exception as exc:  # one broken client must not hide the others
                    errors.append(f"{TITLES[lib]} round {rnd + 1}: "
                                  f"{type(exc).__name__}: {exc}")
                    print("  " + errors[-1], file=sys.stderr, flush=True)
                    active.remove(lib)
    finally:
        try:
            leftover = sweep(params, queues)
        except (OSError, amqp.exceptions.AMQPError) as exc:
            errors.append(f"could not check that the queues were deleted: {exc}")
            leftover = 0
    if leftover:
        errors.append(f"{leftover} queue(s) were left behind and have been deleted")

    summary = summarize(results)
    print()
    print(env_line)
    ratios = report(summary, libs)
    for err in errors:
        print("ERROR: " + err)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "runs": results, "summary": summary,
                       "ratios": ratios, "errors": errors}, fh, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
