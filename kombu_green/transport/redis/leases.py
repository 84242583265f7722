"""Unacked messages recorded in Redis: the at-least-once guarantee.

A message taken from a queue is recorded -- in the same atomic script that
takes it -- in the unacked hash, with the server time in a sorted index.
An ack removes the record; a reject, a recover or a closing channel puts
the message back at the head of its queue. If the process dies instead,
the record stays, and the *restorer* -- a greenlet in every connection,
whatever its consumers are doing -- puts every record older than
``visibility_timeout`` back on its queue, marked redelivered. A Redis lock
makes sure only one worker restores at a time, and each record is moved
by one atomic script, so no message is ever restored twice.

Acks are written at the next turn of the hub, all of a batch in one round
trip; a process that dies before that gets those messages back after the
visibility timeout, never loses them.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, List, Optional, Sequence, Tuple

import redis
from redis.exceptions import LockError

from ... import green
from .keys import Keys
from .scripts import RECORD, REQUEUE, RESTORE, TAKE

__all__ = ["Leases"]

logger = logging.getLogger(__name__)

#: kombu's default visibility timeout: one hour.
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
#: How long a restorer may hold the lock before others may take it over.
DEFAULT_MUTEX_EXPIRE = 300.0
#: Records moved per script call (keeps each call short).
RESTORE_BATCH = 100

Taken = Tuple[str, str, bytes]   # list key, tag, raw message


class Leases:
    """Take, record, settle and restore messages of one connection."""

    def __init__(self, client: redis.Redis, keys: Keys,
                 visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
                 restore_interval: Optional[float] = None,
                 mutex_expire: float = DEFAULT_MUTEX_EXPIRE) -> None:
        self.client = client
        self.keys = keys
        self.visibility_timeout = float(visibility_timeout)
        #: Seconds between restore rounds; a lease is restored at most this late.
        self.restore_interval = float(restore_interval) if restore_interval else \
            min(60.0, max(0.05, self.visibility_timeout / 4))
        self.mutex_expire = float(mutex_expire)
        self._take = client.register_script(TAKE)
        self._record = client.register_script(RECORD)
        self._requeue = client.register_script(REQUEUE)
        self._restore = client.register_script(RESTORE)
        self._outbox: List[str] = []
        self._flusher: Optional[green.Greenlet] = None
        self._restorer: Optional[green.Greenlet] = None
        self._stop = green.Bell()
        self._stopped = False

    @staticmethod
    def new_tag() -> str:
        return uuid.uuid4().hex

    # -- taking -----------------------------------------------------------------

    def take(self, lists: Sequence[str], metas: Sequence[str], count: int) -> List[Taken]:
        """Take up to ``count`` messages from ``lists`` (in order) and record them."""
        flat = self._take(keys=[self.keys.unacked, self.keys.unacked_index, *lists],
                          args=[count, self.new_tag() + ".", *metas])
        return [(flat[i].decode(), flat[i + 1].decode(), flat[i + 2]) for i in range(0, len(flat), 3)]

    def record(self, tag: str, list_key: str, meta: str, raw: bytes) -> None:
        """Record a message a blocking pop took."""
        self._record(keys=[self.keys.unacked, self.keys.unacked_index], args=[tag, list_key, meta, raw])

    # -- settling ---------------------------------------------------------------

    def ack(self, tag: str) -> None:
        """Forget the record at the next turn of the hub (batched)."""
        self._outbox.append(tag)
        if self._flusher is None:
            self._flusher = green.spawn(self._flush_soon)

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the records expire into redelivery
            logger.warning("could not write %d acks (the messages will be redelivered after "
                           "the visibility timeout): %s", getattr(exc, "unwritten", 0), exc)
        finally:
            self._flusher = None

    def flush(self) -> None:
        """Write every pending ack now."""
        while self._outbox:
            tags, self._outbox = self._outbox, []
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(self.keys.unacked, *tags)
            pipe.zrem(self.keys.unacked_index, *tags)
            try:
                pipe.execute()
            except Exception as exc:
                exc.unwritten = len(tags)  # type: ignore[attr-defined]
                raise

    def finish(self) -> None:
        """Wait for acks being written, then write the rest (before closing)."""
        flusher = self._flusher
        if flusher is not None and flusher is not green.getcurrent():
            flusher.join()
        self.flush()

    def requeue(self, tags: Sequence[str]) -> None:
        """Put these messages back at the head of their queues, in order."""
        if not tags:
            return
        self.flush()
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            self._requeue(keys=[self.keys.unacked, self.keys.unacked_index], args=[tag], client=pipe)
        pipe.execute()

    # -- restoring --------------------------------------------------------------

    def start(self) -> None:
        if self._restorer is None and not self._stopped:
            self._restorer = green.spawn(self._restore_forever)

    def stop(self) -> None:
        self._stopped = True
        self._stop.ring()

    def _restore_forever(self) -> None:
        while not self._stopped:
            if green.wait_any([self._stop], self.restore_interval) or self._stopped:
                return
            try:
                self.restore_expired()
            except Exception as exc:  # noqa: BLE001 - try again next round
                logger.warning("restoring expired unacked messages failed: %s", exc)

    def restore_expired(self) -> int:
        """Restore every lease older than the visibility timeout; return how many.

        Returns 0 at once if another worker holds the restore lock.
        """
        lock: Any = self.client.lock(self.keys.unacked_mutex, timeout=self.mutex_expire,
                                     blocking=False, thread_local=False)
        if not lock.acquire(blocking=False):
            return 0
        restored = 0
        try:
            while True:
                moved, seen = self._restore(keys=[self.keys.unacked, self.keys.unacked_index],
                                            args=[self.visibility_timeout, RESTORE_BATCH])
                restored += int(moved)
                if int(seen) < RESTORE_BATCH:
                    return restored
        finally:
            try:
                lock.release()
            except LockError:
                pass  # it expired meanwhile: nothing to release
