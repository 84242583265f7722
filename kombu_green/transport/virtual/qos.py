"""Prefetch limits and the record of delivered-but-unsettled messages.

Every message handed to a consumer that must ack it stays here until it is
acked or rejected. If the channel closes first, :meth:`QoS.restore_unacked`
puts each one back on its queue marked ``redelivered`` -- the guarantee
that a crash in a callback never loses a message.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

from ...exceptions import PreconditionFailed
from .payload import Payload, priority_of

if TYPE_CHECKING:  # pragma: no cover
    from .storage import Storage

__all__ = ["QoS"]


class QoS:
    """Per-channel prefetch window and unacknowledged messages."""

    def __init__(self, store: "Storage", prefetch_count: int = 0) -> None:
        self.store = store
        #: At most this many unacked messages at once (0 = no limit).
        self.prefetch_count = prefetch_count
        self._unacked: Dict[int, Tuple[str, Payload]] = {}

    def __len__(self) -> int:
        return len(self._unacked)

    def can_consume(self) -> bool:
        return not self.prefetch_count or len(self._unacked) < self.prefetch_count

    def room(self) -> "int | None":
        """Free prefetch slots (None: no limit)."""
        if not self.prefetch_count:
            return None
        return max(0, self.prefetch_count - len(self._unacked))

    def append(self, delivery_tag: int, queue: str, payload: Payload) -> None:
        self._unacked[delivery_tag] = (queue, payload)

    def _take(self, delivery_tag: int, multiple: bool) -> List[Tuple[str, Payload]]:
        if multiple:
            tags = [t for t in self._unacked if not delivery_tag or t <= delivery_tag]
        else:
            tags = [delivery_tag] if delivery_tag in self._unacked else []
        if not tags:
            raise PreconditionFailed(
                f"Unknown delivery tag {delivery_tag!r}: the message was already settled, "
                "or its channel was closed and it went back to its queue")
        return [self._unacked.pop(t) for t in tags]

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        for queue, payload in self._take(delivery_tag, multiple):
            self.store.ack(queue, payload)

    def reject(self, delivery_tag: int, requeue: bool = False, multiple: bool = False) -> None:
        for queue, payload in self._take(delivery_tag, multiple):
            if requeue:
                payload["redelivered"] = True
                self.store.requeue(queue, payload, priority_of(payload))
            else:
                self.store.reject(queue, payload)

    def restore_unacked(self) -> int:
        """Put every unacked message back (newest first, so head-inserting
        stores keep the original order); return how many."""
        restored = 0
        while self._unacked:
            tag = next(reversed(self._unacked))
            queue, payload = self._unacked[tag]
            payload["redelivered"] = True
            if self.store.has_queue(queue):
                self.store.requeue(queue, payload, priority_of(payload))
            del self._unacked[tag]  # only once it is back: a failed requeue keeps it here
            restored += 1
        return restored

    def take_all(self) -> List[Tuple[str, Payload]]:
        """Remove and return every unacked message, newest first."""
        taken = [self._unacked[tag] for tag in reversed(self._unacked)]
        self._unacked.clear()
        return taken
