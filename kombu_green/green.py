"""The one place where kombu_green touches gevent.

Everything that waits, spawns or yields goes through this module, so the
cooperative contract is written once:

* Waiting (:func:`wait_any`, :meth:`Bell.wait`) only blocks the *current*
  greenlet; the hub keeps running every other greenlet meanwhile.
* A greenlet that has lots of work ready (a consumer draining a long queue)
  calls :func:`cooperate`, which yields to the hub once its time slice is
  used up, so a busy consumer never starves the others.
* A driver that only speaks blocking sockets (pymongo) runs its calls
  through an :class:`Offload`: in a native thread pool, or inline when the
  application has patched sockets and the driver is cooperative already.
* Network transports call :func:`require_cooperative_sockets` before they
  connect: a driver that would block the whole process gets a clear
  :class:`~kombu_green.exceptions.NotCooperative` error instead of a silent
  hang.

Nothing here monkey-patches anything: that is the application's decision.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar, cast

# gevent ships no type information (no py.typed) and types-gevent is not a
# dependency: mypy reads every gevent name as Any.
import gevent  # type: ignore[import-untyped]  # no stubs: see above
import gevent.event  # type: ignore[import-untyped]  # no stubs: see above
import gevent.lock  # type: ignore[import-untyped]  # no stubs: see above
import gevent.monkey  # type: ignore[import-untyped]  # no stubs: see above
import gevent.queue  # type: ignore[import-untyped]  # no stubs: see above
import gevent.socket  # type: ignore[import-untyped]  # no stubs: see above
import gevent.ssl  # type: ignore[import-untyped]  # no stubs: see above
import gevent.threadpool  # type: ignore[import-untyped]  # no stubs: see above
from gevent import Greenlet, GreenletExit, Timeout, getcurrent

from .exceptions import NotCooperative

__all__ = [
    "AsyncResult",
    "Bell",
    "Event",
    "Greenlet",
    "GreenletExit",
    "Lock",
    "Offload",
    "Pending",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "Semaphore",
    "Timeout",
    "cooperate",
    "cooperative_socket",
    "cooperative_ssl",
    "getcurrent",
    "is_socket_patched",
    "require_cooperative_sockets",
    "shield",
    "sleep",
    "spawn",
    "wait_any",
]

T = TypeVar("T")

#: A one-shot flag greenlets can wait on (gevent's Event).
Event = gevent.event.Event
#: A lock that blocks only the calling greenlet.
Lock = gevent.lock.RLock
#: A counter of free slots (pools): ``acquire`` blocks only the calling greenlet.
Semaphore = gevent.lock.BoundedSemaphore
#: A value (or an error) that one greenlet sets and others wait for.
AsyncResult = gevent.event.AsyncResult
#: A FIFO hand-off between greenlets; ``get``/``put`` block only the caller.
Queue = gevent.queue.Queue
#: Raised by ``Queue.get(block=False)`` / ``get(timeout=...)`` when empty,
#: and by ``put`` on a full bounded queue.
QueueEmpty = gevent.queue.Empty
QueueFull = gevent.queue.Full
#: gevent's socket and ssl modules: transports that build their own sockets
#: use these, so they wait through the hub whether or not anything is patched.
cooperative_socket = gevent.socket
cooperative_ssl = gevent.ssl

#: How long a greenlet may keep the CPU before :func:`cooperate` yields.
#: Well under gevent's default ``max_blocking_time`` (0.1 s).
TIME_SLICE = 0.005

_last_yield = time.monotonic()
#: The shortest timer: waiting on it makes the hub poll I/O and timers once.
_FULL_TURN = 1e-6


def spawn(function: Callable[..., T], *args: Any, **kwargs: Any) -> Greenlet:
    """Run ``function`` in a new greenlet and return it (not yet running)."""
    return gevent.spawn(function, *args, **kwargs)


def shield(function: Callable[..., T], *args: Any, **kwargs: Any) -> "Pending[T]":
    """Run ``function`` in a greenlet of its own and return its :class:`Pending`.

    Interrupting the caller (a ``gevent.Timeout``, a kill) does not
    interrupt the call, so a round trip that took messages off a broker
    always completes and its result can be kept. A failure goes to whoever
    calls ``get()``; it is not printed by the hub as a crashed greenlet.
    """
    return Pending(gevent.spawn(_outcome, function, args, kwargs))


def sleep(seconds: float = 0) -> None:
    """Pause the current greenlet; ``sleep(0)`` just lets others run."""
    global _last_yield
    gevent.sleep(seconds)
    _last_yield = time.monotonic()


def cooperate() -> None:
    """Yield to the hub if this greenlet has run longer than :data:`TIME_SLICE`.

    Called on hot paths that may find work ready every time (so they never
    reach a real wait). Cheap when there is nothing to do: one clock read.
    """
    if time.monotonic() - _last_yield >= TIME_SLICE:
        # Not sleep(0): that only runs greenlets already scheduled, and the
        # hub may go on running callbacks without polling sockets or timers.
        # A timer, however short, makes the hub complete a full loop turn.
        sleep(_FULL_TURN)


class Bell:
    """A broadcast wake-up: :meth:`ring` wakes every greenlet waiting now.

    Unlike an :class:`Event` it needs no reset, so there is no window in
    which a ring can be lost between "clear" and "wait": a waiter registers
    a private event first, re-checks its condition, then waits.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: set[gevent.event.Event] = set()

    def ring(self) -> None:
        """Wake all current waiters (they re-check their own condition)."""
        if self._waiters:
            waiters, self._waiters = self._waiters, set()
            for event in waiters:
                event.set()

    def attach(self, event: gevent.event.Event) -> None:
        self._waiters.add(event)

    def detach(self, event: gevent.event.Event) -> None:
        self._waiters.discard(event)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until the next ring; False on timeout."""
        return wait_any((self,), timeout)


def wait_any(bells: Iterable[Bell], timeout: Optional[float] = None) -> bool:
    """Block the current greenlet until any of ``bells`` rings.

    Returns True when woken, False when ``timeout`` seconds passed first.
    Yields to the hub while waiting; costs no CPU while idle.
    """
    global _last_yield
    event = gevent.event.Event()
    attached = list(bells)
    for bell in attached:
        bell.attach(event)
    try:
        woken = event.wait(timeout)
    finally:
        for bell in attached:
            bell.detach(event)
        _last_yield = time.monotonic()
    return bool(woken)


def is_socket_patched() -> bool:
    """True when ``gevent.monkey.patch_all()`` (or ``patch_socket``) ran."""
    return bool(gevent.monkey.is_module_patched("socket"))


def require_cooperative_sockets(driver: str, uses_gevent_sockets: bool = False) -> None:
    """Refuse to connect with a driver that would block the hub.

    A transport whose driver creates its own sockets through the standard
    library (redis-py, pymongo, greenstalk) is only cooperative when the
    socket module is gevent-patched. Without the patch, one greenlet
    waiting on the broker freezes all the others for good; we raise instead
    and say how to fix it. Transports that build gevent sockets themselves
    pass ``uses_gevent_sockets=True`` and always proceed.
    """
    if uses_gevent_sockets or is_socket_patched():
        return
    raise NotCooperative(
        f"The {driver} driver uses blocking sockets, which would freeze every "
        "greenlet in this process while it waits on the broker. Call "
        "`from gevent import monkey; monkey.patch_all()` as the first lines "
        "of your program (gunicorn's gevent worker does this for you)."
    )


class Offload:
    """Run a blocking driver's calls without blocking the hub.

    Unpatched, each call runs in a native thread of a pool of ``threads``
    (the calling greenlet waits through the hub). Under
    ``monkey.patch_all()`` the driver's sockets are gevent's and its locks
    are greenlet locks, which must not be used from foreign threads, so
    calls run in greenlets instead. Errors are re-raised in the caller, never
    printed by gevent.
    """

    def __init__(self, threads: int = 4) -> None:
        self.inline = is_socket_patched()
        self._pool = None if self.inline else gevent.threadpool.ThreadPool(max(1, threads))

    def spawn(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> "Pending[T]":
        """Start ``function``; the returned :class:`Pending` completes even if
        its waiter is interrupted, so an operation's result is never lost."""
        if self._pool is None:
            return shield(function, *args, **kwargs)
        return Pending(self._pool.spawn(_outcome, function, args, kwargs))

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` and return its result (re-raising its error)."""
        if self._pool is None:
            return function(*args, **kwargs)
        return Pending(self._pool.spawn(_outcome, function, args, kwargs)).get()

    def close(self) -> None:
        """Stop the idle threads (a later call starts them again, never inline)."""
        if self._pool is not None:
            self._pool.kill()


def _outcome(function: Callable[..., T], args: Any, kwargs: Any) -> Any:
    try:
        return True, function(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting greenlet
        return False, exc


class Pending(Generic[T]):
    """A call started by :meth:`Offload.spawn`."""

    __slots__ = ("_waitable",)

    def __init__(self, waitable: Any) -> None:
        self._waitable = waitable

    def get(self) -> T:
        """Wait for the result (only this greenlet waits); re-raise its error."""
        ok, value = self._waitable.get()
        if ok:
            return cast(T, value)
        raise value

    def ready(self) -> bool:
        return bool(self._waitable.ready())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the call has ended (without its result); False on timeout."""
        return bool(gevent.wait([self._waitable], timeout))

    def when_done(self, callback: Callable[[T], Any]) -> None:
        """Call ``callback(result)`` in the hub once the call succeeds."""
        def done(waitable: Any) -> None:
            ok, value = waitable.value
            if ok:
                callback(value)
        self._waitable.rawlink(done)
