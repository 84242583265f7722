"""Every Redis key and PUB/SUB channel the transport uses, in one place.

A queue ``q`` lives in lists: ``q`` itself for the lowest priority step and
``q\\x06\\x16<step>`` for the others (kombu's separator, so ``LLEN q`` in
redis-cli shows the usual backlog). Its declaration (arguments, expiry)
is the ``_kombu_green.queue.q`` key: a queue exists while that key does.
``global_keyprefix`` goes in front of every key and channel.
"""
from __future__ import annotations

import bisect
from typing import List, Sequence

__all__ = ["Keys", "DEFAULT_PRIORITY_STEPS"]

#: kombu's default: four sub-queues per queue.
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
SEPARATOR = "\x06\x16"


class Keys:
    """Key names for one Redis database and key prefix."""

    def __init__(self, prefix: str = "", db: int = 0,
                 priority_steps: Sequence[int] = DEFAULT_PRIORITY_STEPS) -> None:
        steps = sorted({int(step) for step in priority_steps} | {0})
        self.prefix = prefix
        self.db = db
        self.steps = steps
        #: Highest step first: AMQP's order (9 is delivered before 0).
        self.steps_high_first = steps[::-1]
        internal = f"{prefix}_kombu_green."
        self.version = internal + "version"
        self.exchanges = internal + "exchanges"
        self.bindings = internal + "bindings"
        self.unacked = internal + "unacked"
        self.unacked_index = internal + "unacked_index"
        self.unacked_mutex = internal + "unacked_mutex"
        self._meta = internal + "queue."
        self._fanout = f"{internal}fanout.{db}."

    def step_of(self, priority: int) -> int:
        """The sub-queue a message of ``priority`` goes to (the highest step <= it)."""
        return self.steps[max(0, bisect.bisect_right(self.steps, priority) - 1)]

    def list(self, queue: str, step: int = 0) -> str:
        return f"{self.prefix}{queue}" if step == 0 else f"{self.prefix}{queue}{SEPARATOR}{step}"

    def lists(self, queue: str) -> List[str]:
        """The queue's list keys, in delivery order (highest priority first)."""
        return [self.list(queue, step) for step in self.steps_high_first]

    def meta(self, queue: str) -> str:
        return self._meta + queue

    def fanout_channel(self, exchange: str) -> str:
        return self._fanout + exchange

    def exchange_of_channel(self, channel: str) -> str:
        return channel[len(self._fanout):]
