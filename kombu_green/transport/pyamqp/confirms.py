"""Publisher confirms in flight on one channel.

The broker numbers the messages of a confirming channel 1, 2, 3, ... in
the order they reach it, and acks (or nacks) them one by one or "up to
N". Each publish here gets the next number and a result to wait on, so
any number of greenlets can publish with confirms on one channel and each
waits for its own message only.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Optional, Tuple

from ... import green

__all__ = ["Confirms"]


class Confirms:
    """Sequence number -> the result its publisher waits on."""

    def __init__(self) -> None:
        self._last = 0
        self._waiting: "OrderedDict[int, Any]" = OrderedDict()

    def track(self) -> Tuple[int, Any]:
        """Number the next message; call while holding the write lock (wire order)."""
        self._last += 1
        result = green.AsyncResult()
        self._waiting[self._last] = result
        return self._last, result

    def forget(self, seq: int) -> None:
        self._waiting.pop(seq, None)

    def restart(self) -> None:
        """The channel was reopened: numbering starts again from 1."""
        self._last = 0

    def settle(self, tag: int, multiple: bool, error: Optional[BaseException] = None) -> None:
        """The broker acked (``error`` None) or nacked message ``tag`` (and before, if multiple)."""
        waiting = self._waiting
        settled: List[Any] = []
        if multiple:
            while waiting and next(iter(waiting)) <= tag:
                settled.append(waiting.popitem(last=False)[1])
        elif tag in waiting:
            settled.append(waiting.pop(tag))
        for result in settled:
            if error is None:
                result.set(True)
            else:
                result.set_exception(error)

    def fail_all(self, error: BaseException) -> int:
        """Every waiting publisher gets ``error``; returns how many there were."""
        waiting, self._waiting = self._waiting, OrderedDict()
        for result in waiting.values():
            result.set_exception(error)
        return len(waiting)
