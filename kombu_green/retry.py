"""Retrying over time, and the order in which failover URLs are tried.

Everything here waits with :func:`kombu_green.green.sleep`, so a greenlet
retrying a broker that is down never blocks the others: a WSGI worker keeps
answering requests while one of its greenlets waits for RabbitMQ to return.
"""
from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import green
from .exceptions import ConfigurationError

__all__ = ["FAILOVER_STRATEGIES", "failover_cycle", "intervals", "retry_over_time"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``errback(exc, interval)``: told about each failure before the pause.
Errback = Callable[[BaseException, float], Any]


def intervals(start: float = 2, step: float = 2, maximum: float = 30) -> Iterator[float]:
    """Pauses between attempts: ``start``, ``start + step``, ... capped at ``maximum``."""
    current = max(0.0, float(start))
    while True:
        yield min(current, float(maximum))
        current += float(step)


def retry_over_time(fun: Callable[..., T], catch: Union[Type[BaseException], Tuple[Type[BaseException], ...]],
                    args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None,
                    errback: Optional[Errback] = None, max_retries: Optional[int] = None,
                    interval_start: float = 2, interval_step: float = 2, interval_max: float = 30,
                    callback: Optional[Callable[[], Any]] = None, timeout: Optional[float] = None,
                    pause_after: Optional[Callable[[int], bool]] = None) -> T:
    """Call ``fun`` until it stops raising ``catch``; return its result.

    ``max_retries=None`` retries for ever, ``0`` tries once. ``timeout``
    bounds the whole operation in seconds: no retry starts after it (the
    last error is raised). ``callback()`` is called about once a second while
    pausing, so a caller can abort by raising from it. ``pause_after(retries)``
    says whether to pause before the next attempt (failover tries every
    alternate URL at once before pausing).
    """
    kwargs = kwargs or {}
    pauses = intervals(interval_start, interval_step, interval_max)
    deadline = None if timeout is None else time.monotonic() + timeout
    for retries in itertools.count():
        try:
            return fun(*args, **kwargs)
        except catch as exc:
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if (max_retries is not None and retries >= max_retries) or out_of_time:
                raise
            interval = next(pauses) if pause_after is None or pause_after(retries) else 0.0
            if deadline is not None:
                interval = min(interval, max(0.0, deadline - time.monotonic()))
            if errback is not None:
                errback(exc, interval)
            else:
                logger.warning("%s; retrying in %.1f s", exc, interval)
            _pause(interval, callback)
    raise AssertionError("unreachable")  # pragma: no cover


def _pause(seconds: float, callback: Optional[Callable[[], Any]]) -> None:
    """Sleep ``seconds`` cooperatively, calling ``callback`` every second."""
    if callback is None:
        green.sleep(seconds)
        return
    end = time.monotonic() + seconds
    while True:
        callback()
        left = end - time.monotonic()
        if left <= 0:
            return
        green.sleep(min(1.0, left))


def _round_robin(urls: Sequence[str]) -> Iterator[str]:
    return itertools.cycle(urls)


def _shuffle(urls: Sequence[str]) -> Iterator[str]:
    """Every URL once per round, in a new random order each round, never
    the same URL twice in a row (so a retry always moves on)."""
    last = None
    while True:
        order = list(urls)
        random.shuffle(order)
        if len(order) > 1 and order[0] == last:
            order[0], order[-1] = order[-1], order[0]
        yield from order
        last = order[-1]


#: Names accepted by ``Connection(failover_strategy=...)``; a callable taking
#: the URL list and returning an iterator of URLs may be given instead.
FAILOVER_STRATEGIES: Dict[str, Callable[[Sequence[str]], Iterator[str]]] = {
    "round-robin": _round_robin,
    "round_robin": _round_robin,
    "shuffle": _shuffle,
}


def failover_cycle(strategy: Union[str, Callable[[Sequence[str]], Iterator[str]]],
                   urls: Sequence[str]) -> Iterator[str]:
    """An endless iterator over ``urls`` in the order ``strategy`` picks."""
    if callable(strategy):
        return strategy(urls)
    try:
        return FAILOVER_STRATEGIES[strategy](urls)
    except KeyError:
        raise ConfigurationError(
            f"Unknown failover_strategy {strategy!r}; use one of "
            f"{', '.join(sorted(FAILOVER_STRATEGIES))} or a callable") from None
