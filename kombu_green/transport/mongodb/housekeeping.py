"""One greenlet per connection: expired leases return, used queues stay alive.

* **Leases.** A document leased longer than ``visibility_timeout`` ago goes
  back to its queue, marked redelivered. One ``update_many`` does it, and
  each document is updated atomically, so when many connections restore at
  once every message still returns exactly once. This runs whatever the
  connection's consumers are doing, every ``restore_interval`` (default a
  quarter of the visibility timeout, at most 60 s).
* **Tombstones** of acked fanout copies older than ``FANOUT_TOMBSTONE``
  are deleted in the same round.
* **x-expires.** A queue declared with ``x-expires`` carries a deadline
  that a declare, a ``get`` or a consumer pushes back; while this
  connection consumes the queue, the greenlet pushes it back on schedule,
  so a queue in use never expires under a long callback.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from ... import green
from .documents import utc

if TYPE_CHECKING:  # pragma: no cover
    from .store import MongoStore

__all__ = ["Housekeeping"]

logger = logging.getLogger("kombu_green.transport.mongodb")

#: Seconds an acked fanout copy is remembered (see :mod:`.fanout`).
FANOUT_TOMBSTONE = 600.0


class Housekeeping:
    """Lease restoring and queue keep-alive for one store."""

    def __init__(self, store: "MongoStore", visibility_timeout: float,
                 restore_interval: Optional[float] = None) -> None:
        self.store = store
        self.visibility_timeout = float(visibility_timeout)
        self.restore_interval = float(restore_interval or min(60.0, self.visibility_timeout / 4))
        #: x-expires (ms) of queues declared through this connection.
        self.expires: Dict[str, int] = {}
        self._kept: Set[str] = set()
        self._wake = green.Bell()
        self._greenlet: Optional[green.Greenlet] = green.spawn(self._run)

    def restore(self) -> int:
        """Return every lease older than the visibility timeout; how many returned."""
        cutoff = utc(time.time() - self.visibility_timeout)
        messages = self.store.messages

        def restore() -> Tuple[int, List[str]]:
            queues = messages.distinct("q", {"lt": {"$lt": cutoff}})
            result = messages.update_many({"lt": {"$lt": cutoff}},
                                          {"$set": {"lease": None, "r": True}, "$unset": {"lt": ""}})
            messages.delete_many({"done": {"$lt": utc(time.time() - FANOUT_TOMBSTONE)}})
            return result.modified_count, queues
        restored, queues = self.store.offload.call(restore)
        if restored:
            self.store.arrived(queues)
        return restored

    def touch(self, queue: str) -> None:
        """Push back the x-expires deadline of ``queue`` (if it has one)."""
        expires = self.expires.get(queue)
        if expires:
            self.store.offload.call(self.store.queues.update_one, {"_id": queue},
                                    {"$set": {"x": utc(time.time() + expires / 1000.0)}})

    def keep(self, queue: str) -> None:
        self._kept.add(queue)
        if queue not in self.expires:  # declared elsewhere: its arguments are in its document
            document = self.store.offload.call(self.store.queues.find_one, {"_id": queue}, {"a": 1})
            expires = int(((document or {}).get("a") or {}).get("x-expires") or 0)
            if expires:
                self.expires[queue] = expires
        if queue in self.expires:
            self.touch(queue)
            self._wake.ring()  # the next round may now be due sooner

    def unkeep(self, queue: str) -> None:
        self._kept.discard(queue)

    def _pause(self) -> float:
        kept = [self.expires[q] / 3000.0 for q in self._kept if q in self.expires]
        return max(0.05, min([self.restore_interval, *kept]))

    def _run(self) -> None:
        next_restore = 0.0
        while self._greenlet is not None:
            try:
                if time.monotonic() >= next_restore:
                    self.restore()
                    next_restore = time.monotonic() + self.restore_interval
                for queue in list(self._kept):
                    self.touch(queue)
            except Exception as exc:  # noqa: BLE001 - try again next round
                logger.warning("MongoDB at %s: housekeeping failed (%s); retrying", self.store.where, exc)
            self._wake.wait(self._pause())

    def close(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=False)
