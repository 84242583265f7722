"""The two ways a Redis connection waits: a blocking pop, and PUB/SUB.

:class:`BlockingPop` runs one ``BRPOP`` over every queue the connection
consumes, on a connection of its own, in a greenlet of its own. The caller
waits on that greenlet *and* on its bells (a consumer added, a fanout
message arrived); when a bell rings first, ``CLIENT UNBLOCK`` ends the pop
early and atomically -- Redis either hands over one message or none, so
cutting the wait short never loses one. Because the pop runs in its own
greenlet, a caller killed while waiting (a ``gevent.Timeout``) leaves the
pop to finish, and its message to the next caller.

:class:`Subscriber` reads PUB/SUB messages (fanout exchanges) on another
dedicated connection, in a reader greenlet, and hands them to a callback.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

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

Popped = Tuple[str, bytes]


class BlockingPop:
    """One blocking pop at a time, on a dedicated connection."""

    def __init__(self, connect: Callable[[], Any], unblock: Callable[[int], Any]) -> None:
        self._connect = connect
        self._unblock = unblock
        self._conn: Any = None
        self._client_id: Optional[int] = None
        self._can_unblock = True
        self._job: Optional[green.Greenlet] = None
        self._finished = green.Bell()

    def pop(self, keys: List[str], timeout: Optional[float], bells: Iterable[green.Bell]) -> Optional[Popped]:
        """Pop from the first non-empty key, waiting up to ``timeout`` (None: no limit).

        Returns None on timeout or when a bell rang first. A pop left over
        from an interrupted caller is finished first and its result returned.
        """
        if self._job is None:
            self._job = green.spawn(self._run, keys, timeout)
            self._job.rawlink(lambda _: self._finished.ring())
        job: green.Greenlet = self._job
        if not job.ready():
            green.wait_any([self._finished, *bells])
        if not job.ready():
            self.cut_short()
            job.join()
        if self._job is not job:
            return None  # taken over by leftover() (the connection is closing)
        self._job = None
        return job.get()

    def cut_short(self) -> None:
        """End the pop in progress now (it returns None, or the message it got).

        The pop and the unblock travel on different connections, so the
        unblock may reach Redis before the pop does and find nothing to
        end: then it is sent again until the pop is over.
        """
        job = self._job
        while job is not None and not job.ready():
            if not self._can_unblock:
                job.join()  # pops are kept short instead
                return
            if self._client_id is not None:
                try:
                    if self._unblock(self._client_id):
                        job.join()
                        return
                except redis_errors.ResponseError:
                    self._can_unblock = False
                    continue
            job.join(timeout=UNBLOCK_RETRY)

    def _run(self, keys: List[str], timeout: Optional[float]) -> Optional[Popped]:
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
        return key.decode(), raw

    def leftover(self) -> Optional[Popped]:
        """Finish a pop nobody waits for any more; return what it took."""
        job = self._job
        if job is None:
            return None
        self.cut_short()
        self._job = None
        job.join()
        return job.value if job.successful() else None

    def close(self) -> None:
        conn, self._conn, self._client_id = self._conn, None, None
        if conn is not None:
            conn.disconnect()


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
