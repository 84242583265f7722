"""AMQP channel verbs over a :class:`~.storage.Storage`.

Routing, consumer tags, delivery tags, prefetch and acknowledgement are
implemented here once for every virtual store. The channel never waits:
waiting for messages is the transport's job (``drain_events``), which hands
each message to :meth:`Channel.deliver`.
"""
from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Set

from ...exceptions import ChannelError, ConnectionClosed, NotFound, PreconditionFailed
from ...message import Message
from ...resource import Lendable
from .. import base
from . import payload as payloads
from .qos import QoS
from .storage import Empty, Storage

if TYPE_CHECKING:  # pragma: no cover
    from .transport import Transport

__all__ = ["Channel"]

_channel_ids = itertools.count(1)


class _Consumer(NamedTuple):
    queue: str
    callback: Callable[[Message], Any]
    no_ack: bool
    on_cancel: Optional[Callable[[str], Any]]


class Channel(Lendable, base.Channel):
    """A virtual AMQP channel: one per ``Connection.channel()`` call."""

    def __init__(self, transport: "Transport") -> None:
        if transport.store is None:
            raise ConnectionClosed("Connection is closed")
        self.transport = transport
        self.connection = transport.client
        self.store: Storage = transport.store
        self.channel_id = next(_channel_ids)
        self.qos = QoS(self.store)
        self.no_ack_consumers: Set[str] = set()
        self.events: Dict[str, Set[Callable[..., Any]]] = {"basic_return": set()}
        self._consumers: Dict[str, _Consumer] = {}
        self._tags_by_queue: Dict[str, List[str]] = {}
        self._delivery_tags = itertools.count(1)
        self._consumer_tags = itertools.count(1)
        self._flow_active = True
        self.closed = False

    # -- state -------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self.closed

    @property
    def state(self) -> Any:
        return self.store.state

    def _ensure_open(self) -> None:
        if self.closed:
            raise ConnectionClosed(f"Channel {self.channel_id} is closed; open a new one with connection.channel()")

    def _ensure_queue(self, queue: str) -> None:
        if not self.store.has_queue(queue):
            raise NotFound(f"Queue {queue!r} does not exist: declare it first")

    # -- exchanges ---------------------------------------------------------

    def exchange_declare(self, exchange: str = "", type: str = "direct", passive: bool = False,
                         durable: bool = False, auto_delete: bool = True,
                         arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        self._ensure_open()
        if exchange:
            self.state.declare_exchange(exchange, type, durable, auto_delete, arguments, passive)

    def exchange_delete(self, exchange: str = "", if_unused: bool = False, nowait: bool = False) -> None:
        self._ensure_open()
        self.state.delete_exchange(exchange, if_unused)

    def exchange_bind(self, destination: str, source: str = "", routing_key: str = "",
                      nowait: bool = False, arguments: Optional[Dict[str, Any]] = None) -> None:
        self._ensure_open()
        self.state.bind_exchange(destination, source, routing_key, arguments)

    def exchange_unbind(self, destination: str, source: str = "", routing_key: str = "",
                        nowait: bool = False, arguments: Optional[Dict[str, Any]] = None) -> None:
        self._ensure_open()
        self.state.unbind_exchange(destination, source, routing_key)

    # -- queues ------------------------------------------------------------

    def queue_declare(self, queue: str = "", passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = True,
                      arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> base.QueueDeclareOk:
        self._ensure_open()
        if passive:
            self._ensure_queue(queue)
        else:
            queue = queue or f"amq.gen-{uuid.uuid4()}"
            self.store.new_queue(queue, arguments)
            if auto_delete:
                self.transport.auto_delete_queues.add(queue)
        return base.QueueDeclareOk(queue, self.store.size(queue), self.transport.consumer_count(queue))

    def queue_bind(self, queue: str, exchange: str = "", routing_key: str = "",
                   arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        self._ensure_open()
        self._ensure_queue(queue)
        self.state.bind(queue, exchange, routing_key, arguments)

    def queue_unbind(self, queue: str, exchange: str = "", routing_key: str = "",
                     arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        self._ensure_open()
        self.state.unbind(queue, exchange, routing_key, arguments)

    def queue_purge(self, queue: str, nowait: bool = False) -> int:
        self._ensure_open()
        self._ensure_queue(queue)
        return self.store.purge(queue)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False,
                     nowait: bool = False) -> int:
        self._ensure_open()
        if not self.store.has_queue(queue):
            return 0
        size = self.store.size(queue)
        if if_empty and size:
            raise PreconditionFailed(f"Queue {queue!r} is not empty ({size} messages)")
        if if_unused and self.transport.consumer_count(queue):
            raise PreconditionFailed(f"Queue {queue!r} is in use (it has consumers)")
        self.transport.cancel_consumers_of(queue)
        self.state.unbind_queue(queue)
        self.store.delete_queue(queue)
        self.transport.auto_delete_queues.discard(queue)
        return size

    # -- publishing --------------------------------------------------------

    def prepare_message(self, body: bytes, priority: Optional[int] = None,
                        content_type: Optional[str] = None, content_encoding: Optional[str] = None,
                        headers: Optional[Dict[str, Any]] = None,
                        properties: Optional[Dict[str, Any]] = None) -> payloads.Payload:
        properties = dict(properties or {})
        properties.setdefault("delivery_mode", 2)
        properties["priority"] = priority if priority is not None else properties.get("priority", 0)
        return payloads.make(body, content_type, content_encoding, headers, properties)

    def basic_publish(self, message: payloads.Payload, exchange: str = "", routing_key: str = "",
                      mandatory: bool = False, immediate: bool = False, **kwargs: Any) -> None:
        """Route and store the message; returns once every queue has it."""
        self._ensure_open()
        message["properties"]["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
        try:
            payloads.stamp_expiry(message)
        except ValueError:
            raise PreconditionFailed(
                f"Invalid expiration {message['properties'].get('expiration')!r}: "
                "give a whole number of milliseconds, e.g. expiration=30 means 30 seconds "
                "in Producer.publish (it converts seconds to milliseconds)") from None
        if not self.store.publish(exchange, routing_key, message, payloads.priority_of(message)):
            if mandatory:
                self._return_unroutable(message, exchange, routing_key)

    def _return_unroutable(self, message: payloads.Payload, exchange: str, routing_key: str) -> None:
        exc = ChannelError(
            f"Message published with mandatory=True to exchange {exchange!r} with routing key "
            f"{routing_key!r} matched no queue (NO_ROUTE)")
        handlers = self.events["basic_return"]
        if not handlers:
            raise exc
        returned = self._to_message(message, consumer_tag=None)
        for handler in list(handlers):
            handler(exc, exchange, routing_key, returned)

    # -- consuming ---------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool = False,
                      callback: Optional[Callable[[Message], Any]] = None,
                      consumer_tag: Optional[str] = None, nowait: bool = False,
                      arguments: Optional[Dict[str, Any]] = None,
                      on_cancel: Optional[Callable[[str], Any]] = None) -> str:
        self._ensure_open()
        self._ensure_queue(queue)
        tag = consumer_tag or f"amq.ctag-{self.channel_id}.{next(self._consumer_tags)}"
        if tag in self._consumers:
            raise ChannelError(f"Consumer tag {tag!r} is already in use on this channel")
        if not self.transport.consumer_count(queue):
            self.store.watch(queue)
        self._consumers[tag] = _Consumer(queue, callback or (lambda message: None), no_ack, on_cancel)
        self._tags_by_queue.setdefault(queue, []).append(tag)
        if no_ack:
            self.no_ack_consumers.add(tag)
        self.transport.wake()
        return tag

    def basic_cancel(self, consumer_tag: str, nowait: bool = False) -> None:
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is None:
            return
        self.no_ack_consumers.discard(consumer_tag)
        tags = self._tags_by_queue.get(consumer.queue, [])
        if consumer_tag in tags:
            tags.remove(consumer_tag)
        if not tags:
            self._tags_by_queue.pop(consumer.queue, None)
            if not self.transport.consumer_count(consumer.queue):
                self.store.unwatch(consumer.queue)
            self.transport.maybe_auto_delete(consumer.queue)
        self.transport.wake()

    def consumer_count(self, queue: str) -> int:
        return len(self._tags_by_queue.get(queue, ()))

    def cancel_by_queue(self, queue: str) -> None:
        """The queue is gone: cancel its consumers and tell them (on_cancel)."""
        for tag in list(self._tags_by_queue.get(queue, ())):
            consumer = self._consumers[tag]
            self.basic_cancel(tag)
            if consumer.on_cancel is not None:
                consumer.on_cancel(tag)

    def consuming_queues(self) -> List[str]:
        """Queues this channel can take a message from right now."""
        if self.closed or not self._flow_active or not self.qos.can_consume():
            return []
        return list(self._tags_by_queue)

    def deliver(self, queue: str, payload: payloads.Payload) -> bool:
        """Hand one message to a consumer of ``queue`` (round robin).

        Returns False when this channel cannot take it now. The message is
        recorded as unacked *before* the callback runs, so an exception in
        the callback leaves it safe for redelivery.
        """
        tags = self._tags_by_queue.get(queue)
        if not tags or not self.qos.can_consume() or self.closed:
            return False
        tag = tags.pop(0)
        tags.append(tag)
        consumer = self._consumers[tag]
        message = self._to_message(payload, consumer_tag=tag)
        if consumer.no_ack:
            self.store.ack(queue, payload)
        else:
            self.qos.append(message.delivery_tag, queue, payload)
        consumer.callback(message)
        return True

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Optional[Message]:
        """Take one message if one is ready; never waits. Expired ones are dropped."""
        self._ensure_open()
        self._ensure_queue(queue)
        while True:
            try:
                payload = self.store.get(queue)
            except Empty:
                return None
            if payloads.expired(payload):
                self.store.ack(queue, payload)
                continue
            message = self._to_message(payload, consumer_tag=None)
            if no_ack:
                self.store.ack(queue, payload)
            else:
                self.qos.append(message.delivery_tag, queue, payload)
            return message

    def _to_message(self, payload: payloads.Payload, consumer_tag: Optional[str]) -> Message:
        properties = dict(payload["properties"])
        info = dict(properties.pop("delivery_info", None) or {})
        delivery_tag = next(self._delivery_tags)
        info.update(consumer_tag=consumer_tag, delivery_tag=delivery_tag,
                    redelivered=bool(payload.get("redelivered")))
        return Message(
            body=payload["body"], delivery_tag=delivery_tag,
            content_type=payload.get("content-type"), content_encoding=payload.get("content-encoding"),
            delivery_info=info, properties=properties, headers=dict(payload.get("headers") or {}),
            channel=self)

    # -- settling ----------------------------------------------------------

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._ensure_open()
        self.qos.ack(delivery_tag, multiple)
        self.transport.wake()

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self._ensure_open()
        self.qos.reject(delivery_tag, requeue)
        self.transport.wake()

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._ensure_open()
        self.qos.reject(delivery_tag, requeue, multiple)
        self.transport.wake()

    def basic_recover(self, requeue: bool = False) -> None:
        """Redeliver every unacked message (always via the queue)."""
        self._ensure_open()
        self.qos.restore_unacked()
        self.transport.wake()

    def basic_qos(self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False) -> None:
        self.qos.prefetch_count = int(prefetch_count or 0)
        self.transport.wake()

    def flow(self, active: bool) -> None:
        self._flow_active = bool(active)
        self.transport.wake()

    def close(self) -> None:
        """Cancel consumers and return unacked messages to their queues."""
        if self.closed:
            return
        self.closed = True
        try:
            for tag in list(self._consumers):
                self.basic_cancel(tag)
            self.qos.restore_unacked()
        except Exception:
            # The store is unreachable: the transport gives these back on its
            # next connection, so a broker restart loses none of them.
            self.transport.orphans.extend(self.qos.take_all())
            raise
        finally:
            self.transport.channel_closed(self)

    def __enter__(self) -> "Channel":
        return self

    def __repr__(self) -> str:
        return f"<virtual Channel {self.channel_id} of {self.transport.client!r}>"
