"""Exchanges and bindings kept in Redis, cached in each process.

Routing needs the binding table on every publish; reading it from Redis
each time would double the round trips. Each process keeps a copy tagged
with the table's version number. Every change bumps the version (see
``MUTATE``), and a publish sends the version its routing was computed
from: the server refuses a stale one atomically, the publisher refreshes
and routes again. So a binding made anywhere is honoured by the very next
publish, at the cost of one round trip per publish.
"""
from __future__ import annotations

import json
from typing import Any, List, Mapping, Optional

import redis

from ...exceptions import PreconditionFailed
from ..virtual.exchange import Binding
from ..virtual.state import PREDECLARED, BrokerState, ExchangeRecord
from .client import translated
from .keys import Keys
from .scripts import MUTATE

__all__ = ["RedisState"]


def _member(kind: str, exchange: str, destination: str, routing_key: str,
            arguments: Optional[Mapping]) -> str:
    return json.dumps([kind, exchange, destination, routing_key, dict(arguments) if arguments else None],
                      sort_keys=True, separators=(",", ":"))


def _text(version: Any) -> str:
    """A version as stored (bytes, or None before the first change) -> text."""
    return version.decode() if isinstance(version, bytes) else str(version or "0")


class RedisState(BrokerState):
    """:class:`BrokerState` whose tables live in Redis (shared by every process)."""

    def __init__(self, client: redis.Redis, keys: Keys, where: str) -> None:
        super().__init__()
        self.where = where
        self.client = client
        self.keys = keys
        #: Version of the cached tables (None: refresh before use).
        self.version: Optional[str] = None
        self._mutate = client.register_script(MUTATE)

    # -- cache ----------------------------------------------------------------

    @translated
    def refresh(self) -> None:
        """Load the tables and their version in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.version)
        pipe.hgetall(self.keys.exchanges)
        pipe.smembers(self.keys.bindings)
        version, exchanges, members = pipe.execute()
        self.exchanges = {name: ExchangeRecord(kind) for name, kind in PREDECLARED.items()}
        for name, raw in exchanges.items():
            record = json.loads(raw)
            self.exchanges[name.decode()] = ExchangeRecord(
                record["type"], record["durable"], record["auto_delete"], record["arguments"])
        self.bindings, self.exchange_bindings = {}, {}
        for member in members:
            kind, exchange, destination, routing_key, arguments = json.loads(member)
            table = self.bindings if kind == "q" else self.exchange_bindings
            table.setdefault(exchange, []).append(Binding(destination, routing_key, arguments))
        self.version = _text(version)

    @translated
    def sync(self) -> None:
        """Refresh the cache if anyone changed the tables since it was loaded."""
        current = self.client.get(self.keys.version)
        if self.version is None or _text(current) != self.version:
            self.refresh()

    def _change(self, table: str, command: str, *arguments: Any) -> int:
        changed = int(self._mutate(keys=[self.keys.version, table], args=[command, *arguments]))
        if changed:
            self.version = None
        return changed

    # -- exchanges ------------------------------------------------------------

    @translated
    def exchange(self, name: str) -> ExchangeRecord:
        if name not in self.exchanges:
            self.sync()
        return super().exchange(name)

    @translated
    def declare_exchange(self, name: str, type: str = "direct", durable: bool = True,
                         auto_delete: bool = False, arguments: Optional[Mapping] = None,
                         passive: bool = False) -> None:
        self.sync()
        if passive or name in self.exchanges:
            super().declare_exchange(name, type, durable, auto_delete, arguments, passive)
            return
        super().declare_exchange(name, type, durable, auto_delete, arguments)  # validates the type
        record = json.dumps({"type": type, "durable": durable, "auto_delete": auto_delete,
                             "arguments": dict(arguments or {})})
        if not self._change(self.keys.exchanges, "HSETNX", name, record):
            self.refresh()  # declared meanwhile by someone else: the type must agree
            existing = self.exchanges[name]
            if existing.type != type:
                raise PreconditionFailed(
                    f"Exchange {name!r} already exists with type {existing.type!r}, not {type!r}")

    @translated
    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        self.sync()
        if if_unused and (self.bindings.get(name) or self.exchange_bindings.get(name)):
            raise PreconditionFailed(f"Exchange {name!r} is in use (it has bindings)")
        doomed = [_member("q", name, b.queue, b.routing_key, b.arguments) for b in self.bindings.get(name, ())]
        for source, rows in self.exchange_bindings.items():
            doomed += [_member("e", source, b.queue, b.routing_key, b.arguments)
                       for b in rows if source == name or b.queue == name]
        if doomed:
            self._change(self.keys.bindings, "SREM", *doomed)
        self._change(self.keys.exchanges, "HDEL", name)

    # -- bindings -------------------------------------------------------------

    @translated
    def bind(self, queue: str, exchange: str, routing_key: str = "",
             arguments: Optional[Mapping] = None) -> None:
        self.exchange(exchange)
        self._change(self.keys.bindings, "SADD", _member("q", exchange, queue, routing_key, arguments))

    @translated
    def unbind(self, queue: str, exchange: str, routing_key: str = "",
               arguments: Optional[Mapping] = None) -> None:
        self.sync()
        doomed = [_member("q", exchange, b.queue, b.routing_key, b.arguments)
                  for b in self.bindings.get(exchange, ())
                  if b.queue == queue and b.routing_key == routing_key
                  and (arguments is None or dict(b.arguments or {}) == dict(arguments))]
        if doomed:
            self._change(self.keys.bindings, "SREM", *doomed)

    @translated
    def unbind_queue(self, queue: str) -> None:
        self.sync()
        doomed = [_member("q", exchange, b.queue, b.routing_key, b.arguments)
                  for exchange, rows in self.bindings.items() for b in rows if b.queue == queue]
        if doomed:
            self._change(self.keys.bindings, "SREM", *doomed)

    @translated
    def bind_exchange(self, destination: str, source: str, routing_key: str = "",
                      arguments: Optional[Mapping] = None) -> None:
        self.exchange(source)
        self.exchange(destination)
        self._change(self.keys.bindings, "SADD", _member("e", source, destination, routing_key, arguments))

    @translated
    def unbind_exchange(self, destination: str, source: str, routing_key: str = "") -> None:
        self.sync()
        doomed = [_member("e", source, b.queue, b.routing_key, b.arguments)
                  for b in self.exchange_bindings.get(source, ())
                  if b.queue == destination and b.routing_key == routing_key]
        if doomed:
            self._change(self.keys.bindings, "SREM", *doomed)

    @translated
    def has_bindings(self, queue: str) -> bool:
        self.sync()
        return super().has_bindings(queue)

    @translated
    def fanout_exchanges_of(self, queue: str) -> List[str]:
        """Fanout exchanges ``queue`` is bound to (they deliver through PUB/SUB)."""
        self.sync()
        return [name for name, rows in self.bindings.items()
                if self.exchanges.get(name, ExchangeRecord("direct")).type == "fanout"
                and any(b.queue == queue for b in rows)]
