"""SimpleQueue and SimpleBuffer: a ``queue.Queue``-like face on a broker queue.

``conn.SimpleQueue("jobs")`` declares a queue (and a direct exchange of the
same name), ``put()`` publishes to it and ``get()`` returns the next
:class:`~kombu_green.message.Message`. Waiting in ``get()`` goes through
``Connection.drain_events``, so it blocks only the calling greenlet.

Any number of greenlets may call ``get()`` on one SimpleQueue: received
messages land in a local buffer, one greenlet at a time waits on the broker
for more, and each message is handed to exactly one caller. A ``get()``
that times out loses nothing: whatever arrived stays buffered for the next
caller, and ``close()`` gives unacknowledged buffered messages back to the
queue.
"""
from __future__ import annotations

import collections
import queue as _stdlib_queue
import socket
import time
from typing import Any, Deque, Dict, Iterable, Optional, Tuple, Union

from . import green
from .entity import Exchange, Queue
from .exceptions import ConnectionClosed
from .message import Message
from .messaging import Consumer, Producer, is_connection, owner_of

__all__ = ["Empty", "SimpleBuffer", "SimpleQueue"]

#: Longest single wait on the broker inside ``get()``. A greenlet waiting on
#: a connection that others drain too re-checks its buffer this often (their
#: drain may have delivered its message); it costs one idle wait a second.
DRAIN_SLICE = 1.0


class Empty(_stdlib_queue.Empty):
    """No message arrived in time; a subclass of the standard ``queue.Empty``
    (which gevent's queues raise too), so existing ``except`` clauses work."""


class SimpleQueue:
    """A persistent FIFO queue on the broker, used like ``queue.Queue``.

    ``channel`` is a Channel or a Connection; given a Connection, the
    SimpleQueue opens a channel of its own and closes it in :meth:`close`
    (so its prefetch and unacked messages concern it alone). ``name`` is a
    queue name or a :class:`~kombu_green.Queue`. Messages must be acked
    (``message.ack()``) unless ``no_ack`` is true. ``prefetch_count`` bounds
    how many unacked messages the broker hands this queue at once (no limit
    by default, as in kombu).
    """

    Empty = Empty

    #: Defaults a subclass may change (SimpleBuffer does).
    no_ack: bool = False
    queue_opts: Dict[str, Any] = {}
    queue_args: Dict[str, Any] = {}
    exchange_opts: Dict[str, Any] = {"type": "direct"}

    def __init__(self, channel: Any, name: Union[str, Queue], no_ack: Optional[bool] = None,
                 queue_opts: Optional[Dict[str, Any]] = None, queue_args: Optional[Dict[str, Any]] = None,
                 exchange_opts: Optional[Dict[str, Any]] = None, serializer: Optional[str] = None,
                 compression: Optional[str] = None, accept: Optional[Iterable[str]] = None,
                 prefetch_count: Optional[int] = None) -> None:
        self.no_ack = self.no_ack if no_ack is None else bool(no_ack)
        self._owns_channel = is_connection(channel)
        self.connection = channel if self._owns_channel else owner_of(channel)
        self._channel: Any = None
        self._accept = accept
        self._buffer: Deque[Message] = collections.deque()
        self._bell = green.Bell()
        self._draining = False
        self._consuming = False
        self._closed = False
        self._declared_in = -1  # the Connection generation put() last declared the queue in
        queue, exchange, routing_key = self._entities(name, queue_opts, queue_args, exchange_opts)
        self._queue = queue
        # Given a Connection nothing connects here: the producer follows the
        # Connection's default channel (so put(retry=True) rides out an outage)
        # and the consumer's own channel opens on the first get().
        self.consumer = Consumer(None, [queue], no_ack=self.no_ack, accept=accept,
                                 on_message=self._receive, prefetch_count=prefetch_count)
        self.producer = Producer(channel if self._owns_channel else None, exchange, routing_key=routing_key,
                                 serializer=serializer, compression=compression)
        if not self._owns_channel:
            self._use(channel)
            self.producer.revive(channel)

    def _use(self, channel: Any) -> None:
        self._channel = channel
        self.consumer.revive(channel)

    @property
    def channel(self) -> Any:
        """The channel ``get()`` receives on. Made from a Connection, the
        SimpleQueue opens it on first use -- connecting now, and raising at
        once if the broker is down -- and opens a new one after it was lost."""
        channel = self._channel
        if self._owns_channel and not self._closed and (channel is None or not channel.is_open):
            self._buffer.clear()  # unacked deliveries of a lost channel: the broker redelivers them
            self._consuming = False
            self._use(self.connection.channel())
        return self._channel

    @property
    def queue(self) -> Queue:
        """The queue, bound to :attr:`channel` once that is open."""
        return self.consumer.queues[0] if self._channel is not None else self._queue

    def _entities(self, name: Union[str, Queue], queue_opts: Optional[Dict[str, Any]],
                  queue_args: Optional[Dict[str, Any]],
                  exchange_opts: Optional[Dict[str, Any]]) -> Tuple[Queue, Exchange, str]:
        if isinstance(name, Queue):
            # The default exchange routes by queue name, whatever the binding key says.
            routing_key = name.routing_key if name.exchange.name else (name.routing_key or name.name)
            return name, name.exchange, routing_key
        exchange = Exchange(name, **dict(self.exchange_opts, **(exchange_opts or {})))
        queue = Queue(name, exchange, name, queue_arguments=dict(self.queue_args, **(queue_args or {})),
                      **dict(self.queue_opts, **(queue_opts or {})))
        return queue, exchange, name

    # -- getting -----------------------------------------------------------

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Message:
        """The next message; waits up to ``timeout`` seconds (None: for ever).

        Raises :class:`Empty` when nothing arrived in time. Only the calling
        greenlet waits. ``block=False`` is :meth:`get_nowait`.
        """
        if not block:
            return self.get_nowait()
        deadline = None if timeout is None else time.monotonic() + timeout
        tried = False
        while True:
            self._consume()
            if self._buffer:
                return self._buffer.popleft()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0 and (tried or self._draining):
                raise self.Empty()
            if self._draining:  # another greenlet waits on the broker: wait for its news
                self._bell.wait(remaining)
                continue
            tried = True
            self._drain_once(remaining)

    def _drain_once(self, remaining: Optional[float]) -> None:
        self._draining = True
        try:
            wait = DRAIN_SLICE if remaining is None else max(0.0, min(remaining, DRAIN_SLICE))
            self.connection.drain_events(timeout=wait)
        except socket.timeout:
            pass
        finally:
            self._draining = False
            self._bell.ring()  # a waiter takes over the waiting, or takes what arrived

    def get_nowait(self) -> Message:
        """A message already received, or one ready on the broker; never waits."""
        self._check_open()
        if self._buffer:
            return self._buffer.popleft()
        self.channel  # noqa: B018 - opens the channel on first use
        message = self.queue.get(no_ack=self.no_ack, accept=self._accept)
        if message is None:
            raise self.Empty()
        return message

    def _consume(self) -> None:
        self._check_open()
        self.channel  # noqa: B018 - opens (or reopens) the channel
        if not self._consuming:
            self.consumer.consume(no_ack=self.no_ack)
            self._consuming = True

    def _stop_consuming(self) -> None:
        """Cancel, and take in what the transport received for us before that.

        After the cancel the broker sends nothing more; a transport that
        fetched messages ahead gives them back to the queue (Redis), or has
        them queued for the next ``drain_events`` (AMQP), which runs now.
        """
        if not self._consuming:
            return
        self.consumer.cancel()
        self._consuming = False
        if not self._draining:
            try:
                self.connection.drain_events(timeout=0)
            except socket.timeout:
                pass

    def _receive(self, message: Message) -> None:
        if self._closed:  # a delivery that was under way when we closed
            self._give_back(message)
            return
        self._buffer.append(message)
        self._bell.ring()

    def _give_back(self, message: Message) -> None:
        channel = self._channel
        if not self.no_ack and not message.acknowledged and channel is not None and channel.is_open:
            message.requeue()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"SimpleQueue {self.queue.name!r} is closed")
        channel = self._channel
        if not self._owns_channel and not channel.is_open:
            raise ConnectionClosed(f"The channel of SimpleQueue {self.queue.name!r} was closed")

    # -- putting and inspecting --------------------------------------------

    def put(self, message: Any, serializer: Optional[str] = None, headers: Optional[Dict[str, Any]] = None,
            compression: Optional[str] = None, routing_key: Optional[str] = None, **kwargs: Any) -> None:
        """Publish ``message`` to the queue (through its exchange).

        Keywords go to :meth:`Producer.publish`: ``retry=True`` with a
        ``retry_policy`` waits out a broker that is down. The queue is
        declared first, once per connection, so nothing put before the
        first ``get()`` is lost.
        """
        generation = getattr(self.connection, "_generation", 0)
        if self._declared_in != generation:
            kwargs["declare"] = [self._queue, *kwargs.get("declare", ())]
        self.producer.publish(message, serializer=serializer, headers=headers, compression=compression,
                              routing_key=routing_key, **kwargs)
        self._declared_in = generation

    def qsize(self) -> int:
        """Messages ready on the broker plus those received here and not yet
        handed out. Approximate: messages a transport took ahead for this
        consumer and has not delivered yet count as neither (they are the
        broker's unacked messages), nor do other consumers' ones."""
        self.channel  # noqa: B018 - opens the channel on first use
        return int(self.queue.queue_declare(passive=True)[1]) + len(self._buffer)

    def __len__(self) -> int:
        return self.qsize()

    def clear(self) -> int:
        """Remove every ready message and those received here; return how many.

        Consuming stops first (the next ``get()`` resumes it), so messages
        already sent our way are removed too rather than arriving later.
        """
        self._check_open()
        self._stop_consuming()
        self.channel  # noqa: B018 - opens the channel on first use
        removed = self.consumer.purge()
        while self._buffer:
            message = self._buffer.popleft()
            if not self.no_ack:
                message.ack()
            removed += 1
        return removed

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Stop consuming; unacked buffered messages go back to the queue.

        A SimpleQueue made from a Connection also closes its channel, which
        returns every message it handed out and nobody acked. Greenlets
        still waiting in ``get()`` get ``ConnectionClosed``.
        """
        if self._closed:
            return
        self._closed = True
        channel = self._channel
        try:
            if self._consuming and channel is not None and channel.is_open:
                self.consumer.cancel()
                self._consuming = False
            while self._buffer:
                self._give_back(self._buffer.popleft())
        finally:
            if self._owns_channel and channel is not None and channel.is_open:
                channel.close()
            self.producer.close()
            self._bell.ring()

    release = close

    def __enter__(self) -> "SimpleQueue":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.queue.name!r} buffered={len(self._buffer)}>"


class SimpleBuffer(SimpleQueue):
    """A transient SimpleQueue: no acks, non-durable, deleted when unused.

    Messages are gone from the broker once received, so those still
    buffered when it closes are lost: use it for data that may be dropped.
    """

    no_ack = True
    queue_opts = {"durable": False, "auto_delete": True}
    exchange_opts = {"durable": False, "delivery_mode": "transient", "auto_delete": True}
