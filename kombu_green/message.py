"""Message: a received message, its lazily decoded payload and its ack state.

A message is acknowledged, rejected or requeued at most once; a second
attempt raises :class:`~kombu_green.exceptions.MessageStateError`. Until one
of those happens the broker (or the virtual transport) keeps the message
and redelivers it if the channel closes, so nothing is lost when a callback
or a decode fails.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple, Type

from . import compression
from .exceptions import MessageStateError, SerializationError, SerializerNotInstalled
from .serialization import loads

__all__ = ["Message"]

ACK_STATES = frozenset({"ACK", "REJECTED", "REQUEUED"})


class Message:
    """A message delivered to a consumer or returned by ``Queue.get``."""

    MessageStateError = MessageStateError

    def __init__(self, body: Optional[bytes] = None, delivery_tag: Any = None,
                 content_type: Optional[str] = None, content_encoding: Optional[str] = None,
                 delivery_info: Optional[Dict[str, Any]] = None,
                 properties: Optional[Dict[str, Any]] = None,
                 headers: Optional[Dict[str, Any]] = None,
                 accept: Optional[Collection[str]] = None, channel: Any = None,
                 **kwargs: Any) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.delivery_info = delivery_info if delivery_info is not None else {}
        self.headers = headers if headers is not None else {}
        self.properties = properties if properties is not None else {}
        self.accept = accept
        #: Errors met while preparing the body (e.g. a corrupt compressed
        #: body); raised when the consumer decodes, never swallowed.
        self.errors: List[BaseException] = []
        self._state = "RECEIVED"
        self._decoded: Any = None
        self._is_decoded = False
        method = self.headers.get("compression")
        if body and method:
            try:
                body = compression.decompress(body, method)
            except Exception as exc:  # noqa: BLE001 - kept and re-raised on decode
                self.errors.append(exc)
        self.body = body

    # -- acknowledgement ---------------------------------------------------

    def _settle(self, verb: str, state: str, call: Callable[[], Any]) -> None:
        if self.channel is None:
            raise MessageStateError(f"Cannot {verb} a message that has no receiving channel")
        if self.delivery_info.get("consumer_tag") in getattr(self.channel, "no_ack_consumers", ()):
            return  # the broker already forgot it: no_ack consumers never settle
        if self.acknowledged:
            raise MessageStateError(f"Message already acknowledged with state: {self._state}")
        call()
        self._state = state

    def ack(self, multiple: bool = False) -> None:
        """Tell the broker the message is done with; it is removed for good."""
        self._settle("ack", "ACK", lambda: self.channel.basic_ack(self.delivery_tag, multiple=multiple))

    def reject(self, requeue: bool = False) -> None:
        """Refuse the message; dropped (or dead-lettered) unless ``requeue``."""
        self._settle("reject", "REQUEUED" if requeue else "REJECTED",
                     lambda: self.channel.basic_reject(self.delivery_tag, requeue=requeue))

    def requeue(self) -> None:
        """Give the message back to its queue for another delivery."""
        self.reject(requeue=True)

    def ack_log_error(self, logger: logging.Logger, errors: Tuple[Type[BaseException], ...],
                      multiple: bool = False) -> None:
        try:
            self.ack(multiple=multiple)
        except errors as exc:
            logger.critical("Couldn't ack %r, reason:%r", self.delivery_tag, exc, exc_info=True)

    def reject_log_error(self, logger: logging.Logger, errors: Tuple[Type[BaseException], ...],
                         requeue: bool = False) -> None:
        try:
            self.reject(requeue=requeue)
        except errors as exc:
            logger.critical("Couldn't reject %r, reason: %r", self.delivery_tag, exc, exc_info=True)

    @property
    def acknowledged(self) -> bool:
        """True once acked, rejected or requeued."""
        return self._state in ACK_STATES

    @property
    def redelivered(self) -> bool:
        """True when the broker delivered this message before (it may be a repeat)."""
        return bool(self.delivery_info.get("redelivered"))

    # -- payload -----------------------------------------------------------

    def decode(self) -> Any:
        """Deserialize the body (once; the result is cached).

        Raises ContentDisallowed for content types the consumer does not
        accept and DecodeError for malformed bodies; the message stays
        unacknowledged either way.
        """
        if not self._is_decoded:
            self._decoded = self._decode()
            self._is_decoded = True
        return self._decoded

    @property
    def payload(self) -> Any:
        return self.decode()

    def _decode(self) -> Any:
        if self.errors:
            raise self._with_context(self.errors[0])
        try:
            return loads(self.body or b"", self.content_type, self.content_encoding, accept=self.accept)
        except (SerializationError, SerializerNotInstalled) as exc:
            raise self._with_context(exc) from exc

    def _with_context(self, exc: BaseException) -> BaseException:
        """The same error type, saying which message failed and what happens next."""
        where = (f"delivery_tag={self.delivery_tag!r}, exchange={self.delivery_info.get('exchange')!r}, "
                 f"routing_key={self.delivery_info.get('routing_key')!r}")
        note = ("it stays unacknowledged: reject() it (or pass on_decode_error= to the Consumer) "
                "or it is redelivered when the channel closes")
        try:
            return type(exc)(f"{exc} [message {where}; {note}]")
        except TypeError:  # an error type with a custom constructor
            return exc

    def _reraise_error(self, callback: Optional[Callable[["Message", BaseException], Any]] = None) -> Any:
        """Hand a stored error to ``callback`` or raise it."""
        exc = self._with_context(self.errors[0])
        if callback is None:
            raise exc
        return callback(self, exc)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} object at {id(self):#x} with details "
                f"{{'state': {self._state!r}, 'content_type': {self.content_type!r}, "
                f"'delivery_tag': {self.delivery_tag!r}, "
                f"'body_length': {len(self.body or b'')}, "
                f"'properties': {self.properties!r}, 'delivery_info': {self.delivery_info!r}}}>")
