"""In-process broker (``memory://``): the reference store and test double.

Features
    Every AMQP feature of the virtual framework: direct/topic/fanout/headers
    routing, prefetch, ack/reject/requeue, redelivery on close, priorities
    0-9. Waiting is purely event-driven: a put rings the queue's bell and
    wakes the waiting greenlets; an idle consumer costs no CPU.

Connection string
    ``memory://`` uses the process's default broker. ``memory://NAME``
    (optionally ``/VHOST``) names another one. Every Connection with the
    same name and virtual host in the same process shares one broker, so a
    producer connection and a consumer connection see the same queues.
    Brokers live until :func:`forget_broker` (tests use unique names and
    forget them afterwards, so no state leaks between tests).

Limits
    One process only, and only greenlets of one thread (gevent's rule for
    its events). Nothing is persisted.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from .. import green
from .virtual import BrokerState, Empty, Storage
from .virtual import Transport as VirtualTransport
from .virtual.payload import MAX_PRIORITY, Payload

__all__ = ["MemoryBroker", "Transport", "forget_broker", "get_broker"]


class _PriorityQueue:
    """FIFO per priority level; the highest non-empty level goes first."""

    __slots__ = ("levels", "arguments", "size")

    def __init__(self, arguments: Optional[Dict[str, Any]] = None) -> None:
        self.levels: List[Deque[Payload]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        self.arguments = dict(arguments or {})
        self.size = 0

    def push(self, payload: Payload, priority: int, front: bool = False) -> None:
        level = self.levels[priority]
        level.appendleft(payload) if front else level.append(payload)
        self.size += 1

    def pop(self) -> Payload:
        if self.size:
            for level in reversed(self.levels):
                if level:
                    self.size -= 1
                    return level.popleft()
        raise Empty()

    def clear(self) -> int:
        count, self.size = self.size, 0
        for level in self.levels:
            level.clear()
        return count


class MemoryBroker(Storage):
    """Queues and bindings of one named in-process broker."""

    def __init__(self, name: str = "localhost/") -> None:
        self.name = name
        self.state = BrokerState()
        self._queues: Dict[str, _PriorityQueue] = {}
        self._bells: Dict[str, green.Bell] = {}

    def new_queue(self, queue: str, arguments: Optional[Dict[str, Any]] = None) -> None:
        if queue not in self._queues:
            self._queues[queue] = _PriorityQueue(arguments)

    def has_queue(self, queue: str) -> bool:
        return queue in self._queues

    def _queue(self, queue: str) -> _PriorityQueue:
        try:
            return self._queues[queue]
        except KeyError:
            raise Empty() from None

    def put(self, queue: str, payload: Payload, priority: int = 0) -> None:
        self._queues[queue].push(payload, priority)
        self._ring(queue)

    def requeue(self, queue: str, payload: Payload, priority: int = 0) -> None:
        self._queues[queue].push(payload, priority, front=True)
        self._ring(queue)

    def _ring(self, queue: str) -> None:
        bell = self._bells.get(queue)
        if bell is not None:
            bell.ring()

    def get(self, queue: str) -> Payload:
        return self._queue(queue).pop()

    def size(self, queue: str) -> int:
        return self._queues[queue].size if queue in self._queues else 0

    def purge(self, queue: str) -> int:
        return self._queues[queue].clear() if queue in self._queues else 0

    def delete_queue(self, queue: str) -> None:
        self._queues.pop(queue, None)
        self._ring(queue)
        self._bells.pop(queue, None)

    def get_any(self, queues: Sequence[str], timeout: Optional[float],
                interrupt: Optional[green.Bell] = None, batch: int = 1) -> Tuple[str, Payload]:
        """Take from the first non-empty queue, else wait once for a put.

        One wait only: on any ring (a put, or ``interrupt``) it looks again
        and raises :class:`Empty` if nothing is there; the transport's loop
        owns the deadline and re-plans which queues to wait on.
        """
        for attempt in range(2):
            for queue in queues:
                stored = self._queues.get(queue)
                if stored is not None and stored.size:
                    return queue, stored.pop()
            if attempt or (timeout is not None and timeout <= 0):
                break
            bells = [self._bells.setdefault(queue, green.Bell()) for queue in queues]
            if interrupt is not None:
                bells.append(interrupt)
            if not green.wait_any(bells, timeout):
                break
        raise Empty()


#: Named brokers of this process: (hostname, virtual_host) -> broker.
_brokers: Dict[Tuple[str, str], MemoryBroker] = {}


def get_broker(hostname: Optional[str] = None, virtual_host: Optional[str] = None) -> MemoryBroker:
    """The broker that ``memory://hostname/virtual_host`` connects to."""
    key = (hostname or "localhost", virtual_host or "/")
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = MemoryBroker("%s%s" % key)
    return broker


def forget_broker(hostname: Optional[str] = None, virtual_host: Optional[str] = None) -> None:
    """Drop a named broker and everything in it (for tests and resets)."""
    _brokers.pop((hostname or "localhost", virtual_host or "/"), None)


class Transport(VirtualTransport):
    """``memory://``: an in-process broker shared by name (see module doc)."""

    driver_type = driver_name = "memory"

    def create_store(self) -> MemoryBroker:
        return get_broker(self.client.hostname, self.client.virtual_host)
