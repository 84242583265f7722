"""Lending a few resources to many greenlets: the pool mechanism, and the
connection and channel pools built on it.

A :class:`Resource` lends at most ``limit`` objects at once; a greenlet that
finds them all lent waits -- only that greenlet -- until one comes back. A
lent object knows its pool (:attr:`Lendable._pool`, kombu's name): its own
``release()`` gives it back, and a ``with`` block that raised drops it for a
fresh one, since its state is unknown. Nothing here imports the Connection:
the pools get one to clone, so the Connection may offer ``Pool()`` and
``ChannelPool()`` without a circle of imports. The producer pool and the
per-broker groups are in :mod:`kombu_green.pools`.
"""
from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Set, Type

from . import green
from .exceptions import ChannelLimitExceeded, ConnectionLimitExceeded, LimitExceeded

__all__ = ["ChannelPool", "ConnectionPool", "Lendable", "Resource"]


class Lendable:
    """Mixed into what a pool lends (Connection, Producer, channels)."""

    #: The pool that lent this object, None when it is not lent.
    _pool: Optional["Resource"] = None

    if TYPE_CHECKING:  # each lendable class has its own (a definition here would shadow it)
        def close(self) -> None: ...

    def release(self) -> None:
        """Give it back to the pool that lent it; not lent, close it."""
        pool = self._pool
        if pool is not None:
            pool.release(self)
        else:
            self.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        pool = self._pool
        if pool is None:
            self.close()
        elif exc_type is None:
            pool.release(self)
        else:  # its state is unknown after an error: never lend it again
            pool.replace(self)


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
        resource._pool = self
        return resource

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
        resource._pool = None
        resource.close()

    def collect_resource(self, resource: Any) -> None:
        """Drop a resource that may be broken, without raising."""
        _quietly(self.close_resource, resource)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: limit={self.limit} lent={len(self._dirty)} idle={len(self._free)}>"


class _OfConnection(Resource):
    def __init__(self, connection: Any, limit: Optional[int] = None, **kwargs: Any) -> None:
        self.connection = connection
        super().__init__(limit)


class ConnectionPool(_OfConnection):
    """Clones of ``connection``, connected on first use and kept connected."""

    LimitExceeded = ConnectionLimitExceeded

    def new(self) -> Any:
        return self.connection.clone()

    fresh = new

    def is_broken(self, resource: Any) -> bool:  # connected once, but the link is gone
        return getattr(resource, "_connection", None) is not None and not resource.connected

    def collect_resource(self, resource: Any) -> None:
        resource._pool = None
        _quietly(getattr(resource, "collect", resource.close))  # collect: without a goodbye


class ChannelPool(_OfConnection):
    """Channels of one ``connection``, each opened when first lent."""

    LimitExceeded = ChannelLimitExceeded

    def new(self) -> Any:
        return self.connection.channel()

    def is_broken(self, resource: Any) -> bool:
        return not resource.is_open
