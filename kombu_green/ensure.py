"""Connection.ensure and autoretry: survive a lost broker connection.

A wrapped call that fails with a connection error reconnects (with the
Connection's failover and a cooperative back-off), moves the Producers and
Consumers built on that Connection onto the new default channel -- a
Consumer that was consuming consumes again -- and retries the call.

Many greenlets usually share a Connection. When the broker goes away they
all fail at about the same time; a generation counter makes the first one
reconnect and the others simply retry on the link it made.
"""
from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

from .options import check_one, number, whole
from .retry import Errback, retry_over_time

if TYPE_CHECKING:  # pragma: no cover
    from .transport.base import Channel

__all__ = ["Resilient", "failover_options"]

T = TypeVar("T")

#: transport_options keys that set how the default channel connects.
_POLICY_KEYS = {"max_retries": whole(0), "interval_start": number(at_least=0),
                "interval_step": number(at_least=0), "interval_max": number(at_least=0),
                "connect_retries_timeout": number()}


class Resilient:
    """What a :class:`~kombu_green.connection.Connection` does when its broker goes away.

    Kept apart from the Connection's everyday surface; every method here
    only uses the Connection's public state plus ``cycle`` (failover
    order), ``_generation``, ``_released``, ``_reviving`` and ``_attached``.
    """

    if TYPE_CHECKING:  # what it uses of the Connection
        cycle: Any
        alt: List[str]
        transport_class: Any
        hostname: Optional[str]
        current_url: Optional[str]
        @property
        def connection_errors(self) -> Tuple[Type[BaseException], ...]: ...
        @property
        def default_channel(self) -> Any: ...
        @property
        def connected(self) -> bool: ...
        _transport: Any
        _attached: Any
        _pending: List[Any]

        def collect(self) -> None: ...
        def _configure(self, url: Optional[str]) -> None: ...

    def _cycling(self) -> bool:
        return self.cycle is not None and not self.transport_class.handles_alternates

    def _rounds(self) -> int:
        """Attempts that make one round of the failover URLs."""
        return len(self.alt) if self._cycling() else 1

    def switch(self, url: str) -> None:
        """Point this Connection at ``url`` (another broker), dropping the current link."""
        self.collect()
        self._transport = None
        self._configure(url)

    def maybe_switch_next(self) -> None:
        """Move on to the next failover URL, if alternates were given."""
        if not self._cycling():
            return
        for _ in range(len(self.alt)):
            url = next(self.cycle)
            if url != self.current_url:
                self.switch(url)
                return

    def ensure_connection(self, errback: Optional[Errback] = None, max_retries: Optional[int] = None,
                          interval_start: float = 2, interval_step: float = 2, interval_max: float = 30,
                          callback: Optional[Callable[[], Any]] = None, reraise_as_library_errors: bool = True,
                          timeout: Optional[float] = None) -> Any:
        """Connect, retrying for as long as the policy allows; returns self.

        Each failure calls ``errback(exc, interval)``, then waits ``interval``
        seconds (``interval_start``, growing by ``interval_step`` up to
        ``interval_max``) -- cooperatively: other greenlets run meanwhile.
        With failover URLs each failure moves to the next URL, and the pause
        only comes after every URL has failed once. ``max_retries=None``
        retries for ever; ``timeout`` bounds the whole attempt in seconds.
        Raises the last :class:`~kombu_green.exceptions.OperationalError`
        (``reraise_as_library_errors`` is accepted for kombu's sake: errors
        are always kombu_green's).
        """
        if self.connected:
            return self
        rounds = self._rounds()

        def attempt() -> None:
            try:
                self.connection  # type: ignore[attr-defined]  # noqa: B018 - property access connects
            except self.connection_errors:
                self.maybe_switch_next()
                raise

        retry_over_time(attempt, self.connection_errors, errback=errback, max_retries=max_retries,
                        interval_start=interval_start, interval_step=interval_step,
                        interval_max=interval_max, callback=callback, timeout=timeout,
                        pause_after=lambda retries: (retries + 1) % rounds == 0)
        return self

    def ensure(self, obj: Any, fun: Callable[..., T], errback: Optional[Errback] = None,
               max_retries: Optional[int] = None, interval_start: float = 1, interval_step: float = 1,
               interval_max: float = 1, on_revive: Optional[Callable[[Any], Any]] = None,
               retry_errors: Optional[Tuple[Type[BaseException], ...]] = None) -> Callable[..., T]:
        """Wrap ``fun`` so a lost connection is re-established and the call retried.

        After reconnecting, ``obj.revive(channel)`` moves ``obj`` (a Producer
        or Consumer) onto the new default channel -- as are all Producers and
        Consumers built on this Connection -- and ``on_revive(channel)`` is
        called. Greenlets failing together reconnect once. Only connection
        errors (and ``retry_errors``) are retried: a channel error such as
        :class:`~kombu_green.exceptions.NotFound` is the caller's to handle,
        and a timeout of ``drain_events(timeout=...)`` is raised as is.
        ``max_retries`` counts reconnections (None: for ever).
        """
        return retrying(self, obj, fun, errback=errback, max_retries=max_retries,
                        interval_start=interval_start, interval_step=interval_step,
                        interval_max=interval_max, on_revive=on_revive, retry_errors=retry_errors)

    def autoretry(self, fun: Callable[..., T], channel: Optional[Channel] = None,
                  **ensure_options: Any) -> Callable[..., Tuple[T, Channel]]:
        """Wrap ``fun(*args, channel=...)`` to be retried on connection errors.

        Returns ``(result, channel)``: the channel last used, which the caller
        owns (``channel`` if given, else one created and kept across calls).
        """
        return autoretry(self, fun, channel, **ensure_options)

    def revive_attached(self) -> None:
        """Tell every Producer and Consumer built on this Connection that it
        (re)connected: each moves to the current default channel -- a
        Producer when it next publishes, a Consumer now."""
        pending, self._pending = self._pending, []
        for obj in {**dict.fromkeys(pending), **dict.fromkeys(self._attached)}:
            obj.revive(self)



def failover_options(transport_options: Dict[str, Any], urls: int) -> Dict[str, Any]:
    """How ``default_channel`` connects: kombu's transport options
    ``max_retries``, ``interval_*`` and ``connect_retries_timeout``.

    Without them it tries each of the ``urls`` failover URLs once and
    raises, so a wrong URL fails fast instead of retrying for ever.
    """
    policy: Dict[str, Any] = {"max_retries": max(0, urls - 1), "interval_start": 0}
    for key, check in _POLICY_KEYS.items():
        if transport_options.get(key) is not None:
            policy[key] = check_one("Transport option", key, transport_options[key], check)
    if "connect_retries_timeout" in policy:
        policy["timeout"] = policy.pop("connect_retries_timeout")
    return policy


def retrying(conn: Any, obj: Any, fun: Callable[..., T], *, errback: Optional[Errback],
             max_retries: Optional[int], interval_start: float, interval_step: float,
             interval_max: float, on_revive: Optional[Callable[[Any], Any]],
             retry_errors: Optional[Tuple[Type[BaseException], ...]]) -> Callable[..., T]:
    """The body of :meth:`Connection.ensure`."""

    @functools.wraps(fun)
    def ensured(*args: Any, **kwargs: Any) -> T:
        reconnections = 0
        while True:
            generation = conn._generation
            try:
                return fun(*args, **kwargs)
            except socket.timeout:
                raise  # drain_events(timeout=...) found nothing: not a failure
            except conn.connection_errors + tuple(retry_errors or ()) as exc:
                if conn._released or (max_retries is not None and reconnections >= max_retries):
                    raise
                reconnections += 1
                if errback is not None:
                    errback(exc, 0)
                remaining = None if max_retries is None else max_retries - reconnections
                channel = revive(conn, generation, errback, remaining,
                                 interval_start, interval_step, interval_max)
                if obj is not None and hasattr(obj, "revive") and getattr(obj, "channel", None) is not channel:
                    obj.revive(channel)
                if on_revive is not None:
                    on_revive(channel)

    return ensured


def revive(conn: Any, generation: int, errback: Optional[Errback], max_retries: Optional[int],
           interval_start: float, interval_step: float, interval_max: float) -> "Channel":
    """Reconnect unless another greenlet already did since ``generation``;
    return the (new) default channel with every attached object moved onto it."""
    with conn._reviving:
        if conn._generation == generation or not conn.connected:
            conn.collect()
            conn.ensure_connection(errback=errback, max_retries=max_retries, interval_start=interval_start,
                                   interval_step=interval_step, interval_max=interval_max)
            conn.revive_attached()
        channel: Channel = conn.default_channel
        return channel


def autoretry(conn: Any, fun: Callable[..., T], channel: Optional["Channel"],
              **ensure_options: Any) -> Callable[..., Tuple[T, "Channel"]]:
    """The body of :meth:`Connection.autoretry`."""

    class Revivable:
        """Holds the channel ``fun`` is called with, replaced after a reconnection."""

        def __init__(self) -> None:
            self.channel = channel

        def revive(self, new_channel: Any) -> None:
            self.channel = new_channel

        def call(self, *args: Any, **kwargs: Any) -> Tuple[T, "Channel"]:
            if self.channel is None:
                self.channel = conn.default_channel
            kwargs["channel"] = self.channel
            return fun(*args, **kwargs), self.channel

    holder = Revivable()
    ensured: Callable[..., Tuple[T, "Channel"]] = conn.ensure(holder, holder.call, **ensure_options)

    @functools.wraps(fun)
    def retried(*args: Any, **kwargs: Any) -> Tuple[T, "Channel"]:
        return ensured(*args, **kwargs)

    return retried
