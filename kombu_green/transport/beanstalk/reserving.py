"""The jobs one Connection has reserved: who holds each, which still wait for
delivery, and settling them.

beanstalkd lets only the connection that reserved a job release or bury it
(and delete it, once it could be reserved by another), and closing a
connection releases every job it reserved. So each reserved job stays bound
to its :class:`~.pool.Reserver` until it is settled; a reserver holding jobs
never starts a blocking reserve; and losing a reserver means losing our
hold on its jobs -- beanstalkd makes them ready again -- never the jobs.

Acks are deleted at the next turn of the hub, the pending deletes of one
reserver in one write (:meth:`Reservations.close` sends any left).

While jobs are held, a greenlet sends each holding connection a harmless
command now and then (:meth:`Reservations._nudge`). beanstalkd 1.12 checks
a connection's time-to-run deadlines on a timer that can fire a moment
early and is then not set again until the connection sends something: an
idle holder's job would stay reserved past its ``ttr``, until the
connection next spoke or closed.
"""
from __future__ import annotations

import binascii
import logging
from collections import deque
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Set, Tuple

import greenstalk

from ... import green
from ..virtual.payload import Payload, dumps, loads, make
from .client import GreenClient
from .config import PRIORITY_BASE, from_beanstalk_priority
from .errors import translate
from .pool import Health, Reserver
from .protocol import delete_request, deleted

__all__ = ["Reservations", "counted", "decode", "encode", "log"]

log = logging.getLogger("kombu_green.transport.beanstalk")

#: Fields a payload carries in this process but never to the server.
_LOCAL_FIELDS = ("job", "job_pri", "redelivered")
#: Idle reserving connections kept open for the next wait; more are closed.
SPARE_RESERVERS = 2
#: Most jobs one take asks for (the consumers' free prefetch limits it first).
MAX_TAKE = 1024
#: Count the ready jobs of at most this many tubes after a take (to size the next).
COUNTED_TUBES = 8
#: Longest pause between two nudges of a holding connection (see the module doc).
NUDGE_MAX_INTERVAL = 60.0
#: Seconds close() waits for acks under way.
FLUSH_TIMEOUT = 10.0


def encode(payload: Payload) -> bytes:
    return dumps({key: value for key, value in payload.items() if key not in _LOCAL_FIELDS})


def decode(raw: bytes, queue: str, job_id: int, priority: int, reserves: int) -> Payload:
    """The payload of a reserved job. A job some other beanstalk client put (not a
    kombu_green envelope) is delivered as it is: raw bytes, ``application/data``."""
    try:
        payload = loads(raw)
        if not isinstance(payload.get("properties"), dict):
            raise ValueError("not an envelope")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        payload = make(raw, "application/data", "binary", {}, {
            "priority": from_beanstalk_priority(priority), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}})
    payload["job"] = job_id
    payload["job_pri"] = priority
    payload["redelivered"] = reserves > 1
    return payload


def counted(tubes: FrozenSet[str]) -> List[str]:
    """The tubes whose ready jobs a take counts (none when there are many)."""
    return sorted(tubes) if len(tubes) <= COUNTED_TUBES else []


class Reservations:
    """Reserving connections, the jobs they hold, and those fetched ahead of delivery."""

    def __init__(self, where: str, connect: Callable[[], GreenClient], ttr: int,
                 queue_of: Dict[str, str], wake_tube: str, health: Health) -> None:
        self.where = where
        self.health = health
        self.ttr = ttr
        self._connect = connect
        self._queue_of = queue_of
        self.wake_tube = wake_tube
        self.reservers: List[Reserver] = []
        #: job id -> (the connection holding it, its queue)
        self.held: Dict[int, Tuple[Reserver, str]] = {}
        #: Reserved, not yet delivered: (queue, payload), oldest first.
        self.ahead: Deque[Tuple[str, Payload]] = deque()
        #: How many jobs the next take asks for (see :meth:`learn`): an empty
        #: reserve-with-timeout costs beanstalkd a turn of its loop, and a reply of its own.
        self.take_size = 1
        self.closed = False
        #: Seconds between nudges: a quarter of the time-to-run, 0.5 s to 60 s.
        self.nudge_interval = min(max(ttr / 4.0, 0.5), NUDGE_MAX_INTERVAL)
        self._nudger: Optional[green.Greenlet] = None
        self._closing = green.Bell()

    # -- fetched ahead -----------------------------------------------------------------

    def next_ahead(self, wanted: Set[str]) -> Optional[Tuple[str, Payload]]:
        for index, (queue, payload) in enumerate(self.ahead):
            if queue in wanted:
                del self.ahead[index]
                return queue, payload
        return None

    def has_ahead(self, wanted: Set[str]) -> bool:
        return any(queue in wanted for queue, _ in self.ahead)

    # -- taking ---------------------------------------------------------------------------

    def take(self, tubes: FrozenSet[str], count: int) -> None:
        """Reserve up to ``count`` ready jobs into :attr:`ahead`, never waiting.

        The acks due on the same connection go in the same write. The round
        trips run in a greenlet of their own: if the caller is interrupted
        meanwhile, what was reserved still lands in ``ahead``.
        """
        reserver = self._taker()
        deletes, reserver.deletes = reserver.deletes, []
        reserver.busy += 1
        job = green.spawn(self._take_now, reserver, deletes, tubes, count)
        job.join()
        if job.value is not None:
            raise job.value

    def _take_now(self, reserver: Reserver, deletes: List[int], tubes: FrozenSet[str],
                  count: int) -> Optional[BaseException]:
        client = reserver.client
        try:
            ask = min(count, self.take_size)
            head, jobs = client.reserve_now(tubes, ask, delete_request(deletes), len(deletes))
            reserver.held.difference_update(deletes)
            self._too_late(deleted(deletes, head))
            ready = None
            if jobs:
                stats, ready = client.stats_jobs([job.id for job in jobs], counted(tubes))
                self.record(reserver, jobs, stats)
            self.learn(ask, len(jobs), ready)
            return None
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return exc
        finally:
            reserver.busy -= 1
            if client.closed:
                self.forget(reserver)

    def learn(self, asked: int, got: int, ready: Optional[int]) -> None:
        """Size the next take: what is ready now if we know, else double while full."""
        if ready is not None:
            self.take_size = max(1, min(ready, MAX_TAKE))
        elif not asked:
            return  # nothing asked, nothing learned
        elif got == asked:
            self.take_size = min(asked * 2, MAX_TAKE)
        else:
            self.take_size = max(1, got)

    def _taker(self) -> Reserver:
        """A reserving connection for a non-blocking take: one holding jobs if any."""
        spare = None
        for reserver in list(self.reservers):
            if reserver.waiting:
                continue
            if not reserver.busy and not self.health.usable(reserver.client):
                self.forget(reserver)  # closed by the server: it released what it held
                continue
            if reserver.held:
                return reserver
            spare = spare or reserver
        return spare or self._new_reserver()

    def idle_reserver(self) -> Reserver:
        """A reserving connection that holds nothing, for a blocking reserve."""
        for candidate in reversed(list(self.reservers)):
            if candidate.idle:
                if self.health.usable(candidate.client):
                    return candidate
                self.forget(candidate)
        return self._new_reserver()

    def _new_reserver(self) -> Reserver:
        reserver = Reserver(self.health.fresh(self._connect()))
        self.reservers.append(reserver)
        return reserver

    def record(self, reserver: Reserver, jobs: List[greenstalk.Job[bytes]],
               stats: List[Optional[Dict[str, Any]]]) -> bool:
        """Note the jobs ``reserver`` reserved as held and queue them for delivery;
        delete wake-up jobs. True if there was one."""
        wakes = []
        for job, info in zip(jobs, stats):
            if info is None:
                continue  # gone already: nothing to deliver
            tube = str(info.get("tube", ""))
            if tube == self.wake_tube:
                wakes.append(job.id)
                continue
            queue = self._queue_of.get(tube, tube)
            previous = self.held.get(job.id)
            if previous is not None:  # its time-to-run passed and we reserved it again
                previous[0].held.discard(job.id)
            priority = int(info.get("pri", PRIORITY_BASE))
            self.held[job.id] = (reserver, queue)
            reserver.held.add(job.id)
            self.ahead.append((queue, decode(job.body, queue, job.id, priority,
                                             int(info.get("reserves", 1)))))
        if reserver.held and self._nudger is None and not self.closed:
            self._nudger = green.spawn(self._nudge)
        if wakes:
            reserver.client.delete_ids(wakes)
        return bool(wakes)

    def _nudge(self) -> None:
        """While jobs are held: every :attr:`nudge_interval`, one harmless command on
        each holding connection that is otherwise silent (see the module doc)."""
        try:
            while any(reserver.held for reserver in self.reservers):
                if green.wait_any([self._closing], self.nudge_interval) or self.closed:
                    return
                for reserver in list(self.reservers):
                    if reserver.held and not (reserver.busy or reserver.waiting or reserver.client.closed):
                        try:
                            reserver.client.call(b"list-tube-used\r\n", 1)
                        except Exception:  # noqa: BLE001 - the connection is gone: so is our hold
                            self.forget(reserver)
        finally:
            self._nudger = None

    # -- settling ---------------------------------------------------------------------------

    def ack(self, job_id: Optional[int]) -> None:
        """Delete the job at the next turn of the hub, with the other acks due then."""
        entry = self._release_hold(job_id, "delete") if job_id is not None else None
        if job_id is None or entry is None:
            return
        reserver = entry[0]
        reserver.deletes.append(job_id)
        reserver.held.add(job_id)  # held (so not idle) until the delete is sent
        if reserver.flusher is None:
            reserver.flusher = green.spawn(self._flush, reserver)

    def _flush(self, reserver: Reserver) -> None:
        """Send the pending deletes of one reserving connection (its flusher greenlet)."""
        try:
            while reserver.deletes and not reserver.client.closed:
                ids, reserver.deletes = reserver.deletes, []
                reserver.busy += 1
                try:
                    missing = reserver.client.delete_ids(ids)
                finally:
                    reserver.busy -= 1
                    reserver.held.difference_update(ids)
                self._too_late(missing)
        except Exception as exc:  # noqa: BLE001 - the connection is lost: nothing to ack on
            if not self.closed:
                log.warning("acks of %d message(s) were lost with a connection to %s (%s): beanstalkd "
                            "releases those jobs and they will be delivered again",
                            len(reserver.held), self.where, translate(exc, self.where))
            self.forget(reserver)
        finally:
            reserver.flusher = None
            if not reserver.client.closed:
                self.trim()

    def _too_late(self, missing: List[int]) -> None:
        for job_id in missing:
            log.warning("beanstalk job %d was no longer reserved by this connection at %s (held "
                        "longer than its time-to-run, ttr=%ds?): its ack came too late, it may be "
                        "delivered again", job_id, self.where, self.ttr)

    def settle(self, job_id: Optional[int], verb: str, priority: Optional[int] = None) -> None:
        """``delete``, ``release`` or ``bury`` a held job now (a late one is logged)."""
        entry = self._release_hold(job_id, verb) if job_id is not None else None
        if job_id is None or entry is None:
            return
        reserver, queue = entry
        reserver.busy += 1
        try:
            reserver.client.settle(verb, job_id, PRIORITY_BASE if priority is None else priority)
        except greenstalk.NotFoundError:
            log.warning("beanstalk job %d of queue %r was no longer reserved by this connection at %s "
                        "(held longer than its time-to-run, ttr=%ds?): %s skipped; it may be "
                        "delivered again", job_id, queue, self.where, self.ttr, verb)
        finally:
            reserver.busy -= 1
            if reserver.client.closed:
                self.forget(reserver)
            else:
                self.trim()

    def _release_hold(self, job_id: int, verb: str) -> Optional[Tuple[Reserver, str]]:
        entry = self.held.pop(job_id, None)
        if entry is None:
            log.info("beanstalk job %d is not held by this connection any more (its connection was "
                     "lost, or its queue deleted): %s skipped", job_id, verb)
            return None
        entry[0].held.discard(job_id)
        return entry

    def give_back(self, queue: str) -> None:
        """Release the jobs fetched ahead for ``queue`` (nobody here consumes it now)."""
        back = [payload for held_queue, payload in self.ahead if held_queue == queue]
        self.ahead = deque(item for item in self.ahead if item[0] != queue)
        for payload in back:
            self.settle(payload.get("job"), "release", payload.get("job_pri"))

    def drop(self, queue: str) -> None:
        """Delete every job of ``queue`` held here (the queue is being deleted)."""
        for job_id, (_, held_queue) in list(self.held.items()):
            if held_queue == queue:
                self.settle(job_id, "delete")
        self.ahead = deque(item for item in self.ahead if item[0] != queue)

    # -- connections ------------------------------------------------------------------------

    def forget(self, reserver: Reserver, failed: bool = True) -> None:
        """A reserving connection is gone: beanstalkd released what it held."""
        if failed and not self.closed:
            self.health.failed()
        reserver.close()
        if reserver in self.reservers:
            self.reservers.remove(reserver)
        lost = reserver.held
        for job_id in lost:
            if self.held.get(job_id, (None,))[0] is reserver:
                del self.held[job_id]
        if lost:
            self.ahead = deque(item for item in self.ahead if item[1].get("job") not in lost)
        reserver.held = set()
        reserver.deletes = []

    def trim(self) -> None:
        """Close idle reserving connections beyond a few spares."""
        idle = [reserver for reserver in self.reservers if reserver.idle]
        for reserver in idle[:-SPARE_RESERVERS]:
            self.reservers.remove(reserver)
            reserver.close()

    def close(self) -> None:
        """Send the acks under way, then close every reserving connection."""
        for reserver in list(self.reservers):
            if reserver.flusher is not None:
                reserver.flusher.join(timeout=FLUSH_TIMEOUT)
        self.closed = True
        self._closing.ring()
        for reserver in list(self.reservers):
            reserver.close()
        self.reservers.clear()
        self.held.clear()
        self.ahead.clear()
