"""The storage contract: what a non-AMQP store must provide.

A store keeps named queues of message *payloads* (plain dicts, see
:mod:`.payload`) and an exchange/binding table. Everything AMQP-shaped --
routing, delivery tags, prefetch, acks, redelivery -- lives in the virtual
channel and is written once for every store.

Publishing goes through :meth:`Storage.publish`, which routes with the
exchange table and puts a copy on every matching queue; a store that can
route and store in one step (Redis, in one atomic script) overrides it.

The only waiting a store does is :meth:`Storage.get_any`. Stores with a
native blocking read (Redis BRPOP, beanstalk reserve, an in-process bell)
override it; the default polls :meth:`Storage.get` with backoff and yields
to the hub between attempts, so it never blocks other greenlets.
"""
from __future__ import annotations

import time
from queue import Empty
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ... import green
from .payload import clone
from .state import BrokerState

__all__ = ["Empty", "Storage"]

Payload = Dict[str, Any]


class Storage:
    """Base class for stores. Subclasses implement the abstract methods."""

    #: Exchanges and bindings (in-process by default; shared stores override).
    state: BrokerState
    #: Shortest and longest pause of the default polling :meth:`get_any`.
    polling_interval_min: float = 0.01
    polling_interval_max: float = 1.0

    # -- required ----------------------------------------------------------

    def new_queue(self, queue: str, arguments: Optional[Dict[str, Any]] = None) -> None:
        """Create ``queue`` if missing (declare is idempotent)."""
        raise NotImplementedError

    def has_queue(self, queue: str) -> bool:
        raise NotImplementedError

    def put(self, queue: str, payload: Payload, priority: int = 0) -> None:
        """Append a message; higher ``priority`` (0-9) is delivered first."""
        raise NotImplementedError

    def get(self, queue: str) -> Payload:
        """Remove and return the next message; raise :class:`Empty` if none. Never waits."""
        raise NotImplementedError

    def size(self, queue: str) -> int:
        raise NotImplementedError

    def purge(self, queue: str) -> int:
        """Drop every ready message; return how many."""
        raise NotImplementedError

    def delete_queue(self, queue: str) -> None:
        raise NotImplementedError

    # -- optional ----------------------------------------------------------

    def publish(self, exchange: str, routing_key: str, payload: Payload, priority: int = 0) -> int:
        """Route ``payload`` and store a copy in every matching queue.

        Returns how many queues took it (0: unroutable). The default
        exchange ("") routes to the queue named by ``routing_key``.
        """
        if exchange:
            queues = self.state.route(exchange, routing_key, payload.get("headers"))
        else:
            queues = [routing_key] if self.has_queue(routing_key) else []
        last = len(queues) - 1
        for index, queue in enumerate(queues):
            self.put(queue, payload if index == last else clone(payload), priority)
        return len(queues)

    def watch(self, queue: str) -> None:
        """A consumer started on ``queue`` (stores with subscriptions subscribe)."""

    def unwatch(self, queue: str) -> None:
        """The last consumer of ``queue`` in this connection went away."""

    def requeue(self, queue: str, payload: Payload, priority: int = 0) -> None:
        """Return a message that was taken out (reject/recover/close).

        Stores that can put it at the head of its queue should, as AMQP
        brokers do; the default appends.
        """
        self.put(queue, payload, priority)

    def ack(self, queue: str, payload: Payload) -> None:
        """A delivered message was acked (stores that track leases drop it)."""

    def reject(self, queue: str, payload: Payload) -> None:
        """A delivered message was rejected without requeue. AMQP drops it
        (the default); a store may keep it aside instead (beanstalk buries)."""
        self.ack(queue, payload)

    def get_any(self, queues: Sequence[str], timeout: Optional[float],
                interrupt: Optional[green.Bell] = None, batch: int = 1) -> Tuple[str, Payload]:
        """Wait for a message on any of ``queues``; raise :class:`Empty`.

        Returns early (raising Empty) when ``interrupt`` rings, so the
        caller can re-plan which queues to wait on. ``batch`` says how many
        messages the consumers could take now: a network store may fetch
        that many in one round trip and hand out the rest on later calls
        (they count as delivered, so they are safe if the process dies).
        This default polls with
        exponential backoff between ``polling_interval_min`` and ``_max``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.polling_interval_min
        while True:
            for queue in queues:
                try:
                    return queue, self.get(queue)
                except Empty:
                    pass
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Empty()
            pause = delay if remaining is None else min(delay, remaining)
            if green.wait_any([interrupt] if interrupt else [], pause):
                raise Empty()
            delay = min(delay * 2, self.polling_interval_max)

    def close(self) -> None:
        """Release resources held for one connection."""

    def unreturned(self) -> List[Tuple[str, Payload]]:
        """Messages taken ahead but neither delivered nor given back, because
        the broker became unreachable while closing (newest first). The
        transport returns them on its next connection."""
        return []
