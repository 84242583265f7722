"""The beanstalk wire format, apart from any connection: replies, the
buffered reader they come through, and the requests sent many at a time.

Pure functions of bytes, so they are unit-tested without a server.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import greenstalk

__all__ = ["Reader", "Reply", "delete_request", "deleted", "parse_stats", "stats_of",
           "stats_request", "stats_results"]

#: Replies that carry a data chunk after the line.
WITH_DATA = (b"RESERVED", b"FOUND", b"OK")
READ_SIZE = 65536
_JOB_FIELDS = re.compile(rb"^(tube|pri|reserves): (.*)$", re.M)
_READY = re.compile(rb"^current-jobs-ready: (\d+)$", re.M)


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


class Reader:
    """Buffered reads from a socket (``readline``/``read`` as greenstalk uses them)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = bytearray()
        # One receive buffer for good: recv(65536) would allocate (and map) 64 KB a call.
        self._chunk = memoryview(bytearray(READ_SIZE))

    def _fill(self) -> bool:
        size: int = self._sock.recv_into(self._chunk)
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
