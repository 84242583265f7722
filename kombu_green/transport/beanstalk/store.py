"""The beanstalk store of the virtual framework: a tube per queue.

Where each message is, at any moment:

* *ready* -- a job in its queue's tube;
* *reserved* -- taken by one of this Connection's reserving connections
  (:class:`~.pool.Reserver`): either fetched ahead of its delivery (up to
  the consumers' free prefetch, held in :attr:`BeanstalkStore._ahead`) or
  delivered and not yet acked. beanstalkd returns it to ready by itself
  when that connection closes (a process that dies) or when the job's
  time-to-run passes (a process that hangs);
* gone -- deleted by the ack; or *buried* by ``reject(requeue=False)``.

Waiting. When no job is ready, one blocking ``reserve`` waits on every
consumed tube at once, in a greenlet of its own (the *waiter*), on a
reserving connection that holds nothing. A drain that times out or is
interrupted (a consumer added, an ack freeing prefetch, a
``gevent.Timeout``) leaves that reserve pending: the next drain on the same
queues waits on it again, and a job it reserves meanwhile is kept for the
next delivery, never lost. When the set of queues changes, the pending
reserve is ended by a job put into a private wake-up tube it also watches.

Bindings and exchanges cannot be kept in beanstalkd: they live in this
process, shared by every Connection to the same ``host:port`` (see
:func:`shared_state`).
"""
from __future__ import annotations

import binascii
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import greenstalk

from ... import green
from ...exceptions import ChannelError
from ..virtual import BrokerState, Empty, Storage
from ..virtual.payload import Payload, dumps, loads, make
from .client import GreenClient, stats_of, translated
from .config import (PRIORITY_BASE, WAKE_PRIORITY, Options, from_beanstalk_priority,
                     to_beanstalk_priority, tube_name, wake_tube)
from .pool import CommandPool, Reserver

__all__ = ["BeanstalkStore", "SharedState", "decode", "encode", "shared_state"]

log = logging.getLogger("kombu_green.transport.beanstalk")

#: Fields a payload carries in this process but never to the server.
_LOCAL_FIELDS = ("job", "job_pri", "redelivered")
WAKE_BODY = b"kombu_green: wake up"
#: Idle reserving connections kept open for the next wait; more are closed.
SPARE_RESERVERS = 2
#: Seconds to wait for a pending reserve to end after its wake-up job.
END_WAIT_TIMEOUT = 10.0


# -- state shared by the Connections of this process -------------------------------


@dataclass
class SharedState:
    """Exchanges, bindings and declared queues of one beanstalkd, in this process."""

    state: BrokerState = field(default_factory=BrokerState)
    declared: Set[str] = field(default_factory=set)


_shared: Dict[str, SharedState] = {}


def shared_state(where: str) -> SharedState:
    """The bindings every Connection of this process to ``where`` ("host:port") sees."""
    found = _shared.get(where)
    if found is None:
        found = _shared[where] = SharedState()
    return found


# -- payloads -------------------------------------------------------------------------


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


@dataclass(eq=False)
class _Wait:
    """One blocking reserve, pending in its own greenlet."""

    reserver: Reserver
    tubes: FrozenSet[str]
    greenlet: Any = None
    #: The reserve returned our wake-up job.
    woken: bool = False
    #: Ended on purpose by closing its connection: its error is no news.
    cut: bool = False

    @property
    def done(self) -> bool:
        return self.greenlet is not None and self.greenlet.dead


class BeanstalkStore(Storage):
    """Tubes of one beanstalkd, reserved and settled for one Connection."""

    def __init__(self, where: str, connect: Callable[[], GreenClient], options: Options) -> None:
        self.where = where
        shared = shared_state(where)
        self.state = shared.state
        self._declared = shared.declared
        self._connect = connect
        self.ttr = options.ttr
        self.pool = CommandPool(connect, options.max_connections)
        self._reservers: List[Reserver] = []
        #: job id -> (the connection holding it, its queue)
        self._held: Dict[int, Tuple[Reserver, str]] = {}
        #: Reserved, not yet delivered: (queue, payload), oldest first.
        self._ahead: Deque[Tuple[str, Payload]] = deque()
        self._tubes: Dict[str, str] = {}
        self._queues: Dict[str, str] = {}
        self._wait: Optional[_Wait] = None
        self._planning = green.Lock()
        self._arrived = green.Bell()
        self._failure: Optional[BaseException] = None
        self._batch = 1
        self._callers = 0
        self._wake_tube = wake_tube(uuid.uuid4().hex)
        self._closed = False

    @translated
    def check(self) -> None:
        """Connect now, so an unreachable server is reported when connecting."""
        with self.pool.client():
            pass

    def _tube(self, queue: str) -> str:
        tube = self._tubes.get(queue)
        if tube is None:
            tube = self._tubes[queue] = tube_name(queue)
            self._queues[tube] = queue
        return tube

    # -- queues -------------------------------------------------------------------------

    @translated
    def new_queue(self, queue: str, arguments: Optional[Dict[str, Any]] = None) -> None:
        self._declared.add(queue)
        self.pool.keep(self._tube(queue))

    @translated
    def has_queue(self, queue: str) -> bool:
        return queue in self._declared or self._tube_stats(queue) is not None

    def _tube_stats(self, queue: str) -> Optional[Dict[str, Any]]:
        with self.pool.client() as client:
            return client.stats_tube(self._tube(queue))

    @translated
    def size(self, queue: str) -> int:
        stats = self._tube_stats(queue)
        return int(stats.get("current-jobs-ready", 0)) if stats else 0

    @translated
    def purge(self, queue: str) -> int:
        with self.pool.client() as client:
            return client.drop_jobs(self._tube(queue), "ready")

    @translated
    def delete_queue(self, queue: str) -> None:
        """Drop every job of the queue (ready, delayed, buried, and those this
        Connection holds) and forget its declaration."""
        for job_id, (_, held_queue) in list(self._held.items()):
            if held_queue == queue:
                self._settle(job_id, "delete")
        self._ahead = deque(item for item in self._ahead if item[0] != queue)
        tube = self._tube(queue)
        with self.pool.client() as client:
            for state in ("ready", "delayed", "buried"):
                client.drop_jobs(tube, state)
        self._declared.discard(queue)
        self.pool.unkeep(tube)

    # -- publishing -----------------------------------------------------------------------

    @translated
    def put(self, queue: str, payload: Payload, priority: int = 0) -> None:
        raw = encode(payload)
        try:
            with self.pool.client() as client:
                client.put_job(self._tube(queue), raw, to_beanstalk_priority(priority), self.ttr)
        except greenstalk.JobTooBigError as exc:
            raise ChannelError(
                f"beanstalkd at {self.where} refused a message of {len(raw):,} bytes (body, headers "
                "and properties, the body in base64): larger than its maximum job size "
                "(beanstalkd -z, 65,535 bytes by default)") from exc

    # -- taking -------------------------------------------------------------------------

    @translated
    def get(self, queue: str) -> Payload:
        item = self._next_ahead({queue})
        if item is None:
            self._take(frozenset([self._tube(queue)]), 1)
            item = self._next_ahead({queue})
        if item is None:
            raise Empty()
        return item[1]

    @translated
    def get_any(self, queues: Sequence[str], timeout: Optional[float],
                interrupt: Optional[green.Bell] = None, batch: int = 1) -> Tuple[str, Payload]:
        """Serve what was fetched ahead, else take a batch, else wait on the pending reserve."""
        self._raise_failure()
        wanted = set(queues)
        item = self._next_ahead(wanted)
        if item is not None:
            return item
        self._batch = max(1, batch)
        tubes = frozenset(self._tube(queue) for queue in queues)
        with self._planning:
            wait = self._wait
            if wait is not None and (wait.done or wait.tubes != tubes):
                self._end_wait()
                self._raise_failure()
                wait = None
                item = self._next_ahead(wanted)
            if item is None and wait is None:
                self._take(tubes, self._batch)
                item = self._next_ahead(wanted)
                if item is None and (timeout is None or timeout > 0):
                    wait = self._start_wait(tubes)
        if item is not None:
            return item
        if wait is not None:
            self._await(wait, wanted, interrupt, timeout)
            self._raise_failure()
            item = self._next_ahead(wanted)
            if item is not None:
                return item
        raise Empty()

    def _await(self, wait: _Wait, wanted: Set[str], interrupt: Optional[green.Bell],
               timeout: Optional[float]) -> None:
        """Until the reserve returns, ``interrupt`` rings or ``timeout`` passes."""
        event = green.Event()
        bells = [self._arrived] + ([interrupt] if interrupt is not None else [])
        for bell in bells:
            bell.attach(event)
        self._callers += 1
        try:
            if not wait.done and not any(queue in wanted for queue, _ in self._ahead):
                event.wait(timeout)
        finally:
            self._callers -= 1
            for bell in bells:
                bell.detach(event)

    def _next_ahead(self, wanted: Set[str]) -> Optional[Tuple[str, Payload]]:
        for index, (queue, payload) in enumerate(self._ahead):
            if queue in wanted:
                del self._ahead[index]
                return queue, payload
        return None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _take(self, tubes: FrozenSet[str], count: int) -> None:
        """Reserve up to ``count`` ready jobs into :attr:`_ahead`, never waiting.

        The round trips run in a greenlet of their own: if the caller is
        interrupted meanwhile, what was reserved still lands in ``_ahead``.
        """
        job = green.spawn(self._take_now, tubes, count)
        job.join()
        if job.value is not None:
            raise job.value

    def _take_now(self, tubes: FrozenSet[str], count: int) -> Optional[BaseException]:
        try:
            reserver = self._taker()
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return exc
        reserver.busy += 1
        try:
            _, jobs = reserver.client.reserve_now(tubes, count)
            self._record(reserver, jobs, reserver.client.stats_jobs([job.id for job in jobs]))
            return None
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return exc
        finally:
            reserver.busy -= 1
            if reserver.client.closed:
                self._forget(reserver)

    def _taker(self) -> Reserver:
        """A reserving connection for a non-blocking take: one holding jobs if any."""
        spare = None
        for reserver in list(self._reservers):
            if reserver.waiting:
                continue
            if not reserver.busy and reserver.client.stale():
                self._forget(reserver)  # closed by the server: it released what it held
                continue
            if reserver.held:
                return reserver
            spare = spare or reserver
        return spare or self._new_reserver()

    def _new_reserver(self) -> Reserver:
        reserver = Reserver(self._connect())
        self._reservers.append(reserver)
        return reserver

    def _record(self, reserver: Reserver, jobs: List[greenstalk.Job],
                stats: List[Optional[Dict[str, Any]]], wait: Optional[_Wait] = None) -> None:
        """Note the jobs ``reserver`` reserved as held, and queue them for delivery."""
        wakes = []
        for job, info in zip(jobs, stats):
            if info is None:
                continue  # gone already: nothing to deliver
            tube = str(info.get("tube", ""))
            if tube == self._wake_tube:
                wakes.append(job.id)
                if wait is not None:
                    wait.woken = True
                continue
            queue = self._queues.get(tube, tube)
            previous = self._held.get(job.id)
            if previous is not None:  # its time-to-run passed and we reserved it again
                previous[0].held.discard(job.id)
            priority = int(info.get("pri", PRIORITY_BASE))
            self._held[job.id] = (reserver, queue)
            reserver.held.add(job.id)
            self._ahead.append((queue, decode(job.body, queue, job.id, priority,
                                              int(info.get("reserves", 1)))))
        if wakes:
            reserver.client.delete_ids(wakes)

    # -- the pending reserve ----------------------------------------------------------------

    def _start_wait(self, tubes: FrozenSet[str]) -> _Wait:
        reserver = None
        for candidate in reversed(list(self._reservers)):
            if candidate.idle:
                if not candidate.client.stale():
                    reserver = candidate
                    break
                self._forget(candidate)
        reserver = reserver or self._new_reserver()
        reserver.waiting = True
        wait = self._wait = _Wait(reserver, tubes)
        wait.greenlet = green.spawn(self._reserve, wait)
        return wait

    def _reserve(self, wait: _Wait) -> None:
        """The waiter: one blocking reserve, then the rest of a batch without waiting."""
        reserver = wait.reserver
        client = reserver.client
        try:
            job = client.reserve_blocking(wait.tubes | {self._wake_tube})
            if job is None:
                return
            more = self._batch - 1 if self._callers else 0  # nobody waits now: take just one
            (first,), jobs = client.reserve_now(None, more, b"stats-job %d\r\n" % job.id, 1)
            self._record(reserver, [job, *jobs],
                         [stats_of(first), *client.stats_jobs([extra.id for extra in jobs])], wait)
        except Exception as exc:  # noqa: BLE001 - reported to the next drain
            if not (wait.cut or self._closed):
                self._failure = exc
        finally:
            reserver.waiting = False
            if client.closed:
                self._forget(reserver)
            self._arrived.ring()

    def _end_wait(self) -> None:
        """End the pending reserve (its job, if it got one, is kept for delivery)."""
        wait, self._wait = self._wait, None
        if wait is None or wait.done:
            return
        wake_id = None
        try:
            with self.pool.client() as client:
                wake_id = client.put_job(self._wake_tube, WAKE_BODY, WAKE_PRIORITY, 60)
        except Exception as exc:  # noqa: BLE001 - cut it the hard way below
            log.info("could not wake the pending reserve at %s (%s); closing its connection",
                     self.where, exc)
        if wake_id is not None:
            wait.greenlet.join(timeout=END_WAIT_TIMEOUT)
        if not wait.done:
            wait.cut = True
            wait.reserver.close()  # beanstalkd releases whatever it reserved
            wait.greenlet.join()
        if wake_id is not None and not wait.woken:
            try:
                with self.pool.client() as client:
                    client.delete_ids([wake_id])
            except Exception as exc:  # noqa: BLE001 - a stray wake-up only costs one empty wait
                log.info("could not delete wake-up job %d at %s: %s", wake_id, self.where, exc)

    # -- consumers ----------------------------------------------------------------------------

    @translated
    def unwatch(self, queue: str) -> None:
        """The last consumer of ``queue`` here went away: stop taking, give back what was taken."""
        tube = self._tube(queue)
        with self._planning:
            if self._wait is not None and tube in self._wait.tubes:
                self._end_wait()
        back = [payload for held_queue, payload in self._ahead if held_queue == queue]
        self._ahead = deque(item for item in self._ahead if item[0] != queue)
        for payload in back:
            self._settle(payload.get("job"), "release", payload.get("job_pri"))

    # -- settling -------------------------------------------------------------------------------

    @translated
    def ack(self, queue: str, payload: Payload) -> None:
        self._settle(payload.get("job"), "delete")

    @translated
    def requeue(self, queue: str, payload: Payload, priority: int = 0) -> None:
        """Release the job: ready again at once, ahead of later jobs of its priority."""
        self._settle(payload.get("job"), "release", payload.get("job_pri", to_beanstalk_priority(priority)))

    @translated
    def bury(self, queue: str, payload: Payload) -> None:
        """Put the job aside (``reject(requeue=False)``); ``kick`` brings it back."""
        self._settle(payload.get("job"), "bury", payload.get("job_pri", PRIORITY_BASE))

    def _settle(self, job_id: Optional[int], verb: str, priority: Optional[int] = None) -> None:
        if job_id is None:
            return
        entry = self._held.pop(job_id, None)
        if entry is None:
            log.info("beanstalk job %d is not held by this connection any more (its connection was "
                     "lost, or its queue deleted): %s skipped", job_id, verb)
            return
        reserver, queue = entry
        reserver.held.discard(job_id)
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
                self._forget(reserver)
            else:
                self._trim()

    def _forget(self, reserver: Reserver) -> None:
        """A reserving connection is gone: beanstalkd released what it held."""
        reserver.close()
        if reserver in self._reservers:
            self._reservers.remove(reserver)
        for job_id in reserver.held:
            self._held.pop(job_id, None)
        if reserver.held:
            self._ahead = deque(item for item in self._ahead if item[1].get("job") not in reserver.held)
        reserver.held.clear()

    def _trim(self) -> None:
        """Close idle reserving connections beyond a few spares."""
        idle = [reserver for reserver in self._reservers if reserver.idle]
        for reserver in idle[:-SPARE_RESERVERS]:
            self._reservers.remove(reserver)
            reserver.close()

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection: beanstalkd releases every job still held here."""
        if self._closed:
            return
        self._closed = True
        wait, self._wait = self._wait, None
        if wait is not None:
            wait.cut = True
        for reserver in self._reservers:
            reserver.close()
        if wait is not None and wait.greenlet is not None:
            wait.greenlet.join(timeout=END_WAIT_TIMEOUT)
        self._reservers.clear()
        self._held.clear()
        self._ahead.clear()
        self.pool.close()
