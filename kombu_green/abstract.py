"""Declarations that can be bound to a channel.

Exchange and Queue share this: they are plain data until bound, binding
returns a copy (so one declaration serves many channels and greenlets at
once), and pickling drops the channel so declarations travel freely.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Sequence

from .exceptions import NotBoundError

__all__ = ["MaybeChannelBound", "maybe_channel"]


def maybe_channel(channel: Any) -> Any:
    """Accept a Connection where a channel is wanted: use its default channel."""
    default = getattr(channel, "default_channel", None)
    return default if default is not None else channel


class MaybeChannelBound:
    """Keyword attributes, binding to a channel, pickling and copying."""

    #: Attributes a constructor accepts as keywords (subclasses extend).
    attrs: Sequence[str] = ()
    _channel: Any = None
    _is_bound = False

    def _set_attrs(self, kwargs: Dict[str, Any]) -> None:
        unknown = set(kwargs) - set(self.attrs)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword(s): {', '.join(sorted(unknown))}")
        for name, value in kwargs.items():
            if value is not None:
                setattr(self, name, value)

    def __call__(self, channel: Any) -> Any:
        """Return a copy bound to ``channel`` (a Channel or a Connection)."""
        return self.bind(channel)

    def bind(self, channel: Any) -> Any:
        return copy.copy(self).maybe_bind(channel)

    def maybe_bind(self, channel: Any) -> Any:
        """Bind *this* object in place if it is not bound yet."""
        if not self._is_bound and channel is not None:
            self._channel = maybe_channel(channel)
            self._is_bound = True
            self.when_bound()
        return self

    def revive(self, channel: Any) -> None:
        """Move a bound entity to a new channel (after a reconnect)."""
        if self._is_bound:
            self._channel = maybe_channel(channel)
            self.when_bound()

    def when_bound(self) -> None:
        """Hook: called after binding (Queue binds its exchange here)."""

    @property
    def is_bound(self) -> bool:
        return self._is_bound and self._channel is not None

    @property
    def channel(self) -> Any:
        return self._require_channel("method")

    def _require_channel(self, method: str, channel: Any = None) -> Any:
        if channel is not None:
            return maybe_channel(channel)
        if self._channel is None:
            raise NotBoundError(f"Can't call {method} on {type(self).__name__} not bound to a channel")
        return self._channel

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_channel", None)
        state.pop("_is_bound", None)
        return state

    def _bound_repr(self, text: str) -> str:
        if self.is_bound:
            return f"<{text} bound to chan:{getattr(self._channel, 'channel_id', '?')}>"
        return f"<unbound {text}>"
