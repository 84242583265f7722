"""The one blocking reserve of a Connection, pending while its queues are empty.

It runs in a greenlet of its own (the *waiter*), on a reserving connection
that holds nothing, and watches every consumed tube at once plus a private
wake-up tube. A drain that stops waiting -- its timeout, an interrupt, a
``gevent.Timeout`` -- leaves the reserve pending: the next drain on the same
queues waits on it again, and a job it reserves meanwhile is recorded at
once and kept for delivery, never lost. To end it (the queues changed, a
consumer went away), :meth:`Waiter.end` puts a job into the wake-up tube at
priority 0: the reserve returns that job, or a real one that arrived at the
same moment (kept as well).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, FrozenSet, Optional, Set

from ... import green
from .config import WAKE_PRIORITY
from .pool import CommandPool, Reserver
from .protocol import stats_request, stats_results
from .reserving import Reservations, counted, log

__all__ = ["Waiter"]

WAKE_BODY = b"kombu_green: wake up"
#: Time-to-run of a wake-up job (it is deleted at once by whoever reserves it).
WAKE_TTR = 60
#: Seconds to wait for a pending reserve to end after its wake-up job.
END_TIMEOUT = 10.0


@dataclass(eq=False)
class Wait:
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


class Waiter:
    """Starts, waits on and ends the pending reserve (see the module doc)."""

    def __init__(self, reservations: Reservations, pool: CommandPool) -> None:
        self.reservations = reservations
        self.pool = pool
        self.current: Optional[Wait] = None
        #: Rings when a reserve returns (with jobs, or with an error).
        self.arrived = green.Bell()
        self.failure: Optional[BaseException] = None
        #: How many messages the consumers could take (the drain's batch).
        self.batch = 1
        self._callers = 0
        self.closed = False

    def raise_failure(self) -> None:
        """Raise what ended the last reserve badly (once)."""
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def start(self, tubes: FrozenSet[str]) -> Wait:
        reserver = self.reservations.idle_reserver()
        reserver.waiting = True
        wait = self.current = Wait(reserver, tubes)
        wait.greenlet = green.spawn(self._reserve, wait)
        return wait

    def wait(self, wait: Wait, wanted: Set[str], interrupt: Optional[green.Bell],
             timeout: Optional[float]) -> None:
        """Until the reserve returns, ``interrupt`` rings or ``timeout`` passes."""
        event = green.Event()
        bells = [self.arrived] + ([interrupt] if interrupt is not None else [])
        for bell in bells:
            bell.attach(event)
        self._callers += 1
        try:
            if not wait.done and not self.reservations.has_ahead(wanted):
                event.wait(timeout)
        finally:
            self._callers -= 1
            for bell in bells:
                bell.detach(event)

    def _reserve(self, wait: Wait) -> None:
        """The waiter: one blocking reserve, then the rest of a batch without waiting."""
        reserver = wait.reserver
        client = reserver.client
        held = self.reservations
        try:
            job = client.reserve_blocking(wait.tubes | {held.wake_tube})
            if job is None:
                # DEADLINE_SOON: beanstalkd thinks this connection holds a job we do not
                # know of. Closing it releases that job; the next wait takes a fresh one.
                wait.cut = True
                client.close()
                return
            # The rest of a batch, if the queues were busy lately and somebody waits now.
            more = min(self.batch, held.take_size) - 1 if self._callers else 0
            tubes = counted(wait.tubes)
            request, replies = stats_request([job.id], tubes)
            head, jobs = client.reserve_now(None, more, request, replies)
            stats, ready = stats_results(head, 1)
            if jobs:
                extra, ready = client.stats_jobs([extra.id for extra in jobs], tubes)
                stats += extra
            held.learn(more, len(jobs), ready)
            if held.record(reserver, [job, *jobs], stats):
                wait.woken = True
        except Exception as exc:  # noqa: BLE001 - reported to the next drain
            if not (wait.cut or self.closed):
                self.failure = exc
        finally:
            reserver.waiting = False
            if client.closed:
                held.forget(reserver, failed=not (wait.cut or self.closed))
            self.arrived.ring()

    def end(self) -> None:
        """End the pending reserve (a job it got is kept for delivery).

        It stays :attr:`current` until it has ended: if the caller is
        interrupted meanwhile, the next plan ends it again.
        """
        wait = self.current
        if wait is None or wait.done:
            self.current = None
            return
        wake_id = None
        try:
            with self.pool.client() as client:
                wake_id = client.put_job(self.reservations.wake_tube, WAKE_BODY, WAKE_PRIORITY, WAKE_TTR)
        except Exception as exc:  # noqa: BLE001 - cut it the hard way below
            log.info("could not wake the pending reserve at %s (%s); closing its connection",
                     self.reservations.where, exc)
        if wake_id is not None:
            wait.greenlet.join(timeout=END_TIMEOUT)
        if not wait.done:
            wait.cut = True
            wait.reserver.close()  # beanstalkd releases whatever it reserved
            wait.greenlet.join()
        if self.current is wait:
            self.current = None
        if wake_id is not None and not wait.woken:
            try:
                with self.pool.client() as client:
                    client.delete_ids([wake_id])
            except Exception as exc:  # noqa: BLE001 - a stray wake-up only costs one empty wait
                log.info("could not delete wake-up job %d at %s: %s", wake_id, self.reservations.where, exc)

    def close(self) -> None:
        """Cut the pending reserve by closing its connection (beanstalkd releases its job)."""
        self.closed = True
        wait, self.current = self.current, None
        if wait is not None and not wait.done:
            wait.cut = True
            wait.reserver.close()
            wait.greenlet.join(timeout=END_TIMEOUT)
