"""The two kinds of beanstalk connection one kombu_green Connection uses.

*Command* connections (:class:`CommandPool`) put, peek, delete by id and
read statistics: short exchanges that any greenlet may run. They never
reserve. One of them also *watches* every tube declared through the
Connection, because beanstalkd deletes an empty tube nobody watches, and a
publisher in another process looks for the tube to know the queue exists.

*Reserving* connections (:class:`Reserver`) take jobs. beanstalkd lets
only the connection that reserved a job release or bury it (and delete it,
once another connection could have reserved it), so each reserved job
stays bound to its reserver until it is settled, and a reserver that
holds jobs never starts a blocking ``reserve`` (it could not settle them
until the reserve returned).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Set

from ... import green
from ...exceptions import ConnectionClosed
from .client import GreenClient

__all__ = ["CommandPool", "Health", "Reserver"]


class Health:
    """Counts failed connections: when one to the server fails, the others idle
    since then are checked before their next use (see :meth:`GreenClient.stale`)."""

    def __init__(self) -> None:
        self.failures = 0

    def failed(self) -> None:
        self.failures += 1

    def fresh(self, client: GreenClient) -> GreenClient:
        client.seen_failures = self.failures
        return client

    def usable(self, client: GreenClient) -> bool:
        suspect = client.seen_failures != self.failures
        client.seen_failures = self.failures
        return not client.stale(suspect)


class CommandPool:
    """Up to ``size`` command connections; a greenlet finding all busy waits its turn."""

    def __init__(self, connect: Callable[[], GreenClient], size: int, health: "Health") -> None:
        self._connect = connect
        self.health = health
        self.size = size
        self._slots = green.Semaphore(size)
        self._free: List[GreenClient] = []
        self.open: List[GreenClient] = []
        #: Tubes kept in existence (watched by one command connection).
        self.kept: Set[str] = set()
        #: Kept tubes no open connection watches yet (new, or their watcher was lost).
        self._unwatched: Set[str] = set()
        self.closed = False

    @contextmanager
    def client(self) -> Iterator[GreenClient]:
        """A command connection for the duration of the block (opened when none is free)."""
        self._slots.acquire()
        client = None
        try:
            if self.closed:
                raise ConnectionClosed("the connection to beanstalkd is closed")
            while self._free and client is None:
                candidate = self._free.pop()
                if self.health.usable(candidate):
                    client = candidate
                else:  # the server closed it while it was idle
                    candidate.close()
                    self._give_back(candidate)
            if client is None:
                client = self.health.fresh(self._connect())
                self.open.append(client)
            if self._unwatched:
                tubes, self._unwatched = self._unwatched, set()
                try:
                    client.keep(tubes)
                except BaseException:
                    self._unwatched |= tubes
                    raise
            yield client
        finally:
            if client is not None:
                self._give_back(client)
            self._slots.release()

    def _give_back(self, client: GreenClient) -> None:
        if client.closed or self.closed:
            if not self.closed:
                self.health.failed()
            if client in self.open:
                self.open.remove(client)
            self._unwatched |= client.watched & self.kept
            client.close()
        else:
            self._free.append(client)

    def keep(self, tube: str) -> None:
        """Make sure a command connection watches ``tube`` (see the module doc)."""
        if tube in self.kept:
            return
        self.kept.add(tube)
        self._unwatched.add(tube)
        with self.client():
            pass  # taking a client watches what is unwatched

    def unkeep(self, tube: str) -> None:
        self.kept.discard(tube)
        self._unwatched.discard(tube)
        for client in list(self.open):
            if tube in client.watched and not client.closed:
                client.unkeep(tube)

    def close(self) -> None:
        self.closed = True
        for client in self.open:
            client.close()
        self.open.clear()
        self._free.clear()


class Reserver:
    """A reserving connection and the ids of the jobs it holds (see the module doc)."""

    __slots__ = ("client", "held", "waiting", "busy", "deletes", "flusher")

    def __init__(self, client: GreenClient) -> None:
        self.client = client
        #: Reserved here and not settled yet (fetched ahead, or delivered and unacked).
        self.held: Set[int] = set()
        #: A blocking reserve runs on it.
        self.waiting = False
        #: Exchanges under way (taking or settling).
        self.busy = 0
        #: Acked jobs whose delete is still to be sent (they stay in ``held`` till then).
        self.deletes: List[int] = []
        #: The greenlet sending them.
        self.flusher: Optional[green.Greenlet] = None

    @property
    def idle(self) -> bool:
        """Free to start a blocking reserve: holds nothing, does nothing."""
        return not (self.held or self.waiting or self.busy or self.client.closed)

    def close(self) -> None:
        """Close the connection: beanstalkd releases every job it held."""
        self.client.close()
