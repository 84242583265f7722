#!/usr/bin/env python
"""Side-by-side MongoDB figures: kombu_green, kombu and raw pymongo on one server.

Measures publish and consume throughput and publish-to-delivery latency
for the three clients in one process, interleaving them round by round,
and prints the figures with kombu_green's ratios to the other two. See
bench/README.rst for how to run it and how to read it.

The three clients, on one database, each in collections of its own:

* kombu_green: ``Connection('mongodb://.../DB?collection_prefix=...')``;
* kombu 5's MongoDB transport, ``Connection('mongodb://.../DB')`` with its
  collection names and ``polling_interval`` (0.01 s instead of 1 s, so its
  empty polls cost it no more than kombu_green's first back-off step) in
  ``transport_options``. It deletes a message as it receives it
  (``find_one_and_delete``): at-most-once, the ack is bookkeeping only;
* raw pymongo, at-least-once like kombu_green: ``insert_one`` per message;
  to consume, ``find_one_and_update`` takes a lease on the oldest ready
  document of the queue (index ``(q, lease, _id)``), the body is decoded,
  then ``delete_one`` acks it: two round trips per message, no prefetch.
  An empty poll sleeps 10 ms.

Throughput goes in batches: publish ``--batch`` messages, consume them,
and again until N, so a queue never holds more than a batch (the server's
cost per operation grows with the backlog).
"""
import sys

# Decide on monkey-patching before anything imports socket, as a gunicorn
# gevent worker does; kombu's MongoDB transport and plain pymongo are only
# cooperative patched.
PATCHED = "--no-patch" not in sys.argv[1:]
if PATCHED:
    from gevent import monkey

    monkey.patch_all()

import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from importlib import import_module  # noqa: E402
from time import perf_counter  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

import pymongo  # noqa: E402
from _common import (  # noqa: E402
    BenchError,
    Goals,
    Run,
    Titles,
    Unavailable,
    check_ids,
    drain_until,
    env_line,
    json_bytes,
    km_consumer,
    km_ping,
    make_parser,
    parse,
    payload,
    percentile,
    ping_loop,
    version,
)
from bson import Binary, ObjectId  # noqa: E402
from pymongo import errors as mongo_errors  # noqa: E402
from pymongo import uri_parser  # noqa: E402

TITLES: Titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw pymongo"}
#: No goal is set for MongoDB yet: the table and ratios only.
GOALS: Goals = []
DEFAULT_DATABASE = "kombu_default"  # kombu's and kombu_green's default alike
KOMBU_POLLING_INTERVAL = 0.01
RAW_POLL = 0.01  # seconds a raw consumer sleeps after an empty poll
BATCH = 200


# -- the server: URL pieces, names, housekeeping with plain pymongo ----------


def server_params(url: str) -> Dict[str, Any]:
    """The database every client uses, the URL each client gets, how to show it."""
    parsed = uri_parser.parse_uri(url, warn=True)
    database = parsed.get("database") or DEFAULT_DATABASE
    parts = urlsplit(url)
    # The same database for all three, even when the URL names none.
    with_db = urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))
    hosts = ",".join(f"{h}:{p}" for h, p in parsed["nodelist"])
    return {"url": with_db, "database": database,
            "display": f"{parts.scheme}://{hosts}/{database}"}


def client_of(params: Dict[str, Any]) -> pymongo.MongoClient:
    return pymongo.MongoClient(params["url"], serverSelectionTimeoutMS=5000)


class Names:
    """Collection names of one bench invocation, a distinct set per client;
    all start with ``bench.PID.RANDOM.`` and are dropped at the end."""

    def __init__(self) -> None:
        self.stem = f"bench.{os.getpid()}.{uuid.uuid4().hex[:8]}."
        self.kombu_green_prefix = self.stem + "kg"  # our transport appends .messages etc.
        self.kombu = {key: f"{self.stem}kombu.{suffix}" for key, suffix in (
            ("messages_collection", "messages"), ("routing_collection", "routing"),
            ("broadcast_collection", "broadcast"), ("queues_collection", "queues"))}
        self.raw = self.stem + "raw.messages"

    def messages(self, lib: str) -> Tuple[str, str]:
        """(collection holding lib's messages, field naming their queue)."""
        if lib == "kombu_green":
            return self.kombu_green_prefix + ".messages", "q"
        if lib == "kombu":
            return self.kombu["messages_collection"], "queue"
        return self.raw, "q"


def queue_size(db: Any, names: Names, lib: str, queue: str, n: int) -> None:
    """The queue must hold exactly n messages. Every insert was answered, so
    the count is exact at once."""
    collection, field = names.messages(lib)
    count = db[collection].count_documents({field: queue})
    if count != n:
        raise BenchError(f"queue holds {count} messages after publishing {n}")


def sweep(db: Any, names: Names, libs: List[str]) -> Dict[str, int]:
    """Count what each client's queues left (every run deletes its queues),
    then drop every collection of this invocation; the database keeps
    anything else it holds."""
    existing = set(db.list_collection_names())
    left = {}
    for lib in libs:
        collection, _ = names.messages(lib)
        if collection in existing:
            left[lib] = db[collection].count_documents({})
    if names.kombu_green_prefix + ".queues" in existing:
        left["kombu_green queues"] = db[names.kombu_green_prefix + ".queues"].count_documents({})
    for name in existing:
        if name.startswith(names.stem):
            db.drop_collection(name)
    return left


# -- kombu and kombu_green: one code path, given the module ------------------


def flush_acks(conn: Any) -> None:
    """Wait until the acks given so far are recorded by the server.

    kombu_green sends acks in batches at the next turn of the hub: without
    this the last batch's deletes would run, unclocked, in the next publish
    loop. kombu deleted each message as it received it; there is nothing to
    wait for.
    """
    store = getattr(conn.transport, "store", None)
    acking = getattr(store, "_acking", None)
    if acking is not None:
        acking.join()


def km_batches(mod: ModuleType, url: str, name: str, n: int, batch: int,
               settle: Callable[[str, int], None],
               options: Dict[str, Any]) -> Tuple[float, float, List[int]]:
    """Publish ``batch`` messages on one connection, consume them on another
    (prefetch, manual acks), until n; return (publish seconds, consume
    seconds, ids). The consumer stays subscribed throughout."""
    ids: List[int] = []

    def on_message(body: Any, message: Any) -> None:
        ids.append(body["id"])
        message.ack()

    published = consumed = 0.0
    with mod.Connection(url, transport_options=options) as pconn, \
            mod.Connection(url, transport_options=options) as cconn:
        consumer = km_consumer(mod, cconn.channel(), name, on_message)
        queue = consumer.queues[0]
        producer = mod.Producer(pconn.channel())
        for first in range(0, n, batch):
            last = min(n, first + batch)
            start = perf_counter()
            for i in range(first, last):
                producer.publish(payload(i), routing_key=name, exchange="",
                                 serializer="json", delivery_mode=2)
            published += perf_counter() - start
            settle(name, last - first)
            start = perf_counter()
            drain_until(cconn.drain_events, ids, last)
            flush_acks(cconn)
            consumed += perf_counter() - start
        consumer.cancel()
        queue.delete()
    return published, consumed, ids


# -- raw pymongo ---------------------------------------------------------------


def raw_document(name: str, i: int) -> Dict[str, Any]:
    return {"q": name, "lease": None, "m": Binary(json_bytes(i))}


def leaser(collection: Any, name: str, sink: Callable[[bytes], Any]) -> Callable[..., None]:
    """A drain_events look-alike: lease the oldest ready message, hand its body
    to sink, delete it (the ack); poll every RAW_POLL seconds while empty."""
    token = ObjectId()
    query = {"q": name, "lease": None}

    def drain(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            now = datetime.datetime.now(datetime.timezone.utc)
            document = collection.find_one_and_update(
                query, {"$set": {"lease": token, "lt": now}}, sort=[("_id", 1)])
            if document is not None:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError
            time.sleep(RAW_POLL)
        sink(bytes(document["m"]))
        collection.delete_one({"_id": document["_id"], "lease": token})

    return drain


def raw_batches(params: Dict[str, Any], collection_name: str, name: str, n: int, batch: int,
                settle: Callable[[str, int], None]) -> Tuple[float, float, List[int]]:
    ids: List[int] = []
    pclient, cclient = client_of(params), client_of(params)
    try:
        pcoll = pclient[params["database"]][collection_name]
        ccoll = cclient[params["database"]][collection_name]
        ccoll.create_index([("q", 1), ("lease", 1), ("_id", 1)])
        drain = leaser(ccoll, name, lambda raw: ids.append(json.loads(raw)["id"]))
        published = consumed = 0.0
        for first in range(0, n, batch):
            last = min(n, first + batch)
            start = perf_counter()
            for i in range(first, last):
                pcoll.insert_one(raw_document(name, i))
            published += perf_counter() - start
            settle(name, last - first)
            start = perf_counter()
            drain_until(drain, ids, last)
            consumed += perf_counter() - start
        ccoll.delete_many({"q": name})
        return published, consumed, ids
    finally:
        pclient.close()
        cclient.close()


def raw_ping(params: Dict[str, Any], collection_name: str, name: str, m: int) -> List[float]:
    arrived: List[float] = []
    pclient, cclient = client_of(params), client_of(params)

    def on_message(raw: bytes) -> None:
        arrived.append(perf_counter())
        json.loads(raw)

    try:
        pcoll = pclient[params["database"]][collection_name]
        ccoll = cclient[params["database"]][collection_name]
        def send(i: int) -> None:
            pcoll.insert_one(raw_document(name, i))

        latencies = ping_loop(send, leaser(ccoll, name, on_message), arrived, m)
        ccoll.delete_many({"q": name})
        return latencies
    finally:
        pclient.close()
        cclient.close()


# -- driver ------------------------------------------------------------------

Tput = Callable[[str, int, Callable[[str, int], None]], Tuple[float, float, List[int]]]
Ping = Callable[[str, int], List[float]]


def runners(lib: str, params: Dict[str, Any], names: Names, batch: int) -> Tuple[Tput, Ping]:
    """(batched publish-and-consume, ping) callables for a client."""
    if lib == "raw":
        return (lambda q, n, settle: raw_batches(params, names.raw, q, n, batch, settle),
                lambda q, m: raw_ping(params, names.raw, q, m))
    mod = import_module(lib)
    if lib == "kombu_green":
        url = params["url"] + ("&" if "?" in params["url"] else "?") + \
            f"collection_prefix={names.kombu_green_prefix}"
        options: Dict[str, Any] = {}
    else:
        url = params["url"]
        options = dict(names.kombu, polling_interval=KOMBU_POLLING_INTERVAL)
    return (lambda q, n, settle: km_batches(mod, url, q, n, batch, settle, options),
            lambda q, m: km_ping(mod, url, q, m, transport_options=options))


def one_round(run: Run, lib: str, rnd: int, tput: Tput, ping: Ping,
              settle: Callable[[str, int], None], base: str) -> None:
    """Batched publish and consume, then the ping-pong, of one client."""
    n, name = run.args.messages, base + ".tput"
    run.queues.append(name)
    published, consumed, ids = tput(name, n, settle)
    check_ids(ids, n)
    run.results[lib]["publish"].append(n / published)
    run.results[lib]["consume"].append(n / consumed)
    run.queues.append(base + ".ping")
    latencies = [s * 1e6 for s in ping(base + ".ping", run.args.pings)]
    run.results[lib]["p50"].append(percentile(latencies, 50))
    run.results[lib]["p99"].append(percentile(latencies, 99))
    run.progress(lib, rnd)


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], "KOMBU_GREEN_MONGODB_URL",
                         "mongodb://127.0.0.1:27017/kombu_green")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"messages published, then consumed, at a time (default {BATCH})")
    parser.set_defaults(messages=2000, pings=500)
    args = parse(parser)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    params = server_params(args.url)
    admin = client_of(params)
    try:
        info = admin.admin.command("buildInfo")
    except (OSError, mongo_errors.PyMongoError) as exc:
        print(f"cannot reach MongoDB at {params['display']}: {exc}", file=sys.stderr)
        return 2
    server = info.get("version", "?")
    if info.get("secantusVersion"):
        server += f" (SecantusDB {info['secantusVersion']})"
    env = {"python": platform.python_version(), "gevent": version("gevent"),
           "kombu": version("kombu"), "pymongo": version("pymongo"),
           "kombu_green": version("kombu_green"), "mongodb": server,
           "monkey_patched": PATCHED, "messages": args.messages, "batch": args.batch,
           "pings": args.pings, "repeat": args.repeat,
           "kombu polling_interval": KOMBU_POLLING_INTERVAL, "server": params["display"]}
    print(env_line(env), file=sys.stderr, flush=True)

    run = Run(args, TITLES, GOALS)
    names = Names()
    db = admin[params["database"]]

    def round_of(lib: str, rnd: int) -> None:
        tput, ping = runners(lib, params, names, args.batch)
        settle = lambda q, n: queue_size(db, names, lib, q, n)  # noqa: E731
        base = f"bench.{lib}.r{rnd}"
        if lib != "kombu":
            one_round(run, lib, rnd, tput, ping, settle, base)
            return
        try:  # kombu's transport may not cope with this server: n/a, not an error
            one_round(run, lib, rnd, tput, ping, settle, base)
        except Exception as exc:
            raise Unavailable(f"kombu's MongoDB transport failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    try:
        run.interleave(round_of)
    finally:
        try:
            left = sweep(db, names, args.libs)
        except (OSError, mongo_errors.PyMongoError) as exc:
            run.errors.append(f"could not check and drop the bench's collections: {exc}")
            left = {}
        finally:
            admin.close()
    for what, count in left.items():
        if count and what not in run.unavailable:
            run.errors.append(f"{what}: {count} document(s) left behind; dropped")
    return run.finish(env)


if __name__ == "__main__":
    sys.exit(main())
