"""Pools of connections, channels and producers for many greenlets at once.

Under ``gunicorn -k gevent`` each request runs in a greenlet of its own: a
connection per request is slow, one connection for all makes its failure
everyone's. A pool lends each greenlet a resource of its own for a while::

    with producers[connection].acquire(block=True, timeout=5) as producer:
        producer.publish(body, routing_key="tasks")

Safe to share between greenlets: a pool and the ``connections`` and
``producers`` groups. A connection, channel or producer taken from a pool
belongs to the greenlet holding it until released: do not use it after
that, nor hand it to another greenlet meanwhile. Waiting for a free one
blocks only the calling greenlet. One given back by a ``with`` block that
raised is never lent again: a fresh, unconnected one takes its place.
Pools connect on first use, never when created.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Type, Union

from . import green
from .connection import Connection
from .exceptions import ChannelLimitExceeded, ConnectionLimitExceeded, LimitExceeded
from .messaging import Producer as _Producer

__all__ = ["ChannelPool", "ConnectionPool", "Connections", "PoolGroup", "ProducerPool", "Producers",
           "Resource", "connections", "get_limit", "producers", "reset", "set_limit", "use_global_limit"]

DEFAULT_LIMIT = 10  #: of the pools in ``connections`` and ``producers``, as in kombu


class _Slots:
    """Resources lent against a limit (0: none); waiters queue, blocking only themselves."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._waiters: Deque[Any] = deque()

    def take(self, block: bool, timeout: Optional[float]) -> bool:
        if not self.limit or (self.used < self.limit and not self._waiters):
            self.used += 1
            return True
        if not block:
            return False
        turn = green.Event()
        self._waiters.append(turn)
        try:
            if turn.wait(timeout):
                return True  # a releaser handed its slot over
        except BaseException:  # killed, or an outer Timeout, while waiting
            if turn.is_set():
                self.give()  # handed over just as the wait ended: pass it on
            else:
                self._waiters.remove(turn)
            raise
        self._waiters.remove(turn)
        return False

    def give(self) -> None:
        if self._waiters and (not self.limit or self.used <= self.limit):
            self._waiters.popleft().set()  # the slot passes on; ``used`` is unchanged
        else:
            self.used -= 1

    def resize(self, limit: int) -> None:
        self.limit = limit
        while self._waiters and (not limit or self.used < limit):
            self.used += 1
            self._waiters.popleft().set()


class _Pooled:
    """Mixed into a lent resource: ``release()`` and ``with`` give it back to its pool."""

    _owner_pool: Optional["Resource"] = None
    #: The lent resource's own ``close`` (declared only: this class is a mixin).
    close: Callable[[], Any]

    def release(self) -> None:
        if self._owner_pool is not None:
            self._owner_pool.release(self)
        else:
            getattr(super(), "release", self.close)()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:  # (__enter__: the class's own)
        pool = self._owner_pool
        if pool is None:
            getattr(super(), "__exit__", lambda *a: None)(exc_type, exc, tb)
        elif exc_type is None:
            pool.release(self)
        else:  # its state is unknown after an error: never lend it again
            pool.replace(self)

    def __reduce__(self) -> Any:  # pickled as its plain class: a pool does not travel
        reduced, plain = super().__reduce__(), type(self).__mro__[2]
        return (reduced[0], tuple(plain if a is type(self) else a for a in reduced[1]), *reduced[2:])


_POOLED_CLASSES: Dict[type, type] = {}


def _adopt(resource: Any, pool: "Resource") -> Any:
    """Make ``resource`` report back to ``pool`` (same object, class with :class:`_Pooled`)."""
    if not isinstance(resource, _Pooled):
        cls = type(resource)
        pooled = _POOLED_CLASSES.get(cls) or type(cls.__name__, (_Pooled, cls), {"__module__": cls.__module__})
        resource.__class__ = _POOLED_CLASSES.setdefault(cls, pooled)
    resource._owner_pool = pool
    return resource


def _quietly(action: Any, *args: Any) -> None:
    """Run a cleanup that may fail on a resource that is broken anyway."""
    try:
        action(*args)
    except Exception:  # noqa: BLE001 - dropping a broken resource must not raise
        pass


class Resource:
    """Reusable resources, at most ``limit`` lent at once (None or 0: no bound).

    Released ones are reused most recent first, so a quiet app keeps few
    connections warm; unlike kombu's, an unbounded pool reuses them too."""

    LimitExceeded: Type[LimitExceeded] = LimitExceeded

    def __init__(self, limit: Optional[int] = None) -> None:
        self._slots = _Slots(limit or 0)
        self._free: List[Any] = []
        self._dirty: Set[Any] = set()
        self._closed = False

    @property
    def limit(self) -> Optional[int]:
        return self._slots.limit or None

    def acquire(self, block: bool = False, timeout: Optional[float] = None) -> Any:
        """Take a resource. At the limit, wait if ``block`` (at most ``timeout``
        seconds, None: for ever), else raise :attr:`LimitExceeded` at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._slots.take(block, timeout):
            raise self.LimitExceeded(f"all {self.limit} resources of the pool are in use"
                                     + (f" (waited {timeout}s)" if block else ""))
        try:
            if self._closed:  # (a closed pool lets every waiter through, to fail here)
                raise RuntimeError("Acquire on closed pool")
            resource = self._free.pop() if self._free else self.new()
            resource = self.prepare(resource, block, deadline)
        except BaseException:
            self._slots.give()
            raise
        self._dirty.add(resource)
        return _adopt(resource, self)

    def release(self, resource: Any) -> None:
        """Give ``resource`` back for reuse (releasing it twice does nothing)."""
        if resource not in self._dirty:
            return
        self._dirty.discard(resource)
        try:
            if self._closed:
                _quietly(self.close_resource, resource)
            else:
                self.release_resource(resource)
                self._free.append(resource)
        finally:
            self._slots.give()

    def replace(self, resource: Any) -> None:
        """Drop ``resource`` (broken or suspect); a fresh one takes its place."""
        if resource not in self._dirty:
            return
        self._dirty.discard(resource)
        try:
            self.collect_resource(resource)
            fresh = None if self._closed else self.fresh()
            if fresh is not None:
                self._free.append(fresh)
        finally:
            self._slots.give()

    def resize(self, limit: Optional[int]) -> None:
        """Change the limit; resources in use above a lower one stay until released."""
        self._slots.resize(limit or 0)
        while limit and self._free and len(self._free) + len(self._dirty) > limit:
            resource = self._free.pop(0)
            _quietly(self.close_resource, resource)

    def force_close_all(self) -> None:
        """Close every resource, lent or not; the pool refuses to lend again."""
        self._closed = True
        doomed, self._free, self._dirty = self._free + list(self._dirty), [], set()
        for resource in doomed:
            _quietly(self.close_resource, resource)
        self._slots.resize(0)  # wake the waiters: they find the pool closed

    def new(self) -> Any:
        raise NotImplementedError

    def fresh(self) -> Any:
        """What replaces a dropped resource at once (None: a new one when needed)."""
        return None

    def prepare(self, resource: Any, block: bool, deadline: Optional[float]) -> Any:
        """Check (or complete) a resource about to be lent; return what to lend."""
        if self.is_broken(resource):
            self.collect_resource(resource)
            return self.new()
        return resource

    def is_broken(self, resource: Any) -> bool:
        return False

    def release_resource(self, resource: Any) -> None:
        """Called when a resource comes back for reuse."""

    def close_resource(self, resource: Any) -> None:
        resource._owner_pool = None
        resource.close()

    def collect_resource(self, resource: Any) -> None:
        """Drop a resource that may be broken, without raising."""
        _quietly(self.close_resource, resource)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: limit={self.limit} lent={len(self._dirty)} idle={len(self._free)}>"


class _OfConnection(Resource):
    def __init__(self, connection: Connection, limit: Optional[int] = None, **kwargs: Any) -> None:
        self.connection = connection
        super().__init__(limit)


class ConnectionPool(_OfConnection):
    """Clones of ``connection``, connected on first use and kept connected."""

    LimitExceeded = ConnectionLimitExceeded

    def new(self) -> Connection:
        clone: Connection = _adopt(self.connection.clone(), self)
        return clone

    fresh = new

    def is_broken(self, resource: Any) -> bool:  # connected once, but the link is gone
        return getattr(resource, "_connection", None) is not None and not resource.connected

    def collect_resource(self, resource: Any) -> None:
        resource._owner_pool = None
        _quietly(getattr(resource, "collect", resource.close))  # collect: without a goodbye


class ChannelPool(_OfConnection):
    """Channels of one ``connection``, each opened when first lent."""

    LimitExceeded = ChannelLimitExceeded

    def new(self) -> Any:
        return self.connection.channel()

    def is_broken(self, resource: Any) -> bool:
        return not resource.is_open


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
