"""Exchanges and bindings kept in MongoDB, shared by every process.

The AMQP rules and the per-process cache are :class:`SharedState`'s; here
are the documents: one per exchange (``_id`` = name), one per binding
(``_id`` = the canonical binding string, so a repeated bind is one
document), and a counter document bumped after every change. A loader
reads the counter *before* the tables, so a change racing with a load can
only make the next :meth:`sync` reload once more, never miss a change.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ... import green
from ..virtual.shared_state import SharedState
from .client import translated

__all__ = ["MongoState"]

_VERSION_ID = "version"


class MongoState(SharedState):
    """:class:`SharedState` whose tables are MongoDB collections."""

    def __init__(self, exchanges: Collection[Dict[str, Any]], bindings: Collection[Dict[str, Any]],
                 meta: Collection[Dict[str, Any]], where: str, offload: green.Offload) -> None:
        super().__init__()
        self.where = where
        self._exchanges = exchanges
        self._bindings = bindings
        self._meta = meta
        self._offload = offload

    def _read_version(self) -> str:
        doc = self._meta.find_one({"_id": _VERSION_ID})
        return str(doc["v"]) if doc else "0"

    def _bump(self) -> None:
        self._meta.update_one({"_id": _VERSION_ID}, {"$inc": {"v": 1}}, upsert=True)

    @translated
    def _load(self) -> Tuple[str, Dict[str, str], Iterable[str]]:
        def load() -> Tuple[str, Dict[str, str], List[str]]:
            version = self._read_version()
            exchanges = {doc["_id"]: doc["r"] for doc in self._exchanges.find()}
            return version, exchanges, [doc["_id"] for doc in self._bindings.find()]
        return self._offload.call(load)

    @translated
    def _current_version(self) -> str:
        return self._offload.call(self._read_version)

    @translated
    def _add_exchange(self, name: str, record: str) -> bool:
        def add() -> bool:
            try:
                self._exchanges.insert_one({"_id": name, "r": record})
            except DuplicateKeyError:
                return False
            self._bump()
            return True
        return self._offload.call(add)

    @translated
    def _remove_exchange(self, name: str) -> None:
        def remove() -> None:
            self._exchanges.delete_one({"_id": name})
            self._bump()
        self._offload.call(remove)

    @translated
    def _add_binding(self, member: str) -> None:
        def add() -> None:
            self._bindings.update_one({"_id": member}, {"$setOnInsert": {"_id": member}}, upsert=True)
            self._bump()
        self._offload.call(add)

    @translated
    def _remove_bindings(self, members: List[str]) -> None:
        def remove() -> None:
            self._bindings.delete_many({"_id": {"$in": members}})
            self._bump()
        self._offload.call(remove)

    def bindings_of(self, exchange: str) -> Any:
        """Cached bindings of ``exchange`` (fanout copies use them)."""
        return self.bindings.get(exchange, ())
