"""greenstalk, made cooperative without monkey-patching.

greenstalk opens standard-library sockets (blocking the whole process in an
unpatched program) and refuses a gevent socket handed to it (an unpatched
gevent socket is not a ``socket.socket``). :class:`GreenClient` connects
itself with a gevent socket and reads replies through a small buffer of its
own instead of ``socket.makefile``: a buffered file keeps the descriptor
open after ``close()`` and cannot be closed while another greenlet reads
from it, and closing is how a blocking ``reserve`` is cut when all else
fails.

One client is one request/response stream: every exchange holds the
client's lock, and :meth:`GreenClient.call` sends several commands in one
write and reads their replies in order (pipelining), so a batch of
reserves or deletes costs one round trip. An exchange that breaks off
half-way (a socket error, a ``gevent.Timeout``) closes the client: its
stream can no longer be trusted, and beanstalkd releases whatever jobs the
connection had reserved.
"""
from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import greenstalk

from ... import green
from .protocol import WITH_DATA, Reader, Reply, delete_request, deleted, stats_of, stats_request, stats_results

__all__ = ["GreenClient", "connect"]

#: A client that answered this recently is used without checking it first.
TRUSTED_FOR = 1.0

if TYPE_CHECKING:
    _BytesClient = greenstalk.Client[bytes]
else:  # greenstalk 2.0's Client is not generic: subscripted for the checker only
    _BytesClient = greenstalk.Client


class GreenClient(_BytesClient):
    """A greenstalk client on a gevent socket, with bytes bodies and pipelining.

    The inherited greenstalk methods work too, but only the methods defined
    here take the client's lock; other code must hold :attr:`lock` itself.
    """

    def __init__(self, host: str, port: int, connect_timeout: Optional[float] = None) -> None:
        sock = green.cooperative_socket.create_connection((host, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(None)  # a blocking reserve may wait for as long as it takes
        self._sock = sock
        self._address = (host, port)
        self._replies = Reader(sock)
        self._reader = self._replies  # type: ignore[assignment] # greenstalk's methods read here too
        self.encoding = None
        self.lock = green.Lock()
        self.closed = False
        self.last_used = time.monotonic()
        #: Failures of sibling connections known when this one was last checked.
        self.seen_failures = 0
        #: The tube ``put`` goes to, and the tubes ``reserve`` takes from.
        self.used_tube = greenstalk.DEFAULT_TUBE
        self.watched: Set[str] = {greenstalk.DEFAULT_TUBE}

    # -- the wire -------------------------------------------------------------------

    def call(self, commands: bytes, replies: int) -> List[Reply]:
        """Send ``commands`` (CRLF-terminated) in one write; read ``replies`` replies."""
        with self.lock:
            if self.closed:
                raise ConnectionResetError("the connection to beanstalkd was closed")
            try:
                self._sock.sendall(commands)
                answers = [self._read_reply() for _ in range(replies)]
                self.last_used = time.monotonic()
                return answers
            except BaseException:
                self.close()  # half an exchange: the stream is out of step for good
                raise

    def _read_reply(self) -> Reply:
        line = self._replies.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionResetError("beanstalkd closed the connection")
        status, *values = line[:-2].split()
        data = None
        if status in WITH_DATA and values:
            size = int(values[-1])
            chunk = self._replies.read(size + 2)
            if len(chunk) != size + 2 or not chunk.endswith(b"\r\n"):
                raise ConnectionResetError("beanstalkd closed the connection in the middle of a reply")
            data = chunk[:-2]
        return Reply(status, values, data)

    def stale(self, suspect: bool = False) -> bool:
        """True when this idle client cannot be used: the server closed the connection
        (or sent something nobody asked for). One non-blocking peek, no round trip;
        skipped for a client used within :data:`TRUSTED_FOR` seconds unless ``suspect``
        (another connection to the server just failed)."""
        if self.closed or self._replies.pending():
            return True
        if not suspect and time.monotonic() - self.last_used < TRUSTED_FOR:
            return False
        self._sock.settimeout(0.0)
        try:
            self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # nothing to read: the normal state of an idle connection
        except OSError:
            return True
        finally:
            self._sock.settimeout(None)
        return True

    def close(self) -> None:
        """Close the socket (a greenlet blocked in ``reserve`` gets an OSError)."""
        self.closed = True
        self._replies.close()
        self._sock.close()

    # -- tubes ----------------------------------------------------------------------

    def _watch_commands(self, tubes: Iterable[str]) -> Tuple[bytes, int, Set[str]]:
        """Commands that make the watch list exactly ``tubes`` (watch first: never empty)."""
        wanted = set(tubes)
        add = sorted(wanted - self.watched)
        drop = sorted(self.watched - wanted)
        lines = [b"watch %b\r\n" % tube.encode("ascii") for tube in add]
        lines += [b"ignore %b\r\n" % tube.encode("ascii") for tube in drop]
        return b"".join(lines), len(lines), wanted

    def _use_command(self, tube: str) -> Tuple[bytes, int]:
        if tube == self.used_tube:
            return b"", 0
        return b"use %b\r\n" % tube.encode("ascii"), 1

    def _settle_tubes(self, replies: List[Reply], wanted: Optional[Set[str]] = None,
                      using: Optional[str] = None) -> List[Reply]:
        """Check the watch/use replies at the head of ``replies``; return the rest.

        A refused watch or use would leave the lists unknown: the client is closed.
        """
        count = 0
        try:
            if wanted is not None:
                count = len(wanted ^ self.watched)
                for reply in replies[:count]:
                    reply.expect(b"WATCHING")
                self.watched = wanted
            if using is not None and using != self.used_tube:
                replies[count].expect(b"USING")
                self.used_tube = using
                count += 1
        except greenstalk.Error:
            self.close()
            raise
        return replies[count:]

    def keep(self, tubes: Iterable[str]) -> None:
        """Watch ``tubes`` as well (a watched tube exists on the server even when empty)."""
        with self.lock:
            commands, count, wanted = self._watch_commands(self.watched | set(tubes))
            if count:
                self._settle_tubes(self.call(commands, count), wanted)

    def unkeep(self, tube: str) -> None:
        with self.lock:
            if tube in self.watched and len(self.watched) > 1:
                commands, count, wanted = self._watch_commands(self.watched - {tube})
                self._settle_tubes(self.call(commands, count), wanted)

    # -- commands ---------------------------------------------------------------------

    def put_job(self, tube: str, body: bytes, priority: int, ttr: int) -> int:
        """Put one job into ``tube``; return its id."""
        with self.lock:
            use, count = self._use_command(tube)
            replies = self.call(use + b"put %d 0 %d %d\r\n%b\r\n" % (priority, ttr, len(body), body),
                                count + 1)
            (reply,) = self._settle_tubes(replies, using=tube)
            return int(reply.expect(b"INSERTED").values[0])

    def reserve_blocking(self, tubes: Iterable[str]) -> Optional[greenstalk.Job[bytes]]:
        """Watch exactly ``tubes`` and wait for a job, however long it takes.

        Returns None for DEADLINE_SOON (a job this connection holds is about
        to time out: never the case for a connection that holds none).
        """
        with self.lock:
            commands, count, wanted = self._watch_commands(tubes)
            (reply,) = self._settle_tubes(self.call(commands + b"reserve\r\n", count + 1), wanted)
            if reply.status == b"DEADLINE_SOON":
                return None
            reply.expect(b"RESERVED")
            return greenstalk.Job(int(reply.values[0]), reply.data or b"")

    def reserve_now(self, tubes: Optional[Iterable[str]], count: int,
                    before: bytes = b"", before_replies: int = 0) -> Tuple[List[Reply], List[greenstalk.Job[bytes]]]:
        """Up to ``count`` ready jobs at once, in one round trip, never waiting.

        ``tubes`` (None: keep the watch list) is watched exactly first;
        ``before`` are other commands sent ahead in the same write, whose
        ``before_replies`` replies come back first.
        """
        with self.lock:
            commands, changes, wanted = self._watch_commands(tubes) if tubes is not None else (b"", 0, None)
            replies = self.call(commands + before + b"reserve-with-timeout 0\r\n" * count,
                                changes + before_replies + count)
            replies = self._settle_tubes(replies, wanted)
            jobs = []
            for reply in replies[before_replies:]:
                if reply.status == b"RESERVED":
                    jobs.append(greenstalk.Job(int(reply.values[0]), reply.data or b""))
                elif reply.status not in (b"TIMED_OUT", b"DEADLINE_SOON"):
                    reply.expect(b"RESERVED")
            return replies[:before_replies], jobs

    def stats_jobs(self, ids: Sequence[int], tubes: Sequence[str] = ()
                   ) -> Tuple[List[Optional[Dict[str, Any]]], Optional[int]]:
        """``stats-job`` of each id and how many jobs ``tubes`` have ready, in one round trip."""
        commands, count = stats_request(ids, tubes)
        if not count:
            return [], None
        return stats_results(self.call(commands, count), len(ids))

    def settle(self, verb: str, job_id: int, priority: int = 0) -> None:
        """``delete``, ``release`` (ready again at once) or ``bury`` a job this client reserved.

        Raises greenstalk's NotFoundError when the job is no longer reserved
        by this connection (its time-to-run passed) or gone.
        """
        if verb == "delete":
            self.call(b"delete %d\r\n" % job_id, 1)[0].expect(b"DELETED")
        elif verb == "release":
            self.call(b"release %d %d 0\r\n" % (job_id, priority), 1)[0].expect(b"RELEASED")
        else:
            self.call(b"bury %d %d\r\n" % (job_id, priority), 1)[0].expect(b"BURIED")

    def delete_ids(self, ids: List[int]) -> List[int]:
        """Delete jobs by id in one round trip; return the ids that were not found."""
        if not ids:
            return []
        return deleted(ids, self.call(delete_request(ids), len(ids)))

    def stats_tube(self, tube: str) -> Optional[Dict[str, Any]]:  # type: ignore[override]
        """The tube's statistics; None when the tube does not exist."""
        return stats_of(self.call(b"stats-tube %b\r\n" % tube.encode("ascii"), 1)[0])

    def drop_jobs(self, tube: str, state: str) -> int:
        """Delete every ``ready``, ``delayed`` or ``buried`` job of a tube; return how many.

        Peeks and deletes in the same write (one round trip per job); a job
        another connection reserves in between is skipped, not counted.
        """
        peek = b"peek-%b\r\n" % state.encode("ascii")
        dropped = 0
        with self.lock:
            use, count = self._use_command(tube)
            replies = self._settle_tubes(self.call(use + peek, count + 1), using=tube)
            while replies[-1].status == b"FOUND":
                (deleted, found) = self.call(b"delete %b\r\n" % replies[-1].values[0] + peek, 2)
                dropped += deleted.status == b"DELETED"
                replies = [found]
            if replies[-1].status != b"NOT_FOUND":
                replies[-1].expect(b"FOUND")
        return dropped


def connect(host: str, port: int, connect_timeout: Optional[float]) -> GreenClient:
    """A new client (raises OSError when beanstalkd cannot be reached)."""
    return GreenClient(host, port, connect_timeout)
