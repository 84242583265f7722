#!/usr/bin/env python
"""MongoDB side by side: kombu_green, kombu and raw pymongo on one database.

Each client has collections of its own, all named ``bench.PID.RANDOM.*``
and dropped at the end. kombu runs with ``polling_interval`` 0.01 s (not
1 s) and deletes a message as it receives it (at most once); raw pymongo,
at least once like kombu_green, leases the oldest ready document with
``find_one_and_update`` and deletes it as the ack. Throughput goes in
batches (``--batch``, default 200), as the server's cost per operation
grows with the backlog. More in bench/README.rst.
"""
import harness  # first: it settles monkey-patching before socket is imported

# isort: split
import datetime
import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Tuple
from urllib.parse import urlsplit, urlunsplit

import pymongo
from bson import Binary, ObjectId
from flows import BrokerBench, Ends, Sink, json_bytes
from harness import BenchError, Run, Unavailable
from pymongo import uri_parser

DEFAULT_DATABASE = "kombu_default"  # kombu's and kombu_green's default alike
KOMBU_POLLING_INTERVAL = 0.01
RAW_POLL = 0.01  # seconds a raw consumer sleeps after an empty poll


def leaser(collection: Any, names: List[str], sink: Callable[[bytes], Any]) -> Callable[..., None]:
    """A drain_events look-alike: lease the oldest ready message, hand its body
    to sink, delete it (the ack); poll every RAW_POLL seconds while empty."""
    token = ObjectId()
    query = {"q": names[0] if len(names) == 1 else {"$in": names}, "lease": None}

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


class MongodbBench(BrokerBench):
    url_env, default_url = "KOMBU_GREEN_MONGODB_URL", "mongodb://127.0.0.1:27017/kombu_green"
    titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw pymongo"}
    defaults = {**BrokerBench.defaults, "messages": 2000, "pings": 500, "batch": 200}
    #: Documents stay (leased) until their ack: every batch's count can be checked.
    counts_unacked = True

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        parsed = uri_parser.parse_uri(args.url, warn=True)
        self.database = parsed.get("database") or DEFAULT_DATABASE
        parts = urlsplit(args.url)
        # the same database for all three, even when the URL names none
        self.url: str = urlunsplit((parts.scheme, parts.netloc, "/" + self.database, parts.query, ""))
        self.display = f"{parts.scheme}://{','.join(f'{h}:{p}' for h, p in parsed['nodelist'])}/{self.database}"
        self.kombu_green_prefix = self.stem + ".kg"  # our transport appends .messages, .queues
        self.kombu_collections = {f"{key}_collection": f"{self.stem}.kombu.{key}"
                                  for key in ("messages", "routing", "broadcast", "queues")}
        self.admin: "pymongo.MongoClient[Dict[str, Any]]" = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000)
        self.db = self.admin[self.database]

    def open(self) -> Dict[str, Any]:
        info = self.admin.admin.command("buildInfo")
        server = info.get("version", "?") + (f" (SecantusDB {info['secantusVersion']})"
                                              if info.get("secantusVersion") else "")
        return {**harness.versions("kombu", "pymongo"), "mongodb": server,
                "kombu polling_interval": KOMBU_POLLING_INTERVAL}

    def messages(self, lib: str) -> Tuple[str, str]:
        """(the collection holding lib's messages, the field naming their queue)."""
        if lib == "kombu_green":
            return self.kombu_green_prefix + ".messages", "q"
        if lib == "kombu":
            return self.kombu_collections["messages_collection"], "queue"
        return self.stem + ".raw.messages", "q"

    def km_url(self, lib: str) -> str:
        """kombu_green's collections get this run's prefix through its URL; kombu's come as options."""
        if lib == "kombu":
            return self.url
        return self.url + ("&" if "?" in self.url else "?") + f"collection_prefix={self.kombu_green_prefix}"

    def km_options(self, lib: str) -> Dict[str, Any]:
        if lib == "kombu":
            return {"transport_options": dict(self.kombu_collections, polling_interval=KOMBU_POLLING_INTERVAL)}
        return {}

    def km_acked(self, conn: Any) -> None:
        """kombu_green sends acks in batches at the next turn of the hub: without
        this wait the last batch's deletes would run, unclocked, in the next
        publish loop. kombu deleted each message as it took it."""
        acking = getattr(getattr(conn.transport, "store", None), "_acking", None)
        if acking is not None:
            acking.join()

    def round(self, lib: str, rnd: int) -> Dict[str, float]:
        """kombu's transport may not cope with this server: n/a, not an error."""
        try:
            return super().round(lib, rnd)
        except Exception as exc:
            if lib != "kombu":
                raise
            raise Unavailable(f"kombu's MongoDB transport failed: {type(exc).__name__}: {exc}") from exc

    def settle(self, lib: str, names: List[str], n: int) -> None:
        """Every insert was answered: the count is exact at once."""
        collection, field = self.messages(lib)
        count = self.db[collection].count_documents({field: {"$in": names}})
        if count != n:
            raise BenchError(f"the queues hold {count} messages after publishing {n}")

    def close(self, run: Run) -> List[str]:
        """Count what each client's queues left, then drop every collection of
        this invocation; the database keeps anything else it holds."""
        errors = []
        try:
            existing = set(self.db.list_collection_names())
            counted = [(lib, self.messages(lib)[0]) for lib in run.libs if lib not in run.unavailable]
            counted.append(("kombu_green queues", self.kombu_green_prefix + ".queues"))
            for what, collection in counted:
                left = self.db[collection].count_documents({}) if collection in existing else 0
                if left:
                    errors.append(f"{what}: {left} document(s) left behind; dropped")
            for name in existing:
                if name.startswith(self.stem):
                    self.db.drop_collection(name)
        finally:
            self.admin.close()
        return errors

    @contextmanager
    def raw_ends(self, names: List[str], sink: Sink) -> Iterator[Ends]:
        """insert_one per message; lease, decode and delete_one (two round trips, no prefetch)."""
        collection = self.messages("raw")[0]
        with pymongo.MongoClient(self.url) as pclient, pymongo.MongoClient(self.url) as cclient:
            pcoll, ccoll = pclient[self.database][collection], cclient[self.database][collection]
            ccoll.create_index([("q", 1), ("lease", 1), ("_id", 1)])

            def send(i: int) -> None:
                pcoll.insert_one({"q": names[i % len(names)], "lease": None, "m": Binary(json_bytes(i))})

            yield Ends(lambda: send, lambda: None,
                       leaser(ccoll, names, lambda raw: sink(json.loads(raw)["id"])))
            ccoll.delete_many({"q": {"$in": names}})


if __name__ == "__main__":
    sys.exit(harness.main(MongodbBench))
