"""MongoDB as a virtual store: leased messages, shared bindings, cooperative waits.

Receiving is one atomic ``find_one_and_update`` per message that *leases*
the next ready document (sets ``lease`` to a token of this connection)
instead of deleting it. An ack deletes the document, a reject with requeue
or a closing channel clears the lease, and a lease older than the
visibility timeout is cleared by any connection's housekeeping greenlet
(marked redelivered). So a consumer that dies -- even SIGKILLed, holding
its connection open or not -- loses nothing.

Waiting polls: every empty round doubles the pause, from 10 ms up to
``polling_interval``, and is cut short by a publish from this process
(any connection to the same database), by a fanout copy and by the
transport re-planning. The pause is a hub wait, never ``time.sleep``.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database

from ... import green
from ..virtual import Empty, Storage
from ..virtual.payload import Payload, priority_of
from .client import Names, translated
from .documents import NEXT, from_document, is_fanout_copy, lease_of, to_document, utc
from .fanout import Broadcast
from .housekeeping import Housekeeping
from .state import MongoState

__all__ = ["MongoStore"]

logger = logging.getLogger("kombu_green.transport.mongodb")



class Arrivals:
    """In-process wake-ups, one bell per queue of one database: a publish from
    this process rings the bells of the queues it stored into, and only the
    greenlets polling those queues poll again at once."""

    def __init__(self) -> None:
        self._bells: Dict[str, green.Bell] = {}

    def bells(self, queues: Sequence[str]) -> List[green.Bell]:
        return [self._bells.setdefault(queue, green.Bell()) for queue in queues]

    def ring(self, queues: Sequence[str]) -> None:
        for queue in queues:
            bell = self._bells.pop(queue, None)  # a rung bell is spent; waiters take a new one
            if bell is not None:
                bell.ring()


#: Arrivals per database in this process (connections to one database share them).
_ARRIVALS: Dict[str, Arrivals] = {}


class MongoStore(Storage):
    """Queues, bindings and leases in one MongoDB database."""

    polling_interval_min = 0.01

    def __init__(self, db: Database[Dict[str, Any]], names: Names, where: str, offload: green.Offload,
                 polling_interval: float, visibility_timeout: float,
                 restore_interval: Optional[float], ttl: bool, broadcast_size: int) -> None:
        self.where = where
        self.names = names
        self.offload = offload
        self.polling_interval_max = max(self.polling_interval_min, float(polling_interval))
        self.messages = db[names.messages]
        self.queues = db[names.queues]
        self.state: MongoState = MongoState(db[names.exchanges], db[names.bindings], db[names.meta], where, offload)
        self.ttl = ttl
        self._arrivals = _ARRIVALS.setdefault(f"{where}/{db.name}/{names.prefix}", Arrivals())
        #: Leased in a batch, not yet delivered: (queue, payload).
        self._ahead: Deque[Tuple[str, Payload]] = deque()
        #: Acks not sent yet: (document id, lease token, is a fanout copy).
        self._acks: List[Tuple[ObjectId, Optional[ObjectId], bool]] = []
        #: Lease calls whose result goes to _ahead: batches leased ahead, and
        #: leases whose waiter was interrupted.
        self._pending: List[green.Pending[List[Tuple[str, Payload]]]] = []
        self._acking: Optional[green.Greenlet] = None
        self._closed = False
        self._prepare(db, broadcast_size)
        self.broadcast = Broadcast(db[names.broadcast], self, offload)
        self.housekeeping = Housekeeping(self, visibility_timeout, restore_interval)

    @translated
    def _prepare(self, db: Database[Dict[str, Any]], broadcast_size: int) -> None:
        """Indexes (idempotent) and the capped broadcast collection."""
        def prepare() -> None:
            self.messages.create_index([("q", 1), ("lease", 1), ("p", -1), ("_id", 1)])
            self.messages.create_index([("lt", 1)], sparse=True)
            self.messages.create_index([("fan", 1)], unique=True, sparse=True)
            self.messages.create_index([("done", 1)], sparse=True)
            if self.ttl:
                self.messages.create_index([("x", 1)], expireAfterSeconds=0)
                self.queues.create_index([("x", 1)], expireAfterSeconds=0)
            Broadcast.create(db, self.names.broadcast, broadcast_size)
        self.offload.call(prepare)

    # -- queues -------------------------------------------------------------------

    @translated
    def new_queue(self, queue: str, arguments: Optional[Dict[str, Any]] = None) -> None:
        arguments = {str(k): v for k, v in dict(arguments or {}).items()}
        update: Dict[str, Any] = {"$setOnInsert": {"a": arguments}}
        expires = int(arguments.get("x-expires") or 0)
        if expires:
            update["$set"] = {"x": utc(time.time() + expires / 1000.0)}
        self.offload.call(self.queues.update_one, {"_id": queue}, update, upsert=True)
        if expires:
            self.housekeeping.expires[queue] = expires

    def _live(self, names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """The queues among ``names`` that exist (x-expires not passed): name -> document."""
        now = utc(time.time())
        found = {}
        for document in self.offload.call(lambda: list(self.queues.find({"_id": {"$in": list(names)}}))):
            if document.get("x") is not None and document["x"] <= now:
                self._expire(document["_id"])
            else:
                found[document["_id"]] = document
        return found

    def _expire(self, queue: str) -> None:
        """An x-expires queue outlived its idle time: remove it, as a broker would."""
        self.state.unbind_queue(queue)
        self.delete_queue(queue)

    @translated
    def has_queue(self, queue: str) -> bool:
        return queue in self._live([queue])

    @translated
    def size(self, queue: str) -> int:
        return self.offload.call(self.messages.count_documents, {"q": queue, "lease": None})

    @translated
    def purge(self, queue: str) -> int:
        return self.offload.call(self.messages.delete_many, {"q": queue, "lease": None}).deleted_count

    @translated
    def delete_queue(self, queue: str) -> None:
        def delete() -> None:
            self.queues.delete_one({"_id": queue})
            self.messages.delete_many({"q": queue})
        self.offload.call(delete)
        self.housekeeping.expires.pop(queue, None)
        kept = [(q, payload) for q, payload in self._ahead if q != queue]
        self._ahead = deque(kept)

    # -- publishing ---------------------------------------------------------------

    @translated
    def put(self, queue: str, payload: Payload, priority: int = 0) -> None:
        self._insert([to_document(queue, payload, priority)])

    @translated
    def publish(self, exchange: str, routing_key: str, payload: Payload, priority: int = 0) -> int:
        """Route with the shared tables, then store one document per live queue.

        A fanout exchange goes through the broadcast collection instead (see
        :mod:`.fanout`): only queues being consumed receive a copy.
        """
        if exchange:
            self.state.sync()
            if self.state.exchange(exchange).type == "fanout":
                self.broadcast.publish(exchange, payload, priority)
                return len(self.state.bindings_of(exchange))
            names = self.state.route(exchange, routing_key, payload.get("headers"))
        else:
            names = [routing_key]
        if not names:
            return 0
        live = self._live(names)
        documents = []
        for queue in names:
            if queue in live:
                ttl = live[queue].get("a", {}).get("x-message-ttl")
                documents.append(to_document(queue, payload, priority,
                                             None if ttl is None else float(ttl) / 1000.0))
        self._insert(documents)
        return len(documents)

    def _insert(self, documents: List[Dict[str, Any]]) -> None:
        if documents:
            if len(documents) == 1:
                self.offload.call(self.messages.insert_one, documents[0])
            else:
                self.offload.call(self.messages.insert_many, documents)
            self._arrivals.ring([document["q"] for document in documents])

    # -- receiving ----------------------------------------------------------------

    def _lease(self, queues: List[str], batch: int) -> List[Tuple[str, Payload]]:
        """Lease up to ``batch`` ready messages (runs off the hub; one token per call)."""
        token = ObjectId()
        found: List[Tuple[str, Payload]] = []
        query = {"q": queues[0] if len(queues) == 1 else {"$in": queues}, "lease": None}
        update = {"$set": {"lease": token, "lt": utc(time.time())}}
        for _ in range(batch):
            document = self.messages.find_one_and_update(
                query, update, sort=NEXT, return_document=ReturnDocument.AFTER)
            if document is None:
                break
            found.append((document["q"], from_document(document)))
        return found

    def _take(self, queues: List[str], batch: int) -> List[Tuple[str, Payload]]:
        """Lease a batch; if the caller is interrupted meanwhile (a ``gevent.Timeout``
        around ``drain_events``), the leased messages are kept for the next call."""
        pending = self.offload.spawn(self._lease, queues, batch)
        try:
            return pending.get()
        except BaseException:
            self._pending.append(pending)
            pending.when_done(self._keep_ahead)
            raise

    def _lease_ahead(self, queues: List[str], count: int) -> None:
        pending = self.offload.spawn(self._lease, queues, count)
        self._pending.append(pending)
        pending.when_done(self._keep_ahead)

    def _keep_ahead(self, taken: List[Tuple[str, Payload]]) -> None:
        self._pending = [pending for pending in self._pending if not pending.ready()]
        if taken:
            self._ahead.extend(taken)
            self._arrivals.ring([queue for queue, _ in taken])

    def _next_ahead(self, queues: Sequence[str]) -> Optional[Tuple[str, Payload]]:
        for index, (queue, payload) in enumerate(self._ahead):
            if queue in queues:
                del self._ahead[index]
                return queue, payload
        return None

    @translated
    def get(self, queue: str) -> Payload:
        ahead = self._next_ahead([queue])
        if ahead is not None:
            return ahead[1]
        self.housekeeping.touch(queue)
        taken = self._take([queue], 1)
        if not taken:
            raise Empty()
        return taken[0][1]

    @translated
    def get_any(self, queues: Sequence[str], timeout: Optional[float],
                interrupt: Optional[green.Bell] = None, batch: int = 1) -> Tuple[str, Payload]:
        """Lease the next message of any of ``queues``, polling with backoff."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.polling_interval_min
        while True:
            bells = self._arrivals.bells(queues) + ([interrupt] if interrupt is not None else [])
            for pending in list(self._pending):  # leases on their way land in _ahead first
                pending.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            self._pending = [pending for pending in self._pending if not pending.ready()]
            ahead = self._next_ahead(queues)
            if ahead is not None:
                return ahead
            if not self._pending:
                taken = self._take(list(queues), 1)
                if taken:
                    if batch > 1:  # the rest of the batch is leased while this one is handled
                        self._lease_ahead(list(queues), batch - 1)
                    return taken[0]
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Empty()
            pause = delay if remaining is None else min(delay, remaining)
            if green.wait_any(bells, pause):
                if interrupt is not None:
                    raise Empty()  # the transport re-plans (and calls again at once)
                delay = self.polling_interval_min
            else:
                delay = min(delay * 2, self.polling_interval_max)

    # -- settling -----------------------------------------------------------------

    def ack(self, queue: str, payload: Payload) -> None:
        """Delete the document, if this lease still holds it. Acks are sent in
        batches at the next hub turn (``close`` sends what is left)."""
        document_id, token = lease_of(payload)
        if document_id is None:
            return
        self._acks.append((document_id, token, is_fanout_copy(payload)))
        if self._acking is None:
            self._acking = green.spawn(self._send_acks)

    def _send_acks(self) -> None:
        try:
            while self._acks:
                batch, self._acks = self._acks, []
                try:
                    self.offload.call(self._settle, batch)
                except Exception as exc:  # noqa: BLE001 - the leases expire and the messages return
                    logger.error("MongoDB at %s: %d acks were not recorded (%s); the messages "
                                 "will be delivered again after the visibility timeout",
                                 self.where, len(batch), exc)
        finally:
            self._acking = None

    def _settle(self, batch: List[Tuple[ObjectId, Optional[ObjectId], bool]]) -> None:
        """Delete acked documents (if still leased by us). An acked fanout copy
        becomes a tombstone instead, so a slower tailer cannot store it again."""
        for fanned in (False, True):
            rows = [(document_id, token) for document_id, token, fan in batch if fan is fanned]
            if not rows:
                continue
            query = {"_id": {"$in": [d for d, _ in rows]}, "lease": {"$in": list({t for _, t in rows})}}
            if fanned:
                self.messages.update_many(query, {"$set": {"q": None, "done": utc(time.time())},
                                                  "$unset": {"lt": ""}})
            else:
                self.messages.delete_many(query)

    @translated
    def requeue(self, queue: str, payload: Payload, priority: int = 0) -> None:
        """Release the lease: the message is ready again at its old place, redelivered."""
        document_id, token = lease_of(payload)
        if document_id is None:
            self.put(queue, payload, priority)
            return
        self.offload.call(self.messages.update_one, {"_id": document_id, "lease": token},
                          {"$set": {"lease": None, "r": True, "p": priority}, "$unset": {"lt": ""}})
        self._arrivals.ring([queue])

    # -- consumers ----------------------------------------------------------------

    @translated
    def watch(self, queue: str) -> None:
        self.broadcast.watch(queue)
        self.housekeeping.keep(queue)

    @translated
    def unwatch(self, queue: str) -> None:
        self.broadcast.unwatch(queue)
        self.housekeeping.unkeep(queue)

    def arrived(self, queues: Sequence[str]) -> None:
        """Messages were stored (fanout copies) or returned (leases): wake their waiters."""
        self._arrivals.ring(queues)

    def close(self) -> None:
        """Return messages leased ahead, send pending acks, stop the greenlets."""
        if self._closed:
            return
        self._closed = True
        self.broadcast.close()
        self.housekeeping.close()
        try:
            for pending in list(self._pending):  # interrupted leases land in _ahead first
                pending.wait(10.0)
            while self._ahead:
                queue, payload = self._ahead.pop()
                self.requeue(queue, payload, priority_of(payload))
            if self._acking is not None:
                self._acking.join()
        except Exception as exc:  # noqa: BLE001 - their leases expire; they come back then
            logger.error("MongoDB at %s: closing could not return leased messages (%s)", self.where, exc)

