"""The beanstalk store of the virtual framework: a tube per queue.

Where each message is, at any moment:

* *ready* -- a job in its queue's tube;
* *reserved* -- taken by one of this Connection's reserving connections
  (:mod:`.reserving`): either fetched ahead of its delivery (up to the
  consumers' free prefetch) or delivered and not yet acked. beanstalkd
  returns it to ready by itself when that connection closes (a process
  that dies) or when the job's time-to-run passes (a process that hangs);
* gone -- deleted by the ack; or *buried* by ``reject(requeue=False)``.

Taking. A drain first takes what is ready without waiting (a batch of
``reserve-with-timeout 0`` in one write). Only when nothing is, one
blocking reserve waits on every consumed tube at once (:mod:`.waiting`),
and stays pending across drains until the set of queues changes.

Bindings and exchanges cannot be kept in beanstalkd: they live in this
process, shared by every Connection to the same ``host:port`` (see
:func:`shared_state`).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Set, Tuple

import greenstalk

from ... import green
from ...exceptions import ChannelError
from ..virtual import BrokerState, Empty, Storage
from ..virtual.payload import Payload
from .client import GreenClient
from .config import PRIORITY_BASE, Options, to_beanstalk_priority, tube_name, wake_tube
from .errors import translated
from .pool import CommandPool, Health
from .reserving import Reservations, decode, encode
from .waiting import Waiter

__all__ = ["BeanstalkStore", "SharedState", "decode", "encode", "shared_state"]


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


class BeanstalkStore(Storage):
    """Tubes of one beanstalkd, reserved and settled for one Connection."""

    def __init__(self, where: str, connect: Callable[[], GreenClient], options: Options) -> None:
        self.where = where
        shared = shared_state(where)
        self.state = shared.state
        self._declared = shared.declared
        self.ttr = options.ttr
        health = Health()
        self.pool = CommandPool(connect, options.max_connections, health)
        self._tubes: Dict[str, str] = {}
        self._queues: Dict[str, str] = {}
        self.held = Reservations(where, connect, options.ttr, self._queues, wake_tube(uuid.uuid4().hex),
                                 health)
        self.waiter = Waiter(self.held, self.pool)
        self._planning = green.Lock()
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
        self.held.drop(queue)
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
        item = self.held.next_ahead({queue})
        if item is None:
            self.held.take(frozenset([self._tube(queue)]), 1)
            item = self.held.next_ahead({queue})
        if item is None:
            raise Empty()
        return item[1]

    @translated
    def get_any(self, queues: Sequence[str], timeout: Optional[float],
                interrupt: Optional[green.Bell] = None, batch: int = 1) -> Tuple[str, Payload]:
        """Serve what was fetched ahead, else take a batch, else wait on the pending reserve."""
        waiter = self.waiter
        waiter.raise_failure()
        wanted = set(queues)
        item = self.held.next_ahead(wanted)
        if item is not None:
            return item
        waiter.batch = max(1, batch)
        tubes = frozenset(self._tube(queue) for queue in queues)
        with self._planning:
            wait = waiter.current
            if wait is not None and (wait.done or wait.tubes != tubes):
                waiter.end()
                waiter.raise_failure()
                wait = None
                item = self.held.next_ahead(wanted)
            if item is None and wait is None:
                self.held.take(tubes, waiter.batch)
                item = self.held.next_ahead(wanted)
                if item is None and (timeout is None or timeout > 0):
                    wait = waiter.start(tubes)
        if item is not None:
            return item
        if wait is not None:
            waiter.wait(wait, wanted, interrupt, timeout)
            waiter.raise_failure()
            item = self.held.next_ahead(wanted)
            if item is not None:
                return item
        raise Empty()

    @translated
    def unwatch(self, queue: str) -> None:
        """The last consumer of ``queue`` here went away: stop taking, give back what was taken."""
        with self._planning:
            wait = self.waiter.current
            if wait is not None and self._tube(queue) in wait.tubes:
                self.waiter.end()
        self.held.give_back(queue)

    # -- settling -------------------------------------------------------------------------------

    def ack(self, queue: str, payload: Payload) -> None:
        """Delete the job, at the next turn of the hub: the acks of one reserving
        connection leave together, in one write (:meth:`close` sends any still due)."""
        self.held.ack(payload.get("job"))

    @translated
    def requeue(self, queue: str, payload: Payload, priority: int = 0) -> None:
        """Release the job: ready again at once, ahead of later jobs of its priority."""
        self.held.settle(payload.get("job"), "release",
                         payload.get("job_pri", to_beanstalk_priority(priority)))

    @translated
    def reject(self, queue: str, payload: Payload) -> None:
        """Bury the job (``reject(requeue=False)``): kept aside; ``kick`` brings it back."""
        self.held.settle(payload.get("job"), "bury", payload.get("job_pri", PRIORITY_BASE))

    def close(self) -> None:
        """Send the acks due, then close every connection: beanstalkd releases every
        job still held here (QoS has released the unacked ones already)."""
        if self._closed:
            return
        self._closed = True
        self.waiter.close()
        self.held.close()
        self.pool.close()
