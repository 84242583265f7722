"""py-amqp's channel, adapted to the reader greenlet and to kombu_green.

What changes from py-amqp, and why:

* Synchronous verbs (declare, bind, get, ...) register for their reply
  *before* sending, then wait on the channel's bell while the reader
  greenlet reads; one call at a time per channel (``rpc_lock``), so
  greenlets sharing a channel never steal each other's replies.
* Deliveries are not run by the reader: they are queued for whichever
  greenlet is in ``drain_events``, as kombu_green messages.
* A channel the broker closes (e.g. ``NOT_FOUND``) is reopened at once, as
  py-amqp does, and its error goes to the call waiting for it, or else to
  the next operation on the channel or the next ``drain_events``.
* Publisher confirms are tracked per message, so many greenlets can
  publish with confirms on one channel at once.
* Acking a message from before a reopen raises instead of sending an
  unknown delivery tag (which would close the channel again).
"""
from __future__ import annotations

import itertools
import struct
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set

import amqp
from amqp import spec
from amqp.exceptions import ChannelError as AMQPChannelError
from amqp.exceptions import error_for_code
from vine import promise

from ... import green
from ...exceptions import ChannelError, ConnectionClosed, MessageNacked, PublishTimeout
from ...message import Message
from ...resource import Lendable
from .. import base
from .confirms import Confirms
from .errors import translate, translated

if TYPE_CHECKING:  # pragma: no cover
    from .connection import GreenConnection

__all__ = ["Channel"]

_tags = itertools.count(1)
#: Basic.Ack / Basic.Reject method frames: (type 1, channel, size 13, class 60, method, tag, bit).
_SETTLE_FRAME = struct.Struct(">BHIHHQBB")
_ACK, _REJECT = 80, 90


def _settle_frame(channel_id: int, method: int, delivery_tag: int, flag: bool) -> bytes:
    return _SETTLE_FRAME.pack(1, channel_id, 13, 60, method, delivery_tag, 1 if flag else 0, 0xCE)

_TAG_PREFIX = f"kombu_green.{uuid.uuid4().hex[:8]}."


class Channel(Lendable, amqp.Channel, base.Channel):  # type: ignore[misc]  # py-amqp is untyped: Any
    """An AMQP channel of a :class:`~.connection.GreenConnection`."""

    #: A plain attribute (py-amqp assigns it), shadowing the interface's property.
    is_open: bool = False

    def __init__(self, connection: "GreenConnection", channel_id: Optional[int] = None,
                 auto_decode: bool = False, on_open: Any = None) -> None:
        self.green_connection = connection  # kept after py-amqp's collect()
        self.client = connection.client
        self.where = connection.where
        self.replied = green.Bell()
        self.rpc_lock = green.Lock()
        #: Incremented when the broker closes the channel: older deliveries are void.
        self.generation = 0
        self.pending_error: Optional[BaseException] = None
        self._rpc_error: Optional[BaseException] = None
        self._rpc_waiting = False
        self._unacked: Set[int] = set()
        self.confirms = Confirms()
        super().__init__(connection, channel_id, auto_decode=False, on_open=on_open)
        connection.green_channels.add(self)

    def __repr__(self) -> str:
        return f"<AMQP Channel {self.channel_id} to {self.where}>"

    # -- the request/reply core ----------------------------------------------

    def send_method(self, sig: Any, format: Optional[str] = None, args: Any = None,
                    content: Any = None, wait: Any = None, callback: Any = None,
                    returns_tuple: bool = False) -> Any:
        if not wait:
            return super().send_method(sig, format, args, content, None, callback, returns_tuple)
        methods = wait if isinstance(wait, list) else [wait]
        reply = promise()
        with self.rpc_lock:
            if sig not in (spec.Channel.Close, spec.Channel.Open):
                self.raise_pending()
            for method in methods:
                self._pending[method] = reply
            self._rpc_error, self._rpc_waiting = None, True
            try:
                super().send_method(sig, format, args, content, None, callback)
                while not reply.ready:
                    if self._rpc_error is not None:
                        raise self._rpc_error
                    self.green_connection.wait_for(self.replied)
            finally:
                self._rpc_waiting = False
                for method in methods:
                    self._pending.pop(method, None)
        values = reply.value[0][1:]
        return values if returns_tuple else (values and values[0])

    def wait(self, method: Any, callback: Any = None, timeout: Optional[float] = None,
             returns_tuple: bool = False) -> Any:
        raise NotImplementedError("kombu_green channels wait through send_method only")

    def fail(self, exc: BaseException) -> None:
        """An error for this channel: to the call waiting, else kept for the next one.

        Publishers waiting for confirms get it too; if they were the only
        ones to care (no call waiting, no consumers), it is not kept again.
        """
        told_publishers = self._fail_confirms(exc)
        if self._rpc_waiting:
            self._rpc_error = exc
        elif self.callbacks or not told_publishers:
            self.pending_error = exc
            self.green_connection.errored_channels.append(self)
            self.green_connection.delivered.ring()
        self.replied.ring()

    def connection_failed(self, exc: BaseException) -> None:
        self._fail_confirms(exc)
        self.replied.ring()

    def raise_pending(self) -> None:
        """Raise (once) an error the broker sent while nobody was waiting."""
        self.green_connection.raise_failure()
        error, self.pending_error = self.pending_error, None
        if error is not None:
            raise translate(error, self.where) from error

    def _on_close(self, reply_code: int, reply_text: str, class_id: int, method_id: int) -> None:
        """The broker closed the channel: confirm, reopen at once, report the error."""
        exc = error_for_code(reply_code, reply_text, (class_id, method_id), AMQPChannelError)
        reopen = not self.is_closing and not self.green_connection.is_closing
        with self.green_connection.write_lock:  # nothing may slip in between on the wire
            super(amqp.Channel, self).send_method(spec.Channel.CloseOk)
            if reopen:
                super(amqp.Channel, self).send_method(spec.Channel.Open, "s", ("",))
        self._unacked.clear()
        self._confirm_selected = False
        self.confirms.restart()
        self.generation += 1  # void the deliveries that arrived before
        if not reopen:
            self.is_open = False
        self.fail(exc)

    # -- deliveries -----------------------------------------------------------

    def _on_basic_deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool,
                          exchange: str, routing_key: str, msg: Any) -> None:
        msg.channel = self
        msg.delivery_info = {"consumer_tag": consumer_tag, "delivery_tag": delivery_tag,
                             "redelivered": redelivered, "exchange": exchange,
                             "routing_key": routing_key}
        callback = self.callbacks.get(consumer_tag)
        if callback is None:  # cancelled meanwhile: give it back to the queue
            super(amqp.Channel, self).send_method(spec.Basic.Reject, "Lb", (delivery_tag, True))
            return
        if consumer_tag not in self.no_ack_consumers:
            self._unacked.add(delivery_tag)
        self.green_connection.queue_delivery((self, self.generation, callback, msg))

    def _on_basic_cancel(self, consumer_tag: str) -> None:
        on_cancel = self._remove_tag(consumer_tag)
        if on_cancel is None:
            self.fail(amqp.exceptions.ConsumerCancelled(consumer_tag, spec.Basic.Cancel))
        else:
            self.green_connection.queue_delivery((self, self.generation, on_cancel, consumer_tag))

    def _on_basic_return(self, reply_code: int, reply_text: str, exchange: str,
                         routing_key: str, message: Any) -> None:
        """An unroutable mandatory message: to the ``on_return`` handlers, else an error."""
        exc = translate(error_for_code(reply_code, reply_text, spec.Basic.Return, AMQPChannelError),
                        self.where)
        handlers = list(self.events.get("basic_return") or ())
        if not handlers:
            self.fail(ChannelError(
                f"Message published with mandatory=True to exchange {exchange!r} with routing key "
                f"{routing_key!r} was returned: {reply_code} {reply_text}"))
            return
        message.delivery_info = {"exchange": exchange, "routing_key": routing_key}
        returned = self.message_to_python(message)
        for handler in handlers:  # user code: never in the reader greenlet
            green.spawn(handler, exc, exchange, routing_key, returned)

    def message_to_python(self, raw: Any) -> Message:
        properties = dict(raw.properties)
        headers = properties.pop("application_headers", None) or {}
        info = raw.delivery_info
        return Message(body=raw.body, delivery_tag=info.get("delivery_tag"),
                       content_type=properties.get("content_type"),
                       content_encoding=properties.get("content_encoding"),
                       delivery_info=info, properties=properties, headers=headers, channel=self)

    # -- verbs with kombu_green semantics ----------------------------------------

    def prepare_message(self, body: bytes, priority: Optional[int] = None,
                        content_type: Optional[str] = None, content_encoding: Optional[str] = None,
                        headers: Optional[Dict[str, Any]] = None,
                        properties: Optional[Dict[str, Any]] = None) -> amqp.Message:
        properties = dict(properties or {})
        if priority is not None:
            properties["priority"] = priority
        return amqp.Message(body, content_type=content_type, content_encoding=content_encoding,
                            application_headers=headers, **properties)

    def basic_publish(self, message: Any, exchange: str = "", routing_key: str = "",
                      mandatory: bool = False, immediate: bool = False, **kwargs: Any) -> None:
        """Publish; with confirms on, return once the broker has taken the message.

        ``timeout`` or ``confirm_timeout`` (seconds) bound the wait for the confirm.
        """
        self.raise_pending()
        args = (0, exchange, routing_key, mandatory, immediate)
        conn = self.green_connection
        if not conn.publisher_confirms:
            super(amqp.Channel, self).send_method(spec.Basic.Publish, "Bssbb", args, message)
            return
        if not self._confirm_selected:
            with self.rpc_lock:
                if not self._confirm_selected:
                    self.confirm_select()
                    self._confirm_selected = True
        with conn.write_lock:  # sequence numbers follow the order on the wire
            seq, confirmed = self.confirms.track()
            super(amqp.Channel, self).send_method(spec.Basic.Publish, "Bssbb", args, message)
        limit = kwargs.get("confirm_timeout") or kwargs.get("timeout") or conn.confirm_timeout
        try:
            confirmed.get(timeout=limit)
        except green.Timeout:
            self.confirms.forget(seq)
            raise PublishTimeout(
                f"No publisher confirm from {self.where} within {limit:g} s for a message to "
                f"exchange {exchange!r} with routing key {routing_key!r}; it may or may not "
                "be stored") from None

    def _on_basic_ack(self, delivery_tag: int, multiple: bool) -> None:
        self.confirms.settle(delivery_tag, multiple)

    def _on_basic_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.confirms.settle(delivery_tag, multiple, MessageNacked(
            f"The broker at {self.where} refused a published message (nack); it was not stored"))

    def _fail_confirms(self, exc: BaseException) -> int:
        return self.confirms.fail_all(translate(exc, self.where))

    def basic_consume(self, queue: str, no_ack: bool = False,
                      callback: Optional[Callable[[Message], Any]] = None,
                      consumer_tag: Optional[str] = None, nowait: bool = False,
                      arguments: Optional[Dict[str, Any]] = None,
                      on_cancel: Optional[Callable[[str], Any]] = None, **kwargs: Any) -> str:
        """Start a consumer; the callback is registered before the broker can deliver.

        ``no_local`` and ``exclusive`` may be given as keywords.
        """
        no_local, exclusive = bool(kwargs.get("no_local")), bool(kwargs.get("exclusive"))
        tag = consumer_tag or f"{_TAG_PREFIX}{next(_tags)}"
        user_callback = callback

        def on_message(raw: Any) -> None:
            if user_callback is not None:
                user_callback(self.message_to_python(raw))

        self.callbacks[tag] = on_message
        if on_cancel is not None:
            self.cancel_callbacks[tag] = on_cancel
        if no_ack:
            self.no_ack_consumers.add(tag)
        try:
            self.send_method(spec.Basic.Consume, "BssbbbbF",
                             (0, queue, tag, no_local, no_ack, exclusive, nowait, arguments),
                             wait=None if nowait else spec.Basic.ConsumeOk, returns_tuple=True)
        except BaseException:
            self._remove_tag(tag)
            raise
        return tag

    def basic_get(self, queue: str = "", no_ack: bool = False, **kwargs: Any) -> Optional[Message]:
        raw = super().basic_get(queue, no_ack)
        if raw is None:
            return None
        if not no_ack:
            self._unacked.add(raw.delivery_info["delivery_tag"])
        return self.message_to_python(raw)

    def _settle(self, delivery_tag: int, multiple: bool) -> None:
        """Forget settled tags; refuse tags from before a reopen (see module doc)."""
        if multiple:
            self._unacked = {tag for tag in self._unacked if tag > delivery_tag}
        elif delivery_tag in self._unacked:
            self._unacked.discard(delivery_tag)
        else:
            raise ChannelError(
                f"Delivery tag {delivery_tag} is unknown on channel {self.channel_id} of "
                f"{self.where}: the channel was closed or reopened since the message arrived, "
                "so the broker will deliver it again. Do not settle it twice.")

    def basic_ack(self, delivery_tag: int, multiple: bool = False, argsig: str = "Lb") -> None:
        """Settle; the frame is written with the others of this batch (see send_soon)."""
        self.raise_pending()
        self._settle(delivery_tag, multiple)
        self.green_connection.send_soon(_settle_frame(self.channel_id, _ACK, delivery_tag, multiple))

    def basic_reject(self, delivery_tag: int, requeue: bool = True, argsig: str = "Lb") -> None:
        self.raise_pending()
        self._settle(delivery_tag, False)
        self.green_connection.send_soon(_settle_frame(self.channel_id, _REJECT, delivery_tag, requeue))

    def basic_recover(self, requeue: bool = False) -> None:
        self.raise_pending()
        self._unacked.clear()
        super().basic_recover(requeue)

    def basic_qos(self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False,
                  argsig: str = "lBb") -> None:
        super().basic_qos(prefetch_size, prefetch_count, a_global)

    def exchange_declare(self, exchange: str = "", type: str = "direct", passive: bool = False,
                         durable: bool = False, auto_delete: bool = True,
                         arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        if not exchange:
            return  # the default exchange always exists and cannot be declared
        amqp.Channel.exchange_declare(self, exchange, type, passive=passive, durable=durable,
                                      auto_delete=auto_delete, nowait=nowait, arguments=arguments)

    def queue_declare(self, queue: str = "", passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = True,
                      arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> Any:
        """py-amqp sends, then waits in a second step; here it is one locked call."""
        reply = self.send_method(
            spec.Queue.Declare, "BsbbbbbF",
            (0, queue, passive, durable, exclusive, auto_delete, nowait, arguments),
            wait=None if nowait else spec.Queue.DeclareOk, returns_tuple=True)
        return None if nowait else base.QueueDeclareOk(*reply)

    def queue_delete(self, queue: str = "", if_unused: bool = False, if_empty: bool = False,
                     nowait: bool = False, argsig: str = "Bsbbb") -> int:
        return super().queue_delete(queue, if_unused, if_empty, nowait) or 0

    def queue_purge(self, queue: str = "", nowait: bool = False, argsig: str = "Bsb") -> int:
        return super().queue_purge(queue, nowait) or 0

    def flow(self, active: bool) -> None:
        """Pause or resume deliveries (not on RabbitMQ: see below)."""
        product = (self.green_connection.server_properties or {}).get("product", "")
        if not active and "rabbitmq" in str(product).lower():
            raise ChannelError(
                "RabbitMQ does not implement channel.flow(active=False) and would close the "
                "whole connection; stop deliveries with consumer.cancel() or bound them with "
                "consumer.qos(prefetch_count=...)")
        amqp.Channel.flow(self, active)

    def close(self, reply_code: int = 0, reply_text: str = "", method_sig: Any = (0, 0),
              argsig: str = "BsBB") -> None:
        """Close; the broker requeues every unacked message of this channel."""
        conn = self.green_connection
        if conn.failure is not None:
            self.is_open = False
            self.collect()
            return
        self._unacked.clear()
        amqp.Channel.close(self, reply_code, reply_text, method_sig, argsig)

    def collect(self) -> None:
        self._fail_confirms(ConnectionClosed(f"Channel to {self.where} was closed"))
        super().collect()


#: Public verbs: only kombu_green errors may escape them.
_VERBS: List[str] = [
    "exchange_declare", "exchange_delete", "exchange_bind", "exchange_unbind",
    "queue_declare", "queue_bind", "queue_unbind", "queue_purge", "queue_delete",
    "basic_publish", "basic_consume", "basic_cancel", "basic_get", "basic_ack",
    "basic_reject", "basic_recover", "basic_qos", "flow", "close", "confirm_select",
]
_originals: Dict[str, Any] = {name: getattr(Channel, name) for name in _VERBS}
for _name, _method in _originals.items():
    setattr(Channel, _name, translated(_method))
