"""greenstalk, made cooperative without monkey-patching, and its errors translated.

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

import re
import socket
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

import greenstalk

from ... import exceptions as errors
from ... import green
from ..base import error_boundary

__all__ = ["CONNECTION_ERRORS", "DRIVER_ERRORS", "GreenClient", "Reply", "translate", "translated"]

#: What a transport method may see go wrong below it.
DRIVER_ERRORS: Tuple[type, ...] = (greenstalk.Error, OSError)
#: What ``ensure`` should retry: losing the server, in any form.
CONNECTION_ERRORS: tuple = (errors.OperationalError, OSError, socket.timeout)
#: Replies that carry a data chunk after the line.
_WITH_DATA = (b"RESERVED", b"FOUND", b"OK")
_RESPONSE_NAMES: Dict[type, str] = {cls: status.decode() for status, cls in greenstalk.ERROR_RESPONSES.items()}
_READ_SIZE = 65536
_JOB_FIELDS = re.compile(rb"^(tube|pri|reserves): (.*)$", re.M)
_READY = re.compile(rb"^current-jobs-ready: (\d+)$", re.M)
#: A client that answered this recently is used without checking it first.
TRUSTED_FOR = 1.0


class Reply(NamedTuple):
    """One beanstalkd reply: ``RESERVED 12 3`` -> (b"RESERVED", [b"12", b"3"], b"abc")."""

    status: bytes
    values: List[bytes]
    data: Optional[bytes]

    def expect(self, status: bytes) -> "Reply":
        """This reply if its status is ``status``; else greenstalk's error for it."""
        if self.status == status:
            return self
        error = greenstalk.ERROR_RESPONSES.get(self.status)
        if error is not None:
            raise error(self.values)
        raise greenstalk.UnknownResponseError(self.status, self.values)


class _Reader:
    """Buffered reads from a socket (``readline``/``read`` as greenstalk uses them)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = bytearray()
        # One receive buffer for good: recv(65536) would allocate (and map) 64 KB a call.
        self._chunk = memoryview(bytearray(_READ_SIZE))

    def _fill(self) -> bool:
        size = self._sock.recv_into(self._chunk)
        self._buffer += self._chunk[:size]
        return size > 0

    def readline(self) -> bytes:
        start = 0
        while True:
            end = self._buffer.find(b"\r\n", start)
            if end >= 0:
                line = bytes(self._buffer[:end + 2])
                del self._buffer[:end + 2]
                return line
            start = max(0, len(self._buffer) - 1)
            if not self._fill():
                return b""

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                break
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def pending(self) -> bool:
        return bool(self._buffer)

    def close(self) -> None:
        self._buffer = bytearray()


def parse_stats(data: bytes) -> Dict[str, Any]:
    """The YAML mapping of a ``stats-*`` reply, numbers as ints."""
    stats: Dict[str, Any] = {}
    for line in data.decode("ascii", "replace").split("\n"):
        key, sep, value = line.partition(": ")
        if sep:
            stats[key] = int(value) if value.isdigit() else value.strip('"')
    return stats


class GreenClient(greenstalk.Client):
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
        self._replies = _Reader(sock)
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
        if status in _WITH_DATA and values:
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

    def reserve_blocking(self, tubes: Iterable[str]) -> Optional[greenstalk.Job]:
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
                    before: bytes = b"", before_replies: int = 0) -> Tuple[List[Reply], List[greenstalk.Job]]:
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


def delete_request(ids: Sequence[int]) -> bytes:
    return b"".join(b"delete %d\r\n" % job_id for job_id in ids)


def deleted(ids: Sequence[int], replies: List[Reply]) -> List[int]:
    """Check the replies to :func:`delete_request`; return the ids not found."""
    missing = []
    for job_id, reply in zip(ids, replies):
        if reply.status == b"NOT_FOUND":
            missing.append(job_id)
        else:
            reply.expect(b"DELETED")
    return missing


def stats_request(ids: Sequence[int], tubes: Sequence[str] = ()) -> Tuple[bytes, int]:
    """``stats-job`` of each id, then ``stats-tube`` of each tube: the commands, and
    how many replies they get."""
    commands = [b"stats-job %d\r\n" % job_id for job_id in ids]
    commands += [b"stats-tube %b\r\n" % tube.encode("ascii") for tube in tubes]
    return b"".join(commands), len(commands)


def stats_results(replies: List[Reply], jobs: int) -> Tuple[List[Optional[Dict[str, Any]]], Optional[int]]:
    """The replies to :func:`stats_request`: each job's ``tube``, ``pri`` and
    ``reserves`` (None: gone), and the jobs ready in the tubes (None: no tube
    was asked about). Only those fields are read: this runs for every job."""
    stats: List[Optional[Dict[str, Any]]] = []
    for reply in replies[:jobs]:
        if reply.status == b"NOT_FOUND":
            stats.append(None)
            continue
        fields = dict(_JOB_FIELDS.findall(reply.expect(b"OK").data or b""))
        stats.append({"tube": fields.get(b"tube", b"").decode("ascii", "replace"),
                      "pri": int(fields.get(b"pri", 0)), "reserves": int(fields.get(b"reserves", 1))})
    if len(replies) == jobs:
        return stats, None
    ready = 0
    for reply in replies[jobs:]:
        if reply.status != b"NOT_FOUND":
            found = _READY.search(reply.expect(b"OK").data or b"")
            ready += int(found.group(1)) if found else 0
    return stats, ready


def stats_of(reply: Reply) -> Optional[Dict[str, Any]]:
    if reply.status == b"NOT_FOUND":
        return None
    reply.expect(b"OK")
    return parse_stats(reply.data or b"")


def connect(host: str, port: int, connect_timeout: Optional[float]) -> GreenClient:
    """A new client (raises OSError when beanstalkd cannot be reached)."""
    return GreenClient(host, port, connect_timeout)


# -- errors -------------------------------------------------------------------


def translate(exc: BaseException, where: str) -> BaseException:
    """The kombu_green error for a greenstalk or socket error (names host:port)."""
    if isinstance(exc, errors.KombuError):
        return exc
    text = (str(exc).strip() or type(exc).__name__).rstrip(".")
    if isinstance(exc, greenstalk.JobTooBigError):
        return errors.ChannelError(
            f"beanstalkd at {where} refused a message larger than its maximum job size "
            "(beanstalkd -z, 65,535 bytes by default); send a smaller body or start beanstalkd "
            "with a larger -z")
    if isinstance(exc, greenstalk.DrainingError):
        return errors.OperationalError(
            f"beanstalkd at {where} is draining (shutting down) and takes no new messages")
    if isinstance(exc, greenstalk.UnknownResponseError):
        return errors.ChannelError(
            f"beanstalkd at {where} sent a reply this client does not understand: "
            f"{exc.status.decode('ascii', 'replace')}")
    if isinstance(exc, greenstalk.Error):
        name = _RESPONSE_NAMES.get(type(exc), type(exc).__name__)
        return errors.ChannelError(f"beanstalkd at {where} refused a command: {name}")
    if isinstance(exc, socket.timeout):
        return errors.OperationalError(f"Timed out talking to beanstalkd at {where}: {text}")
    if isinstance(exc, OSError):
        return errors.OperationalError(
            f"Cannot reach beanstalkd at {where}: {text}. Is it running, and are the host and port right?")
    return exc


#: Let only kombu_green errors out of a method of an object with ``where``.
translated = error_boundary(translate, DRIVER_ERRORS)
