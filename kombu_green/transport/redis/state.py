"""Exchanges and bindings kept in Redis, cached in each process.

The AMQP rules and the version-tagged cache are :class:`SharedState`'s;
this module stores the tables: exchanges in a hash, bindings as members of
a set, and a version counter that the ``MUTATE`` script bumps atomically
with every change. A publish sends the version its routing was computed
from, and the server refuses a stale one atomically (see the store), so a
binding made anywhere is honoured by the very next publish.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

import redis

from ..virtual.shared_state import SharedState
from .client import translated
from .keys import Keys
from .scripts import MUTATE

__all__ = ["RedisState"]


def _text(value: Any) -> str:
    """A stored value (bytes, or None before the first change) -> text."""
    return value.decode() if isinstance(value, bytes) else str(value or "0")


class RedisState(SharedState):
    """:class:`SharedState` whose tables live in Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, where: str) -> None:
        super().__init__()
        self.where = where
        self.client = client
        self.keys = keys
        self._mutate = client.register_script(MUTATE)

    @translated
    def _load(self) -> Tuple[str, Dict[str, str], Iterable[str]]:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.version)
        pipe.hgetall(self.keys.exchanges)
        pipe.smembers(self.keys.bindings)
        version, exchanges, members = pipe.execute()
        return (_text(version), {_text(name): _text(raw) for name, raw in exchanges.items()},
                [_text(member) for member in members])

    @translated
    def _current_version(self) -> str:
        return _text(self.client.get(self.keys.version))

    @translated
    def _change(self, table: str, command: str, *arguments: Any) -> int:
        return int(self._mutate(keys=[self.keys.version, table], args=[command, *arguments]))

    def _add_exchange(self, name: str, record: str) -> bool:
        return bool(self._change(self.keys.exchanges, "HSETNX", name, record))

    def _remove_exchange(self, name: str) -> None:
        self._change(self.keys.exchanges, "HDEL", name)

    def _add_binding(self, member: str) -> None:
        self._change(self.keys.bindings, "SADD", member)

    def _remove_bindings(self, members: List[str]) -> None:
        self._change(self.keys.bindings, "SREM", *members)
