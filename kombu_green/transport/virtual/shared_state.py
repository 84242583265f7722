"""Exchanges and bindings kept in a shared store, cached in each process.

Routing needs the binding table on every publish; reading it from the
server each time would double the round trips. Each process keeps a copy
tagged with the table's version number, and every change bumps the
version. :meth:`SharedState.sync` costs one small read and reloads only
when somebody changed the tables.

Subclasses provide six storage primitives (the ``_`` methods below); the
AMQP rules -- what a declare, bind or delete means -- are written here once
for every shared store (Redis, MongoDB).
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ...exceptions import PreconditionFailed
from .exchange import Binding
from .state import PREDECLARED, BrokerState, ExchangeRecord

__all__ = ["SharedState", "binding_member"]


def binding_member(kind: str, source: str, destination: str, routing_key: str,
                   arguments: Optional[Mapping[str, Any]]) -> str:
    """One binding as a canonical string (a set member, a document id).

    ``kind`` is ``"q"`` for exchange -> queue, ``"e"`` for exchange -> exchange.
    """
    return json.dumps([kind, source, destination, routing_key, dict(arguments) if arguments else None],
                      sort_keys=True, separators=(",", ":"))


def exchange_record(record: ExchangeRecord) -> str:
    return json.dumps({"type": record.type, "durable": record.durable,
                       "auto_delete": record.auto_delete, "arguments": record.arguments})


class SharedState(BrokerState):
    """:class:`BrokerState` whose tables live in the broker, shared by every process."""

    def __init__(self) -> None:
        super().__init__()
        #: Version of the cached tables (None: refresh before use).
        self.version: Optional[str] = None

    # -- storage primitives (subclasses) ------------------------------------------

    def _load(self) -> Tuple[str, Dict[str, str], Iterable[str]]:
        """Return (version, {exchange: record JSON}, binding members), read consistently."""
        raise NotImplementedError

    def _current_version(self) -> str:
        raise NotImplementedError

    def _add_exchange(self, name: str, record: str) -> bool:
        """Store the exchange unless it exists; True if stored. Bumps the version."""
        raise NotImplementedError

    def _remove_exchange(self, name: str) -> None:
        raise NotImplementedError

    def _add_binding(self, member: str) -> None:
        raise NotImplementedError

    def _remove_bindings(self, members: List[str]) -> None:
        raise NotImplementedError

    # -- cache --------------------------------------------------------------------

    def refresh(self) -> None:
        """Load the tables and their version."""
        version, exchanges, members = self._load()
        self.exchanges = {name: ExchangeRecord(kind) for name, kind in PREDECLARED.items()}
        for name, raw in exchanges.items():
            record = json.loads(raw)
            self.exchanges[name] = ExchangeRecord(
                record["type"], record["durable"], record["auto_delete"], record["arguments"])
        self.bindings, self.exchange_bindings = {}, {}
        for member in members:
            kind, source, destination, routing_key, arguments = json.loads(member)
            table = self.bindings if kind == "q" else self.exchange_bindings
            table.setdefault(source, []).append(Binding(destination, routing_key, arguments))
        self.version = version

    def sync(self) -> None:
        """Refresh the cache if anyone changed the tables since it was loaded."""
        if self.version is None or self._current_version() != self.version:
            self.refresh()

    def _changed(self) -> None:
        self.version = None

    # -- exchanges ----------------------------------------------------------------

    def exchange(self, name: str) -> ExchangeRecord:
        if name not in self.exchanges:
            self.sync()
        return super().exchange(name)

    def declare_exchange(self, name: str, type: str = "direct", durable: bool = True,
                         auto_delete: bool = False, arguments: Optional[Mapping[str, Any]] = None,
                         passive: bool = False) -> None:
        self.sync()
        if passive or name in self.exchanges:
            super().declare_exchange(name, type, durable, auto_delete, arguments, passive)
            return
        super().declare_exchange(name, type, durable, auto_delete, arguments)  # validates the type
        stored = self._add_exchange(name, exchange_record(self.exchanges[name]))
        self._changed()
        if not stored:
            self.refresh()  # declared meanwhile by someone else: the type must agree
            existing = self.exchanges[name]
            if existing.type != type:
                raise PreconditionFailed(
                    f"Exchange {name!r} already exists with type {existing.type!r}, not {type!r}")

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        self.sync()
        if if_unused and (self.bindings.get(name) or self.exchange_bindings.get(name)):
            raise PreconditionFailed(f"Exchange {name!r} is in use (it has bindings)")
        doomed = [binding_member("q", name, b.queue, b.routing_key, b.arguments)
                  for b in self.bindings.get(name, ())]
        for source, rows in self.exchange_bindings.items():
            doomed += [binding_member("e", source, b.queue, b.routing_key, b.arguments)
                       for b in rows if source == name or b.queue == name]
        self._remove(doomed)
        self._remove_exchange(name)
        self._changed()

    # -- bindings -----------------------------------------------------------------

    def _remove(self, members: List[str]) -> None:
        if members:
            self._remove_bindings(members)
            self._changed()

    def bind(self, queue: str, exchange: str, routing_key: str = "",
             arguments: Optional[Mapping[str, Any]] = None) -> None:
        self.exchange(exchange)
        self._add_binding(binding_member("q", exchange, queue, routing_key, arguments))
        self._changed()

    def unbind(self, queue: str, exchange: str, routing_key: str = "",
               arguments: Optional[Mapping[str, Any]] = None) -> None:
        self.sync()
        self._remove([binding_member("q", exchange, b.queue, b.routing_key, b.arguments)
                      for b in self.bindings.get(exchange, ())
                      if b.queue == queue and b.routing_key == routing_key
                      and (arguments is None or dict(b.arguments or {}) == dict(arguments))])

    def unbind_queue(self, queue: str) -> None:
        self.sync()
        self._remove([binding_member("q", exchange, b.queue, b.routing_key, b.arguments)
                      for exchange, rows in self.bindings.items() for b in rows if b.queue == queue])

    def bind_exchange(self, destination: str, source: str, routing_key: str = "",
                      arguments: Optional[Mapping[str, Any]] = None) -> None:
        self.exchange(source)
        self.exchange(destination)
        self._add_binding(binding_member("e", source, destination, routing_key, arguments))
        self._changed()

    def unbind_exchange(self, destination: str, source: str, routing_key: str = "") -> None:
        self.sync()
        self._remove([binding_member("e", source, b.queue, b.routing_key, b.arguments)
                      for b in self.exchange_bindings.get(source, ())
                      if b.queue == destination and b.routing_key == routing_key])

    def has_bindings(self, queue: str) -> bool:
        self.sync()
        return super().has_bindings(queue)

    def fanout_exchanges_of(self, queue: str) -> List[str]:
        """Fanout exchanges ``queue`` is bound to (stores that broadcast fanout use it)."""
        self.sync()
        return [name for name, rows in self.bindings.items()
                if self.exchanges.get(name, ExchangeRecord("direct")).type == "fanout"
                and any(b.queue == queue for b in rows)]

    def route(self, exchange: str, routing_key: str, headers: Optional[Mapping[str, Any]] = None) -> List[str]:
        if self.version is None:
            self.refresh()
        return super().route(exchange, routing_key, headers)
