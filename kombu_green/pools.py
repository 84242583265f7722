"""Pools of connections, channels and producers for many greenlets at once.

Under ``gunicorn -k gevent`` each request runs in a greenlet of its own: a
connection per request is slow, one connection for all makes its failure
everyone's. A pool lends each greenlet a resource of its own for a while::

    with producers[connection].acquire(block=True, timeout=5) as producer:
        producer.publish(body, routing_key="tasks")

The lending itself (limits, waiting, replacing what a failed ``with`` block
gave back) is :mod:`kombu_green.resource`'s; here are the producer pool and
the per-broker groups. Safe to share between greenlets: a pool and the
``connections`` and ``producers`` groups. A connection, channel or producer taken from a pool
belongs to the greenlet holding it until released: do not use it after
that, nor hand it to another greenlet meanwhile. Waiting for a free one
blocks only the calling greenlet. One given back by a ``with`` block that
raised is never lent again: a fresh, unconnected one takes its place.
Pools connect on first use, never when created.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Type, Union

from .connection import Connection
from .exceptions import ConnectionLimitExceeded
from .messaging import Producer as _Producer
from .resource import ChannelPool, ConnectionPool, Resource, _quietly

__all__ = ["ChannelPool", "ConnectionPool", "Connections", "PoolGroup", "ProducerPool", "Producers",
           "Resource", "connections", "get_limit", "producers", "reset", "set_limit", "use_global_limit"]

DEFAULT_LIMIT = 10  #: of the pools in ``connections`` and ``producers``, as in kombu


class ProducerPool(Resource):
    """Producers, each on a connection borrowed from ``connections`` while lent."""

    LimitExceeded = ConnectionLimitExceeded
    Producer: Type[_Producer] = _Producer

    def __init__(self, connections: ConnectionPool, limit: Optional[int] = None,
                 Producer: Optional[Type[_Producer]] = None, **producer_options: Any) -> None:
        self.connections = connections
        self.Producer = Producer or self.Producer
        self.producer_options = producer_options
        super().__init__(limit if limit is not None else connections.limit)

    def new(self) -> _Producer:
        return self.Producer(None, **self.producer_options)

    def prepare(self, resource: Any, block: bool = False, deadline: Optional[float] = None) -> Any:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        connection = self.connections.acquire(block=block, timeout=remaining)
        try:
            resource.revive(connection)  # connects, if the connection is new
        except BaseException:
            self.connections.replace(connection)
            self._free.append(resource)
            raise
        return resource

    def _detach(self, resource: Any, give_back: Any) -> None:
        # close() unhooks on_return and stops the producer following this
        # connection onto new channels (it may be lent with another one next).
        _quietly(resource.close)
        connection, resource._connection, resource._channel = resource._connection, None, None
        if connection is not None:
            give_back(connection)

    def release_resource(self, resource: Any) -> None:
        self._detach(resource, self.connections.release)

    def collect_resource(self, resource: Any) -> None:
        self._detach(resource, self.connections.replace)

    close_resource = collect_resource


use_global_limit = object()  #: a group made with this limit follows :func:`set_limit`
_limit: List[Optional[int]] = [DEFAULT_LIMIT]
_groups: List["PoolGroup"] = []
_by_url: Dict[str, Connection] = {}


def _key(connection: Connection) -> str:
    """Connections to the same broker with the same options share a pool."""
    info = connection.info(include_password=True)
    info["transport_options"] = sorted(info["transport_options"].items())
    return repr((type(connection), sorted(info.items())))


class PoolGroup:
    """One pool per broker: ``group[connection_or_url]`` makes it on first use."""

    def __init__(self, limit: Any = use_global_limit) -> None:
        self.limit = limit
        self._pools: Dict[str, Any] = {}
        self._pid = os.getpid()
        _groups.append(self)

    def create(self, connection: Connection, limit: Optional[int]) -> Any:
        raise NotImplementedError

    def _forget_after_fork(self) -> None:
        """A forked child shares the parent's sockets: closing them would end
        the parent's connections, so the child only forgets them."""
        if self._pid != os.getpid():
            self._pools, self._pid = {}, os.getpid()

    def __getitem__(self, connection: Union[Connection, str]) -> Any:
        self._forget_after_fork()
        if isinstance(connection, str):  # each URL is parsed once, not at every request
            connection = _by_url.get(connection) or _by_url.setdefault(connection, Connection(connection))
        key = _key(connection)
        pool = self._pools.get(key)
        if pool is None:  # nothing yields in between: two greenlets cannot both make one
            limit = get_limit() if self.limit is use_global_limit else self.limit
            pool = self._pools[key] = self.create(connection, limit)
        return pool

    def clear(self) -> None:
        """Close every pool of the group and forget them."""
        self._forget_after_fork()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            _quietly(pool.force_close_all)


class Connections(PoolGroup):
    def create(self, connection: Connection, limit: Optional[int]) -> ConnectionPool:
        return ConnectionPool(connection, limit=limit)


class Producers(PoolGroup):
    def create(self, connection: Connection, limit: Optional[int]) -> ProducerPool:
        return ProducerPool(connections[connection], limit=limit)


#: ``connections[url].acquire()``: a pooled connection to that broker.
connections = Connections()
#: ``producers[url].acquire()``: a pooled producer on a connection of ``connections[url]``.
producers = Producers()


def get_limit() -> Optional[int]:
    """The limit of the pools the groups make (None: no limit)."""
    return _limit[0]


def set_limit(limit: Optional[int], force: bool = False, reset_after: bool = False,
              ignore_errors: bool = False) -> Optional[int]:
    """Set the groups' limit and resize the pools they made already."""
    if force or limit != _limit[0]:  # resizing never raises: ignore_errors is kombu's
        _limit[0] = limit
        for pool in [p for g in _groups if g.limit is use_global_limit for p in g._pools.values()]:
            pool.resize(limit)
    if reset_after:
        reset()
    return limit


def reset(*args: Any, **kwargs: Any) -> None:
    """Close every pool of the groups and forget them; the next use makes
    new ones. (After ``fork()`` a child's groups start afresh by themselves,
    leaving the parent's connections alone.)"""
    for group in _groups:
        group.clear()
