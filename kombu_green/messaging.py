"""Producer and Consumer: kombu's publishing and consuming front ends.

Both accept a Channel or a Connection (whose default channel is then
used), and both can be subclassed with class attributes as defaults::

    class FeedProducer(Producer):
        exchange = feed_exchange
        routing_key = "importer"

A Consumer only registers callbacks; messages arrive when some greenlet
runs ``connection.drain_events()``, which invokes the callbacks in that
greenlet.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Set, Tuple, Union

from . import compression as compressors
from . import green
from .abstract import maybe_channel
from .entity import Exchange, Queue, maybe_delivery_mode, maybe_list
from .exceptions import ContentDisallowed
from .message import Message
from .resource import Lendable
from .serialization import dumps, prepare_accept_content

__all__ = ["Consumer", "Producer", "is_connection", "maybe_declare", "owner_of"]

Callback = Callable[[Any, Message], Any]

_consumer_tags = itertools.count(1)


def maybe_declare(entity: Union[Exchange, Queue], channel: Any = None, retry: bool = False,
                  **retry_policy: Any) -> bool:
    """Declare ``entity`` unless this connection already did (cached).

    Only durable, non-auto-delete entities are cached: the others may have
    vanished since. Returns True if a declaration was sent. ``channel`` may
    be a Connection (its default channel is used). With ``retry``, the
    declaration goes through :meth:`Connection.ensure` with ``retry_policy``
    -- connecting inside it, so a broker that is down is waited for.
    """
    if retry:
        owner = channel if is_connection(channel) else owner_of(channel if channel is not None else entity.channel)
        attempt = functools.partial(_declare_once, entity, lambda: owner.default_channel)
        return bool(owner.ensure(None, attempt, **retry_policy)())
    return _declare_once(entity, lambda: maybe_channel(channel) if channel is not None else entity.channel)


def _declare_once(entity: Union[Exchange, Queue], get_channel: Callable[[], Any]) -> bool:
    channel = get_channel()
    if not (entity.is_bound and entity.channel is channel):
        entity = entity.bind(channel)
    declared = getattr(owner_of(channel), "declared_entities", None)
    if declared is not None and entity.can_cache_declaration and entity in declared:
        return False
    entity.declare(channel=channel)
    if declared is not None and entity.can_cache_declaration:
        declared.add(entity)
    return True


def is_connection(obj: Any) -> bool:
    """True for a Connection (as opposed to a channel)."""
    # Looked up on the type: hasattr() on the instance would evaluate the
    # property, connecting and opening a channel as a side effect.
    return hasattr(type(obj), "default_channel") and hasattr(obj, "drain_events")


def owner_of(channel: Any) -> Any:
    """The Connection a channel belongs to (AMQP channels call it ``client``)."""
    for name in ("client", "connection"):
        candidate = getattr(channel, name, None)
        if is_connection(candidate):
            return candidate
    return None


class Producer(Lendable):
    """Publishes messages to an exchange (the default exchange if none).

    ``release()`` and leaving a ``with`` block give a pooled producer back to
    its pool; one not lent is closed (see :meth:`close`).
    """

    #: Class-level defaults a subclass may set (kombu's subclassing style).
    exchange: Any = None
    routing_key: str = ""
    serializer: Optional[str] = None
    compression: Optional[str] = None
    auto_declare: bool = True
    on_return: Optional[Callable[..., Any]] = None

    def __init__(self, channel: Any, exchange: Optional[Exchange] = None,
                 routing_key: Optional[str] = None, serializer: Optional[str] = None,
                 auto_declare: Optional[bool] = None, compression: Optional[str] = None,
                 on_return: Optional[Callable[..., Any]] = None) -> None:
        self._connection: Any = None
        self._channel: Any = None
        self._listening = True  # on_return registered on each channel (until close())
        self.exchange = exchange if exchange is not None else self.exchange
        if self.exchange is None:
            self.exchange = Exchange("")
        self.routing_key = self.routing_key if routing_key is None else routing_key
        self.serializer = serializer or self.serializer
        self.compression = compression or self.compression
        self.auto_declare = self.auto_declare if auto_declare is None else auto_declare
        self.on_return = on_return or self.on_return
        if channel is not None:
            self.revive(channel)

    def revive(self, channel: Any) -> None:
        """Attach to ``channel``, or follow a Connection.

        Given a Connection nothing is connected here: its default channel
        is taken when first needed -- by :meth:`publish`, :meth:`declare` or
        :attr:`channel` -- so a ``publish(retry=True)`` rides out a broker
        that is down when the producer is made, and the producer moves by
        itself onto each new default channel after a reconnection. Given a
        channel, the producer binds to it now (and declares its exchange if
        ``auto_declare``).
        """
        self._listening = True
        if is_connection(channel):
            self._connection = channel
            channel._attached.add(self)
            self._detach()
            return
        self._attach(channel)
        if self.auto_declare:
            self.declare()

    def _attach(self, channel: Any) -> None:
        self._detach()
        self._channel = channel
        self.exchange = self.exchange.bind(channel)
        if self.on_return is not None and self._listening:
            channel.events["basic_return"].add(self.on_return)

    def _detach(self) -> None:
        if self._channel is not None and self.on_return is not None:
            self._channel.events["basic_return"].discard(self.on_return)
        self._channel = None

    def declare(self) -> None:
        """Declare the producer's exchange now (the default exchange needs none)."""
        if self.exchange is not None and self.exchange.name:
            maybe_declare(self.exchange, self.channel)

    def maybe_declare(self, entity: Union[Exchange, Queue], retry: bool = False, **retry_policy: Any) -> bool:
        """Declare ``entity`` unless this connection did already (cached); with
        ``retry``, through :meth:`Connection.ensure` with ``retry_policy``."""
        if retry:
            return maybe_declare(entity, self.connection, retry=True, **retry_policy)
        return maybe_declare(entity, self.channel)

    @property
    def channel(self) -> Any:
        """The channel publishes go to: given a Connection, its current default
        channel (connecting now if it has none, failing fast when the broker is
        down unless a retry policy wraps the call)."""
        connection = self._connection
        if connection is not None:
            current = connection.default_channel
            if current is not self._channel:
                self._attach(current)
        return self._channel

    @property
    def connection(self) -> Any:
        return self._connection or owner_of(self._channel)

    def _prepare(self, body: Any, serializer: Optional[str], content_type: Optional[str],
                 content_encoding: Optional[str], compression: Optional[str],
                 headers: Dict[str, Any]) -> Tuple[Any, Optional[str], Optional[str]]:
        if content_type:
            # Raw body with an explicit content type: sent as is.
            if isinstance(body, str):
                content_encoding = content_encoding or "utf-8"
                body = body.encode(content_encoding)
            elif not content_encoding:
                content_encoding = "binary"
        else:
            content_type, content_encoding, body = dumps(body, serializer=serializer)
        if compression:
            body, headers["compression"] = compressors.compress(body, compression)
        return body, content_type, content_encoding

    def publish(self, body: Any, routing_key: Optional[str] = None,
                delivery_mode: Union[int, str, None] = None, mandatory: bool = False,
                immediate: bool = False, priority: int = 0, content_type: Optional[str] = None,
                content_encoding: Optional[str] = None, serializer: Optional[str] = None,
                headers: Optional[Dict[str, Any]] = None, compression: Optional[str] = None,
                exchange: Union[Exchange, str, None] = None, retry: bool = False,
                retry_policy: Optional[Dict[str, Any]] = None,
                declare: Optional[Sequence[Union[Exchange, Queue]]] = None,
                expiration: Optional[float] = None, timeout: Optional[float] = None,
                **properties: Any) -> None:
        """Serialize, compress and publish one message.

        ``body`` is serialized with ``serializer`` (default json) unless it
        is ``bytes``/``str`` with no serializer, or ``content_type`` is
        given, in which case it is sent raw. ``expiration`` is in seconds.
        ``declare`` lists entities to declare first (cached per connection).
        On virtual transports this returns once every target queue holds
        the message; it never waits for a consumer. Only the calling
        greenlet waits, and a long publishing loop yields to the hub every
        few milliseconds.
        """
        publish = self._publish
        if retry:
            publish = self.connection.ensure(self, self._publish, **(retry_policy or {}))
        publish(body, routing_key, delivery_mode, mandatory, immediate, priority, content_type,
                content_encoding, serializer, headers, compression, exchange, declare, expiration,
                timeout, properties)
        green.cooperate()  # a tight publish loop must still let other greenlets run

    def _publish(self, body: Any, routing_key: Optional[str], delivery_mode: Union[int, str, None],
                 mandatory: bool, immediate: bool, priority: int, content_type: Optional[str],
                 content_encoding: Optional[str], serializer: Optional[str],
                 headers: Optional[Dict[str, Any]], compression: Optional[str],
                 exchange: Union[Exchange, str, None],
                 declare: Optional[Sequence[Union[Exchange, Queue]]], expiration: Optional[float],
                 timeout: Optional[float], properties: Dict[str, Any]) -> None:
        """One attempt, on the channel the producer has now (retries revive it)."""
        properties = dict(properties)
        headers = {} if headers is None else dict(headers)
        routing_key = self.routing_key if routing_key is None else routing_key
        compression = self.compression if compression is None else compression
        target = exchange if isinstance(exchange, Exchange) else self.exchange
        if isinstance(exchange, Exchange):
            declare = list(declare or []) + [exchange]
            exchange_name = exchange.name
        else:
            exchange_name = self.exchange.name if exchange is None else exchange
        channel = self.channel
        if self.auto_declare and self.exchange.name:  # cached: one round trip per connection
            maybe_declare(self.exchange, channel)
        for entity in declare or ():
            maybe_declare(entity, channel)
        body, content_type, content_encoding = self._prepare(
            body, serializer or self.serializer, content_type, content_encoding, compression, headers)
        properties["delivery_mode"] = maybe_delivery_mode(delivery_mode or target.delivery_mode)
        if expiration is not None:
            properties["expiration"] = str(int(expiration * 1000))
        message = channel.prepare_message(
            body, priority, content_type, content_encoding, headers, properties)
        channel.basic_publish(message, exchange=exchange_name, routing_key=routing_key,
                                    mandatory=mandatory, immediate=immediate, timeout=timeout)

    #: kombu's first releases (and carrot) called it ``send``.
    send = publish

    def close(self) -> None:
        """Stop listening for returned messages, and leave the Connection's
        list of what it revives (a pool may lend this producer again: its
        next :meth:`revive` listens again)."""
        if self._channel is not None and self.on_return is not None:
            self._channel.events["basic_return"].discard(self.on_return)
        self._listening = False
        if self._connection is not None:
            self._connection._attached.discard(self)

    def __enter__(self) -> "Producer":
        return self

    def __repr__(self) -> str:
        return f"<Producer: {self._channel!r}>"


class Consumer:
    """Consumes from one or more queues by registering callbacks.

    Each callback is called as ``callback(body, message)`` with the
    decoded body; ``on_message=fn`` instead receives only the undecoded
    message. Subclasses may override :meth:`receive`. Messages must be
    acknowledged (``message.ack()``) unless ``no_ack=True``.
    """

    ContentDisallowed = ContentDisallowed

    #: Class-level defaults a subclass may set (kombu's subclassing style).
    queues: Any = None
    no_ack: Optional[bool] = None
    auto_declare: bool = True
    callbacks: Any = None
    on_message: Optional[Callable[[Message], Any]] = None
    on_decode_error: Optional[Callable[[Message, BaseException], Any]] = None
    accept: Optional[Set[str]] = None
    prefetch_count: Optional[int] = None
    tag_prefix: Optional[str] = None
    #: When set, each delivery is handed to ``dispatcher(message)`` instead of
    #: being handled at once in the greenlet draining the connection; the
    #: dispatcher calls :meth:`handle` later -- in a greenlet of its own, say,
    #: as :class:`~kombu_green.mixins.ConsumerMixin` does. It must not block.
    dispatcher: Optional[Callable[[Message], Any]] = None

    def __init__(self, channel: Any, queues: Union[Queue, Sequence[Queue], None] = None,
                 no_ack: Optional[bool] = None, auto_declare: Optional[bool] = None,
                 callbacks: Optional[Iterable[Callback]] = None,
                 on_decode_error: Optional[Callable[[Message, BaseException], Any]] = None,
                 on_message: Optional[Callable[[Message], Any]] = None,
                 accept: Optional[Iterable[str]] = None, prefetch_count: Optional[int] = None,
                 tag_prefix: Optional[str] = None) -> None:
        self._connection: Any = None
        self._channel: Any = None
        self.queues = maybe_list(queues if queues is not None else self.queues)
        self.no_ack = self.no_ack if no_ack is None else no_ack
        self.auto_declare = self.auto_declare if auto_declare is None else auto_declare
        self.callbacks = list(callbacks if callbacks is not None else self.callbacks or [])
        self.on_message = on_message or self.on_message
        self.on_decode_error = on_decode_error or self.on_decode_error
        accept = accept if accept is not None else self.accept
        self.accept = prepare_accept_content(accept) if accept is not None else None
        self.prefetch_count = prefetch_count if prefetch_count is not None else self.prefetch_count
        self.tag_prefix = tag_prefix if tag_prefix is not None else (self.tag_prefix or "")
        self._active_tags: Dict[str, str] = {}
        if channel is not None:
            self.revive(channel)

    def revive(self, channel: Any) -> None:
        """Attach to ``channel``: bind the queues, declare them, set prefetch.

        A consumer that was consuming consumes again on the new channel, so
        after a reconnection (see :meth:`Connection.ensure`) messages flow
        again without the caller doing anything. Given a Connection, it
        follows that Connection onto each new default channel. It never
        connects by itself: on a Connection not connected yet it attaches
        (declaring its queues) as soon as that Connection connects for any
        reason -- a publish, a declare, :meth:`consume` -- so a message
        published before ``consume()`` still finds its queue, as in kombu.
        """
        if is_connection(channel):
            self._connection = channel
            channel._attached.add(self)
            if not channel.connected:  # attached when the Connection connects, for any reason
                self._channel = None
                channel._pending.append(self)  # held until then, even if the caller drops it
                return
            channel = channel.default_channel
        if channel is not self._channel:
            self._attach(channel)

    def _attach(self, channel: Any) -> None:
        was_consuming = bool(self._active_tags)
        self._active_tags.clear()
        self._channel = channel
        self.queues = [queue.bind(channel) for queue in self.queues]
        if self.auto_declare:
            self.declare()
        if self.prefetch_count is not None:
            self.qos(prefetch_count=self.prefetch_count)
        if was_consuming:
            self.consume(no_ack=getattr(self, "_consuming_no_ack", None))

    @property
    def channel(self) -> Any:
        """The consumer's channel; given a Connection, its default channel,
        taken (connecting now) on first use."""
        if self._channel is None and self._connection is not None:
            self._attach(self._connection.default_channel)
        return self._channel

    @channel.setter
    def channel(self, channel: Any) -> None:
        self._channel = channel

    @property
    def connection(self) -> Any:
        return self._connection or owner_of(self._channel)

    def declare(self) -> None:
        """Declare every queue (with its exchange and binding) now."""
        channel = self.channel
        for queue in self.queues:
            if queue.channel is not channel:
                queue = queue.bind(channel)
            queue.declare()

    def register_callback(self, callback: Callback) -> None:
        """Add ``callback(body, message)``; called in the order added."""
        self.callbacks.append(callback)

    def add_queue(self, queue: Queue) -> Queue:
        """Add a queue (declared if auto_declare); call consume() to start on it."""
        queue = queue.bind(self.channel)
        if self.auto_declare:
            queue.declare()
        self.queues.append(queue)
        return queue

    def consume(self, no_ack: Optional[bool] = None) -> None:
        """Start consuming from every queue not consumed yet."""
        self.channel  # noqa: B018 - a consumer made on a Connection attaches now
        no_ack = self.no_ack if no_ack is None else no_ack
        self._consuming_no_ack = no_ack  # a revived consumer consumes the same way
        for queue in self.queues:
            if queue.name not in self._active_tags:
                tag = f"{self.tag_prefix}{next(_consumer_tags)}"
                self._active_tags[queue.name] = queue.consume(
                    tag, self._receive_callback, no_ack=bool(no_ack))

    def cancel(self) -> None:
        """Stop consuming from all queues (messages already received stay unacked)."""
        for tag in self._active_tags.values():
            self.channel.basic_cancel(tag)
        self._active_tags.clear()

    close = cancel

    def cancel_by_queue(self, queue: Union[Queue, str]) -> None:
        """Stop consuming from one queue and drop it from this consumer."""
        name = queue.name if isinstance(queue, Queue) else queue
        tag = self._active_tags.pop(name, None)
        if tag is not None:
            self.channel.basic_cancel(tag)
        self.queues = [q for q in self.queues if q.name != name]

    def consuming_from(self, queue: Union[Queue, str]) -> bool:
        name = queue.name if isinstance(queue, Queue) else queue
        return name in self._active_tags

    def purge(self) -> int:
        """Purge every queue; return the number of messages removed."""
        self.channel  # noqa: B018 - attach (bind and declare) first
        return sum(int(queue.purge()) for queue in self.queues)

    def flow(self, active: bool) -> None:
        self.channel.flow(active)

    def qos(self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False) -> None:
        """Limit unacked messages in flight on this consumer's channel."""
        self.channel.basic_qos(prefetch_size, prefetch_count, apply_global)

    def recover(self, requeue: bool = False) -> None:
        self.channel.basic_recover(requeue=requeue)

    def receive(self, body: Any, message: Message) -> None:
        """Called with each decoded message; calls every registered callback."""
        if not self.callbacks:
            raise NotImplementedError("Consumer does not have any callbacks")
        for callback in self.callbacks:
            callback(body, message)

    def handle(self, message: Message) -> Any:
        """Decode ``message`` and run the callbacks (or ``on_message``) on it.

        What a delivery gets, in the greenlet that drains the connection --
        unless a :attr:`dispatcher` is set, which calls this later itself.
        A body that cannot be decoded goes to ``on_decode_error`` if given.
        """
        if self.accept is not None:
            message.accept = self.accept
        try:
            if message.errors:
                return message._reraise_error(self.on_decode_error)
            decoded = None if self.on_message else message.decode()
        except Exception as exc:
            if not self.on_decode_error:
                raise
            return self.on_decode_error(message, exc)
        if self.on_message:
            return self.on_message(message)
        return self.receive(decoded, message)

    def _receive_callback(self, message: Message) -> Any:
        """What the channel calls for each delivery (kombu's name)."""
        if self.dispatcher is not None:
            return self.dispatcher(message)
        return self.handle(message)

    def __enter__(self) -> "Consumer":
        self.consume()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._channel is not None and self._channel.is_open:
            self.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.queues}>"
