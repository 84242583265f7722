"""The pure rules of the beanstalk transport: tube names, priorities, options.

Nothing here touches the network, so each rule is unit-tested on its own.

Tube names
    beanstalkd accepts only ``A-Z a-z 0-9 - + / ; . $ _ ( )`` in a tube
    name, at most 200 bytes, not starting with ``-``. A queue name that
    obeys these rules is its tube name (``celery``, ``kgt-1f2e``,
    ``amq.gen-<uuid>``), so other beanstalk clients see the same tube. Any
    other name becomes ``$kg$`` + the name with every other byte (and
    ``$`` itself) written as ``$XX`` (hex of its UTF-8 byte): ``a b`` ->
    ``$kg$a$20b``. Queue names that start with ``$kg`` are escaped too,
    so no two queue names ever share a tube. An escaped name longer than
    200 bytes is cut and ends with a hash (``$kgh`` prefix): still one tube
    per name, but no longer readable back.

Priorities
    AMQP priority 0-9 (9 most urgent) becomes beanstalk priority
    ``2**31 - priority`` (0 most urgent): priority 0 is 2**31, the default
    of most beanstalk clients, and 9 is reserved before 0. beanstalkd
    orders ready jobs by priority, then by job id, so equal priorities keep
    FIFO order. Priority 0 itself is used only for the transport's own
    wake-up jobs, which must overtake every message.
"""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ...options import Option, number, optional, read_options, whole
from ..virtual.payload import MAX_PRIORITY

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_TTR", "OPTION_TABLE", "Options",
           "PRIORITY_BASE", "WAKE_PRIORITY", "from_beanstalk_priority", "is_plain_tube",
           "parse_options", "to_beanstalk_priority", "tube_name", "wake_tube"]

#: Characters beanstalkd allows in a tube name.
TUBE_CHARS = frozenset(string.ascii_letters + string.digits + "-+/;.$_()")
MAX_TUBE_BYTES = 200
#: Every tube name the mapping invents starts with this, and a queue name
#: starting with it is escaped, so invented names never meet real ones.
RESERVED = "$kg"
ESCAPED = RESERVED + "$"
HASHED = RESERVED + "h"
WAKE = RESERVED + "w"
_HASH_CHARS = 40
_KEPT_CHARS = MAX_TUBE_BYTES - len(HASHED) - 1 - _HASH_CHARS

#: beanstalk priority of an AMQP priority 0 message (2**31, the middle of
#: the 32-bit range and the default of most beanstalk clients).
PRIORITY_BASE = 2 ** 31
#: The transport's own wake-up jobs: reserved before any message.
WAKE_PRIORITY = 0

#: Seconds a consumer may hold a job unacked before beanstalkd returns it.
DEFAULT_TTR = 3600
DEFAULT_MAX_CONNECTIONS = 4
DEFAULT_MAX_BATCH = 32
MAX_TTR = 2 ** 32 - 1


def is_plain_tube(name: str) -> bool:
    """True when ``name`` is a valid tube name that the mapping leaves alone."""
    return (0 < len(name) <= MAX_TUBE_BYTES and not name.startswith("-")
            and not name.startswith(RESERVED) and all(char in TUBE_CHARS for char in name))


def _escape(name: str) -> str:
    parts = []
    for byte in name.encode("utf-8"):
        char = chr(byte)
        parts.append(char if char in TUBE_CHARS and char != "$" else f"${byte:02X}")
    return "".join(parts)


def tube_name(queue: str) -> str:
    """The tube that holds ``queue``'s messages (see the module doc)."""
    if is_plain_tube(queue):
        return queue
    escaped = ESCAPED + _escape(queue)
    if len(escaped) <= MAX_TUBE_BYTES:
        return escaped
    digest = hashlib.sha256(queue.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{HASHED}{_escape(queue)[:_KEPT_CHARS]}.{digest}"


def queue_name(tube: str) -> Optional[str]:
    """The queue a tube belongs to, when the tube name says it (None for hashed ones)."""
    if tube.startswith(ESCAPED):
        raw, text = bytearray(), tube[len(ESCAPED):]
        index = 0
        while index < len(text):
            if text[index] == "$":
                raw.append(int(text[index + 1:index + 3], 16))
                index += 3
            else:
                raw.append(ord(text[index]))
                index += 1
        return raw.decode("utf-8")
    if tube.startswith(RESERVED):
        return None
    return tube


def wake_tube(token: str) -> str:
    """A private tube for one connection's wake-up jobs (no queue maps to it)."""
    return f"{WAKE}{token}"[:MAX_TUBE_BYTES]


def to_beanstalk_priority(priority: int) -> int:
    """AMQP 0-9 (9 first) -> beanstalk (lower first); out-of-range values are clamped."""
    return PRIORITY_BASE - max(0, min(MAX_PRIORITY, int(priority)))


def from_beanstalk_priority(priority: int) -> int:
    """beanstalk priority -> AMQP 0-9 (a job put by another client gets the nearest)."""
    return max(0, min(MAX_PRIORITY, PRIORITY_BASE - int(priority)))


# -- transport options ------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The transport options, checked (see the transport module for each)."""

    ttr: int = DEFAULT_TTR
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    socket_connect_timeout: Optional[float] = None
    max_batch: int = DEFAULT_MAX_BATCH


#: The transport options and their checks (see the transport module for each).
OPTION_TABLE = {
    "ttr": Option(whole(1, MAX_TTR, "seconds"), DEFAULT_TTR, "time-to-run of every job"),
    "max_connections": Option(whole(1, 10000, "connections"), DEFAULT_MAX_CONNECTIONS,
                              "command connections per Connection"),
    "max_batch": Option(whole(1, 10000, "messages"), DEFAULT_MAX_BATCH, "most jobs reserved in one round trip"),
    "socket_connect_timeout": Option(optional(number()), None,
                                     "seconds to connect (default: the Connection's connect_timeout)"),
}
LABEL = "beanstalk transport option"


def parse_options(options: Mapping[str, Any], connect_timeout: Optional[float] = None) -> Options:
    """Check the beanstalk options of ``transport_options`` (or the URL query).

    Raises :class:`~kombu_green.exceptions.ConfigurationError` naming the
    option and its value; options of other transports are ignored.
    """
    checked = read_options(LABEL, options, OPTION_TABLE)
    timeout = checked["socket_connect_timeout"]
    return Options(ttr=checked["ttr"], max_connections=checked["max_connections"],
                   socket_connect_timeout=connect_timeout if timeout is None else timeout,
                   max_batch=checked["max_batch"])
