"""AMQP 0-9-1 exchange routing as pure functions.

Transports without a broker-side router (memory, Redis, MongoDB,
beanstalk) call :func:`route` to decide which queues receive a published
message. The rules mirror RabbitMQ's, so an application moved from RabbitMQ
to another transport (or the other way) sees the same deliveries.

Nothing here does I/O or holds state apart from bounded memo caches, which
keeps the functions safe to call from any greenlet.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Mapping, NamedTuple

__all__ = [
    "Binding",
    "EXCHANGE_TYPES",
    "direct_match",
    "topic_match",
    "headers_match",
    "route",
]

EXCHANGE_TYPES: frozenset[str] = frozenset({"direct", "topic", "fanout", "headers"})

#: Sizes of the memo caches: large enough for a busy app's working set of
#: patterns and keys, small enough that hostile keys cannot grow memory.
_PATTERN_CACHE_SIZE = 1024
_RESULT_CACHE_SIZE = 8192


class Binding(NamedTuple):
    """One queue bound to an exchange.

    ``queue`` is the destination name; ``arguments`` only matter for
    headers exchanges, where they hold the match table and ``x-match``.
    """

    queue: str
    routing_key: str = ""
    arguments: Mapping[str, Any] | None = None


def direct_match(binding: Binding, routing_key: str, headers: Mapping[str, Any] | None) -> bool:
    """Direct exchanges compare keys byte for byte; headers play no part."""
    return binding.routing_key == routing_key


def _words(key: str) -> tuple[str, ...]:
    # RabbitMQ treats the empty key as zero words (not one empty word), so
    # "#" matches it while "*" does not. Otherwise empty words are real:
    # "a..b" is three words, the middle one empty.
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=_PATTERN_CACHE_SIZE)
def _compile_topic(pattern: str) -> tuple[str, ...]:
    """Split a pattern into words, folding runs of "#" into one.

    "#.#" means the same as "#"; folding keeps the state set small.
    """
    out: list[str] = []
    for word in _words(pattern):
        if word == "#" and out and out[-1] == "#":
            continue
        out.append(word)
    return tuple(out)


def _closure(pattern: tuple[str, ...], states: set[int]) -> set[int]:
    # A "#" may match zero words, so a state parked on one can also skip it.
    # Runs of "#" are folded, so one step per state is enough.
    extra = {i + 1 for i in states if i < len(pattern) and pattern[i] == "#"}
    return states | extra


@lru_cache(maxsize=_RESULT_CACHE_SIZE)
def topic_match(pattern: str, routing_key: str) -> bool:
    """Match a topic binding pattern against a routing key.

    Runs a small NFA over pattern positions, one routing-key word at a time,
    so cost is O(words x pattern words) with no backtracking blow-up and no
    regex built from user text (so "a+b" or "a(b" are plain literals).
    """
    compiled = _compile_topic(pattern)
    end = len(compiled)
    states = _closure(compiled, {0})
    for word in _words(routing_key):
        step: set[int] = set()
        for i in states:
            if i == end:
                continue
            token = compiled[i]
            if token == "#":
                step.add(i)  # "#" swallows this word and may swallow more
            elif token == "*" or token == word:
                step.add(i + 1)
        if not step:
            return False
        states = _closure(compiled, step)
    return end in states


_MATCH_MODES = {
    # x-match value -> (need every comparable key?, compare "x-" keys?)
    "all": (True, False),
    "any": (False, False),
    "all-with-x": (True, True),
    "any-with-x": (False, True),
}


def headers_match(arguments: Mapping[str, Any] | None, headers: Mapping[str, Any] | None) -> bool:
    """Match a headers-exchange binding's arguments against message headers.

    ``x-match`` selects the mode; an absent or unrecognised value means
    "all", as RabbitMQ does for legacy bindings. ``x-match`` itself is never
    compared, and other "x-" keys only in the "-with-x" modes. A binding
    value of ``None`` only asks that the header be present.
    """
    arguments = arguments or {}
    headers = headers or {}
    mode = arguments.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    if not isinstance(mode, str):
        mode = "all"  # e.g. a stray list; don't let it crash the publisher
    need_all, with_x = _MATCH_MODES.get(mode, _MATCH_MODES["all"])

    for key, expected in arguments.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        hit = key in headers and (expected is None or headers[key] == expected)
        if hit and not need_all:
            return True
        if not hit and need_all:
            return False
    # Every compared key agreed ("all"), or none did ("any"). With nothing
    # to compare, "all" is vacuously true and "any" false, as on RabbitMQ.
    return need_all


def _binding_matches(
    exchange_type: str, binding: Binding, routing_key: str, headers: Mapping[str, Any] | None
) -> bool:
    if exchange_type == "direct":
        return direct_match(binding, routing_key, headers)
    if exchange_type == "topic":
        return topic_match(binding.routing_key, routing_key)
    if exchange_type == "headers":
        return headers_match(binding.arguments, headers)
    return True  # fanout ignores keys and headers


def route(
    exchange_type: str,
    bindings: Iterable[Binding],
    routing_key: str,
    headers: Mapping[str, Any] | None = None,
) -> list[str]:
    """Return the queues a message should be delivered to.

    Order follows ``bindings`` and each queue appears once: a queue bound
    by two matching bindings still gets one copy, as on RabbitMQ.

    Raises :class:`ValueError` for an unknown ``exchange_type``; callers
    turn that into the channel error their protocol uses.
    """
    if exchange_type not in EXCHANGE_TYPES:
        raise ValueError(
            f"unknown exchange type {exchange_type!r}; "
            f"supported types: {', '.join(sorted(EXCHANGE_TYPES))}"
        )
    seen: set[str] = set()
    queues: list[str] = []
    for binding in bindings:
        if binding.queue in seen:
            continue
        if _binding_matches(exchange_type, binding, routing_key, headers):
            seen.add(binding.queue)
            queues.append(binding.queue)
    return queues
