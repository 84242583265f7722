"""The two ways a Redis connection waits: a blocking pop, and PUB/SUB.

:class:`BlockingPop` runs one ``BRPOP`` over every queue the connection
consumes, on a connection of its own, in a greenlet of its own, which records what it pops
at once. The caller waits on that greenlet *and* on its bells (a consumer
added, a fanout message arrived); when a bell rings first, ``CLIENT
UNBLOCK`` ends the pop early and atomically -- Redis either hands over one
message or none, so cutting the wait short never loses one. A caller
interrupted while waiting (a ``gevent.Timeout``) has the pop ended in the
background, and its message kept for the next delivery.

:class:`Subscriber` reads PUB/SUB messages (fanout exchanges) on another
dedicated connection, in a reader greenlet, and hands them to a callback.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterable, List, Optional, TypeVar

from redis import exceptions as redis_errors

from ... import green

__all__ = ["BlockingPop", "Subscriber"]

#: Longest single pop when the server refuses CLIENT UNBLOCK (an ACL, a
#: managed service): a new consumer is then noticed within this time.
FALLBACK_POP_SECONDS = 1.0
#: Pause before repeating an unblock that found no pop to end yet.
UNBLOCK_RETRY = 0.005
#: Seconds to wait for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT = 10.0

T = TypeVar("T")


class BlockingPop(Generic[T]):
    """One blocking pop at a time, on a dedicated connection.

    ``on_popped(key, raw)`` runs in the pop's greenlet the moment Redis
    hands a message over (the store records it as unacked there), and its
    result is what :meth:`pop` returns. Each pop's result is *claimed* by
    exactly one party -- the caller, the caller's successor, the greenlet
    that finishes an abandoned pop (``on_orphan``) or :meth:`leftover` --
    so a message is handed on once.
    """

    def __init__(self, connect: Callable[[], Any], unblock: Callable[[int], Any],
                 on_popped: Callable[[str, bytes], T], on_orphan: Callable[[T], None]) -> None:
        self._connect = connect
        self._unblock = unblock
        self._on_popped = on_popped
        self._on_orphan = on_orphan
        self._conn: Any = None
        self._client_id: Optional[int] = None
        self._can_unblock = True
        self._job: Optional[green.Greenlet] = None
        self._finished = green.Bell()

    def pop(self, keys: List[str], timeout: Optional[float], bells: Iterable[green.Bell]) -> Optional[T]:
        """Pop from the first non-empty key, waiting up to ``timeout`` (None: no limit).

        Returns None on timeout or when a bell rang first. If the caller is
        interrupted (``gevent.Timeout``, a kill), the pop is ended in the
        background and what it took goes to ``on_orphan``.
        """
        earlier = self._job
        if earlier is not None:  # abandoned, being ended: take its result over
            earlier.join()
            if self._claim(earlier):
                taken: Optional[T] = _popped(earlier)
                if taken is not None:
                    return taken
        job = self._job = green.spawn(self._run, keys, timeout)
        job.rawlink(lambda _: self._finished.ring())
        try:
            if not job.ready():
                green.wait_any([self._finished, *bells])
            if not job.ready():
                self.cut_short(job)
        except BaseException:
            green.spawn(self._abandon, job)
            raise
        if not self._claim(job):
            return None
        outcome: "Optional[T] | _Failed" = job.get()
        if isinstance(outcome, _Failed):
            raise outcome.error
        return outcome

    def _claim(self, job: green.Greenlet) -> bool:
        if self._job is job:
            self._job = None
            return True
        return False

    def _abandon(self, job: green.Greenlet) -> None:
        self.cut_short(job)
        popped = _popped(job)
        if self._claim(job) and popped is not None:
            self._on_orphan(popped)

    def cut_short(self, job: green.Greenlet) -> None:
        """End ``job``'s pop now and wait for it (it returns None, or the message it got).

        The pop and the unblock travel on different connections, so the
        unblock may reach Redis before the pop does and find nothing to
        end: then it is sent again until the pop is over.
        """
        while not job.ready():
            if not self._can_unblock:
                break  # pops are kept short instead
            if self._client_id is not None:
                try:
                    if self._unblock(self._client_id):
                        break
                except redis_errors.ResponseError:
                    self._can_unblock = False
                    continue
                except Exception:
                    if job.ready():
                        break  # ended meanwhile (the connection is closing)
                    raise
            job.join(timeout=UNBLOCK_RETRY)
        job.join()

    def _run(self, keys: List[str], timeout: Optional[float]) -> "Optional[T] | _Failed":
        """One pop. A failure is returned, not raised: it is the caller's to
        raise, not the hub's to print as a crashed greenlet."""
        try:
            return self._pop(keys, timeout)
        except Exception as exc:  # noqa: BLE001 - handed to the caller by pop()
            return _Failed(exc)

    def _pop(self, keys: List[str], timeout: Optional[float]) -> Optional[T]:
        if self._conn is None:
            self._conn = self._connect()
            try:
                self._conn.send_command("CLIENT", "ID", check_health=False)
                self._client_id = int(self._conn.read_response())
            except redis_errors.ResponseError:
                self._can_unblock = False
        seconds = 0.0 if timeout is None else max(timeout, 0.001)
        if not self._can_unblock:
            seconds = min(seconds or FALLBACK_POP_SECONDS, FALLBACK_POP_SECONDS)
        try:
            self._conn.send_command("BRPOP", *keys, f"{seconds:.3f}", check_health=False)
            reply = self._conn.read_response()
        except BaseException:
            self.close()
            raise
        if not reply:
            return None
        key, raw = reply
        return self._on_popped(key.decode(), raw)

    def leftover(self) -> Optional[T]:
        """End a pop nobody waits for any more; return what it took, if ours to hand on."""
        job = self._job
        if job is None:
            return None
        self.cut_short(job)
        if self._claim(job):
            popped: Optional[T] = _popped(job)
            return popped
        return None

    def close(self) -> None:
        conn, self._conn, self._client_id = self._conn, None, None
        if conn is not None:
            conn.disconnect()


class _Failed:
    """What a pop that failed returns (see :meth:`BlockingPop._run`)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _popped(job: green.Greenlet) -> Any:
    """The message a finished pop took, or None (nothing, or it failed)."""
    value = job.value if job.successful() else None
    return None if isinstance(value, _Failed) else value


class Subscriber:
    """PUB/SUB channels read by one reader greenlet."""

    def __init__(self, connect: Callable[[], Any], on_message: Callable[[str, bytes], None],
                 on_failure: Callable[[BaseException], None]) -> None:
        self._connect = connect
        self._on_message = on_message
        self._on_failure = on_failure
        self._conn: Any = None
        self._reader: Optional[green.Greenlet] = None
        self._confirmations: Dict[str, green.AsyncResult] = {}

    def subscribe(self, channel: str) -> None:
        """Subscribe and return once Redis confirms (messages published after
        this returns are received)."""
        if self._conn is None:
            self._conn = self._connect()
            self._reader = green.spawn(self._read_forever, self._conn)
        confirmed = self._confirmations[channel] = green.AsyncResult()
        self._conn.send_command("SUBSCRIBE", channel, check_health=False)
        confirmed.get(timeout=SUBSCRIBE_TIMEOUT)

    def unsubscribe(self, channel: str) -> None:
        if self._conn is not None:
            self._conn.send_command("UNSUBSCRIBE", channel, check_health=False)

    def _read_forever(self, conn: Any) -> None:
        try:
            while True:
                reply = conn.read_response()
                kind = reply[0]
                if kind == b"message":
                    self._on_message(reply[1].decode(), reply[2])
                elif kind == b"subscribe":
                    confirmed = self._confirmations.pop(reply[1].decode(), None)
                    if confirmed is not None:
                        confirmed.set(True)
        except green.GreenletExit:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting consumer
            for confirmed in self._confirmations.values():
                confirmed.set_exception(exc)
            self._confirmations.clear()
            if self._conn is conn:
                self._on_failure(exc)

    def close(self) -> None:
        conn, reader, self._conn, self._reader = self._conn, self._reader, None, None
        if conn is not None:
            conn.disconnect()
        if reader is not None:
            reader.kill(block=False)
