"""Fanout through a capped collection read with a tailable, awaiting cursor.

A message published to a fanout exchange is inserted once into the capped
``<prefix>.broadcast`` collection. Every connection that consumes a queue
bound to a fanout exchange tails that collection (a ``TAILABLE_AWAIT``
cursor: the server holds each ``getMore`` open until a document arrives or
a second passes) and stores a copy of each message into its bound,
consumed queues as an ordinary, leased-and-acked message. The copy carries
``fan = "<broadcast id>:<queue>"`` under a unique index, so when several
connections consume the same queue exactly one copy is stored. An acked
copy is not deleted but left as a tombstone (out of every queue) for ten
minutes, so a tailer that lags behind cannot store it again; a connection
whose tailing stopped for longer than that may store a copy twice.

What a late subscriber sees: a connection starts tailing at the newest
broadcast document when its first fanout-bound consumer starts, so it
receives messages published from then on; earlier ones are not replayed,
and a queue nobody consumes at publish time gets no copy (as with kombu's
MongoDB and Redis fanout). After a dropped connection the tail resumes
from the last document it saw, so nothing still in the capped collection
is missed.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

import pymongo
from bson import Binary, ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure

from ... import green
from ..virtual import payload as payloads
from .documents import to_document

if TYPE_CHECKING:  # pragma: no cover
    from .store import MongoStore

__all__ = ["Broadcast"]

logger = logging.getLogger("kombu_green.transport.mongodb")

#: How long the server holds an empty getMore open (milliseconds).
AWAIT_MS = 1000


class Broadcast:
    """The broadcast collection of one store: publishing and tailing."""

    def __init__(self, collection: Collection[Dict[str, Any]], store: "MongoStore", offload: green.Offload) -> None:
        self.collection = collection
        self.store = store
        self.offload = offload
        self._watched: Set[str] = set()
        self._tailer: Optional[green.Greenlet] = None
        self._last: Optional[ObjectId] = None
        #: The last tailing failure, reported once in the log.
        self.failure: Optional[BaseException] = None

    @staticmethod
    def create(db: Database[Dict[str, Any]], name: str, size: int) -> None:
        """Create the capped collection once, with a first document: a tailable
        cursor on an empty capped collection is dead at once."""
        if db.list_collection_names(filter={"name": name}):
            return
        try:
            db.create_collection(name, capped=True, size=size)
            db[name].insert_one({"ex": None})
        except (CollectionInvalid, OperationFailure):
            pass  # created meanwhile by another connection

    def publish(self, exchange: str, payload: payloads.Payload, priority: int) -> None:
        document = {"ex": exchange, "p": priority, "m": Binary(payloads.dumps(payload))}
        self.offload.call(self.collection.insert_one, document)

    # -- tailing ------------------------------------------------------------------

    def watch(self, queue: str) -> None:
        self._watched.add(queue)
        if self._tailer is None and self.store.state.fanout_exchanges_of(queue):
            if self._last is None:  # from now on: read before consume() returns
                self._last = self.offload.call(self._newest)
            self._tailer = green.spawn(self._tail)

    def unwatch(self, queue: str) -> None:
        self._watched.discard(queue)

    def close(self) -> None:
        tailer, self._tailer = self._tailer, None
        if tailer is not None:
            tailer.kill(block=False)

    def _newest(self) -> Optional[ObjectId]:
        newest = self.collection.find_one({}, sort=[("_id", pymongo.DESCENDING)], projection={"_id": 1})
        return newest["_id"] if newest else None

    def _tail(self) -> None:
        pause = 0.1
        while self._tailer is green.getcurrent():
            try:
                if self._last is None:
                    self._last = self.offload.call(self._newest)
                query = {} if self._last is None else {"_id": {"$gt": self._last}}
                cursor = self.collection.find(
                    query, cursor_type=pymongo.CursorType.TAILABLE_AWAIT).max_await_time_ms(AWAIT_MS)
                while cursor.alive and self._tailer is green.getcurrent():
                    for document in self.offload.call(_next, cursor):
                        self._last = document["_id"]
                        self._copy(document)
                    pause = 0.1
                green.sleep(pause)  # the cursor died (the collection rolled over): open another
            except Exception as exc:  # noqa: BLE001 - keep tailing; the server may come back
                if self.failure is None:
                    logger.error("MongoDB at %s: reading fanout messages failed (%s); retrying",
                                 self.store.where, exc)
                self.failure = exc
                green.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _copy(self, document: Dict[str, Any]) -> None:
        """Store one copy for each consumed queue bound to the document's exchange."""
        exchange = document.get("ex")
        if not exchange:
            return
        self.store.state.sync()
        queues = {b.queue for b in self.store.state.bindings_of(exchange)} & self._watched
        if not queues:
            return
        payload = payloads.loads(bytes(document["m"]))
        copies = [to_document(queue, payload, int(document.get("p") or 0),
                              fan=f"{document['_id']}:{queue}") for queue in sorted(queues)]
        stored = self.offload.call(_insert_new, self.store.messages, copies)
        self.failure = None
        if stored:
            self.store.arrived(sorted(queues))


def _next(cursor: pymongo.cursor.Cursor[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The next document of a tailable cursor, waiting up to AWAIT_MS (off the hub)."""
    try:
        return [cursor.next()]
    except StopIteration:
        return []


def _insert_new(collection: Collection[Dict[str, Any]], documents: List[Dict[str, Any]]) -> int:
    """Insert each copy unless another consumer already stored it; count the new ones."""
    stored = 0
    for document in documents:
        try:
            collection.insert_one(document)
            stored += 1
        except DuplicateKeyError:
            pass
    return stored
