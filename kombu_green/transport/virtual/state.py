"""Exchanges and bindings of one virtual broker.

A :class:`BrokerState` belongs to one store instance (one memory broker,
one Redis server, ...), never to a class, so two brokers in one process
(or two tests) cannot see each other's bindings. Stores shared between
processes keep the same tables in the broker and subclass this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ...exceptions import ChannelError, NotFound, PreconditionFailed
from .exchange import EXCHANGE_TYPES, Binding, route

__all__ = ["BrokerState", "ExchangeRecord"]

#: Exchanges every AMQP broker has (RabbitMQ's names).
PREDECLARED = {
    "amq.direct": "direct",
    "amq.topic": "topic",
    "amq.fanout": "fanout",
    "amq.headers": "headers",
    "amq.match": "headers",
}


@dataclass
class ExchangeRecord:
    type: str
    durable: bool = True
    auto_delete: bool = False
    arguments: Dict[str, Any] = field(default_factory=dict)


class BrokerState:
    """Exchange table, queue bindings and exchange-to-exchange bindings."""

    def __init__(self) -> None:
        self.exchanges: Dict[str, ExchangeRecord] = {
            name: ExchangeRecord(kind) for name, kind in PREDECLARED.items()
        }
        #: exchange -> bindings to queues
        self.bindings: Dict[str, List[Binding]] = {}
        #: source exchange -> bindings whose ``queue`` is a destination exchange
        self.exchange_bindings: Dict[str, List[Binding]] = {}

    # -- exchanges ---------------------------------------------------------

    def declare_exchange(self, name: str, type: str = "direct", durable: bool = True,
                         auto_delete: bool = False, arguments: Optional[Mapping[str, Any]] = None,
                         passive: bool = False) -> None:
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise NotFound(f"Exchange {name!r} does not exist (passive declare)")
            return
        if type not in EXCHANGE_TYPES:
            raise ChannelError(
                f"Exchange type {type!r} is not supported here; use one of {sorted(EXCHANGE_TYPES)}")
        if existing is not None:
            if existing.type != type:
                raise PreconditionFailed(
                    f"Exchange {name!r} already exists with type {existing.type!r}, not {type!r}; "
                    "delete it first or use the existing type")
            return
        self.exchanges[name] = ExchangeRecord(type, durable, auto_delete, dict(arguments or {}))

    def exchange(self, name: str) -> ExchangeRecord:
        try:
            return self.exchanges[name]
        except KeyError:
            raise NotFound(
                f"Exchange {name!r} does not exist: declare it first "
                "(a Producer or Consumer with auto_declare does this)") from None

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        if if_unused and (self.bindings.get(name) or self.exchange_bindings.get(name)):
            raise PreconditionFailed(f"Exchange {name!r} is in use (it has bindings)")
        self.exchanges.pop(name, None)
        self.bindings.pop(name, None)
        self.exchange_bindings.pop(name, None)
        for source, rows in self.exchange_bindings.items():
            self.exchange_bindings[source] = [b for b in rows if b.queue != name]

    # -- bindings ----------------------------------------------------------

    def bind(self, queue: str, exchange: str, routing_key: str = "",
             arguments: Optional[Mapping[str, Any]] = None) -> None:
        self.exchange(exchange)
        row = Binding(queue, routing_key, dict(arguments) if arguments else None)
        rows = self.bindings.setdefault(exchange, [])
        if row not in rows:
            rows.append(row)

    def unbind(self, queue: str, exchange: str, routing_key: str = "",
               arguments: Optional[Mapping[str, Any]] = None) -> None:
        rows = self.bindings.get(exchange, [])
        self.bindings[exchange] = [
            b for b in rows if not (b.queue == queue and b.routing_key == routing_key
                                    and (arguments is None or dict(b.arguments or {}) == dict(arguments)))
        ]

    def unbind_queue(self, queue: str) -> None:
        """Forget every binding of a deleted queue."""
        for exchange, rows in self.bindings.items():
            self.bindings[exchange] = [b for b in rows if b.queue != queue]

    def bind_exchange(self, destination: str, source: str, routing_key: str = "",
                      arguments: Optional[Mapping[str, Any]] = None) -> None:
        self.exchange(source)
        self.exchange(destination)
        row = Binding(destination, routing_key, dict(arguments) if arguments else None)
        rows = self.exchange_bindings.setdefault(source, [])
        if row not in rows:
            rows.append(row)

    def unbind_exchange(self, destination: str, source: str, routing_key: str = "") -> None:
        rows = self.exchange_bindings.get(source, [])
        self.exchange_bindings[source] = [
            b for b in rows if not (b.queue == destination and b.routing_key == routing_key)]

    def has_bindings(self, queue: str) -> bool:
        return any(b.queue == queue for rows in self.bindings.values() for b in rows)

    # -- routing -----------------------------------------------------------

    def route(self, exchange: str, routing_key: str, headers: Optional[Mapping[str, Any]] = None) -> List[str]:
        """Queues a message published to ``exchange`` goes to (each once).

        Follows exchange-to-exchange bindings; a cycle is visited once.
        """
        queues: List[str] = []
        seen_exchanges = set()
        pending = [exchange]
        while pending:
            name = pending.pop(0)
            if name in seen_exchanges:
                continue
            seen_exchanges.add(name)
            kind = self.exchange(name).type
            for queue in route(kind, self.bindings.get(name, ()), routing_key, headers):
                if queue not in queues:
                    queues.append(queue)
            pending.extend(route(kind, self.exchange_bindings.get(name, ()), routing_key, headers))
        return queues
