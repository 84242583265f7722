"""Every error kombu_green raises, under one root.

Catch :class:`KombuError` to handle "anything that went wrong in
kombu_green". The names follow kombu 5.x where kombu has one; none of them
shadows a Python built-in (there is no ``ConnectionError`` or ``TimeoutError``
here). Timeouts from :meth:`Connection.drain_events` are the standard
:class:`socket.timeout` (an alias of :class:`TimeoutError`), as in kombu.
"""
from __future__ import annotations

__all__ = [
    "KombuError",
    "OperationalError",
    "ConnectionClosed",
    "ChannelError",
    "NotFound",
    "PreconditionFailed",
    "AccessRefused",
    "ResourceLocked",
    "ConsumerCancelled",
    "MessageNacked",
    "PublishTimeout",
    "NotBoundError",
    "MessageStateError",
    "LimitExceeded",
    "ConnectionLimitExceeded",
    "ChannelLimitExceeded",
    "SerializationError",
    "EncodeError",
    "DecodeError",
    "SerializerNotInstalled",
    "ContentDisallowed",
    "InconsistencyError",
    "ConfigurationError",
    "InvalidURL",
    "UnknownTransport",
    "NotCooperative",
]


class KombuError(Exception):
    """Root of every kombu_green error."""


class OperationalError(KombuError):
    """A recoverable transport failure: retrying after reconnecting may work.

    ``Connection.ensure`` and friends retry on these.
    """


class ConnectionClosed(OperationalError):
    """The connection (or its channel) was closed while an operation used it."""


class ChannelError(KombuError):
    """The broker refused a channel-level operation (the connection is fine)."""


class NotFound(ChannelError):
    """An exchange or queue named by the operation does not exist."""


class PreconditionFailed(ChannelError):
    """An entity was re-declared with different, incompatible settings."""


class AccessRefused(ChannelError):
    """The broker refused the credentials or the permission for an operation.

    Not an :class:`OperationalError`: retrying with the same credentials
    cannot succeed, so ``ensure`` does not retry it.
    """


class ResourceLocked(ChannelError):
    """An exclusive queue (or consumer) belongs to another connection."""


class ConsumerCancelled(ChannelError):
    """The broker cancelled a consumer (usually: its queue was deleted)."""


class MessageNacked(ChannelError):
    """With publisher confirms, the broker refused to take the message."""


class PublishTimeout(OperationalError):
    """No publisher confirm arrived in time: the message may or may not be stored.

    Retrying (as ``ensure`` does) can store it twice, never zero times.
    """


class NotBoundError(KombuError):
    """An entity method that needs a channel was called on an unbound entity."""


class MessageStateError(KombuError):
    """The message was already acknowledged, rejected or requeued."""


class LimitExceeded(KombuError):
    """A pool or resource limit was reached."""


class ConnectionLimitExceeded(LimitExceeded):
    """No connection is free in the pool within the allowed time."""


class ChannelLimitExceeded(LimitExceeded):
    """No channel is free in the pool within the allowed time."""


class SerializationError(KombuError):
    """A message body could not be (de)serialized."""


class EncodeError(SerializationError):
    """Serializing a message body failed."""


class DecodeError(SerializationError):
    """Deserializing a message body failed (malformed or corrupt body)."""


class SerializerNotInstalled(KombuError):
    """No codec is registered (or its library installed) for this format."""


class ContentDisallowed(SerializerNotInstalled):
    """The message's content type is not in the consumer's accept list."""


class InconsistencyError(KombuError):
    """The broker's data is not what the transport expects."""


class ConfigurationError(KombuError, ValueError):
    """An option or argument has a value kombu_green cannot use."""


class InvalidURL(ConfigurationError):
    """A broker URL cannot be parsed (the message never shows the password)."""


class UnknownTransport(ConfigurationError):
    """No transport is registered for the URL scheme or name given."""


class NotCooperative(ConfigurationError):
    """A network driver would block the gevent hub in this process.

    Raised instead of hanging: the message says how to make the driver
    cooperative (usually ``gevent.monkey.patch_all()`` first thing).
    """
