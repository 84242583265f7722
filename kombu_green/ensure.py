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
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, TypeVar

from .retry import Errback

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection
    from .transport.base import Channel

__all__ = ["autoretry", "failover_options", "retrying"]

T = TypeVar("T")

#: transport_options keys that set how the default channel connects.
_POLICY_KEYS = {"max_retries": int, "interval_start": float, "interval_step": float,
                "interval_max": float, "connect_retries_timeout": float}


def failover_options(transport_options: Dict[str, Any], urls: int) -> Dict[str, Any]:
    """How ``default_channel`` connects: kombu's transport options
    ``max_retries``, ``interval_*`` and ``connect_retries_timeout``.

    Without them it tries each of the ``urls`` failover URLs once and
    raises, so a wrong URL fails fast instead of retrying for ever.
    """
    policy: Dict[str, Any] = {"max_retries": max(0, urls - 1), "interval_start": 0}
    for key, kind in _POLICY_KEYS.items():
        if transport_options.get(key) is not None:
            policy[key] = kind(transport_options[key])
    if "connect_retries_timeout" in policy:
        policy["timeout"] = policy.pop("connect_retries_timeout")
    return policy


def retrying(conn: "Connection", obj: Any, fun: Callable[..., T], *, errback: Optional[Errback],
             max_retries: Optional[int], interval_start: float, interval_step: float,
             interval_max: float, on_revive: Optional[Callable[[Any], Any]],
             retry_errors: Optional[tuple]) -> Callable[..., T]:
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


def revive(conn: "Connection", generation: int, errback: Optional[Errback], max_retries: Optional[int],
           interval_start: float, interval_step: float, interval_max: float) -> "Channel":
    """Reconnect unless another greenlet already did since ``generation``;
    return the (new) default channel with every attached object moved onto it."""
    with conn._reviving:
        if conn._generation == generation or not conn.connected:
            conn.collect()
            conn.ensure_connection(errback=errback, max_retries=max_retries, interval_start=interval_start,
                                   interval_step=interval_step, interval_max=interval_max)
            conn.revive_attached()
        return conn.default_channel


def autoretry(conn: "Connection", fun: Callable[..., T], channel: Optional["Channel"],
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
    ensured = conn.ensure(holder, holder.call, **ensure_options)

    @functools.wraps(fun)
    def retried(*args: Any, **kwargs: Any) -> Tuple[T, "Channel"]:
        return ensured(*args, **kwargs)

    return retried
