"""Helpers shaped like ``kombu.common``: declaring once, event loops,
draining a consumer, broadcast queues and request/reply.

Everything that waits goes through ``Connection.drain_events``, so it
blocks only the calling greenlet.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import socket
import time
import uuid as _uuid
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, Optional, Tuple, Union

from .abstract import maybe_channel
from .entity import Exchange, Queue
from .message import Message
from .messaging import Consumer, Producer, maybe_declare
from .serialization import registry

__all__ = [
    "Broadcast",
    "collect_replies",
    "declaration_cached",
    "drain_consumer",
    "eventloop",
    "ignore_errors",
    "itermessages",
    "maybe_declare",
    "send_reply",
    "uuid",
]

Callback = Callable[[Any, Message], Any]


def uuid() -> str:
    """A new random unique id as text (for correlation ids and queue names)."""
    return str(_uuid.uuid4())


def declaration_cached(entity: Union[Exchange, Queue], channel: Any) -> bool:
    """True if ``maybe_declare`` already declared ``entity`` on this connection."""
    connection = getattr(maybe_channel(channel), "connection", None)
    return entity in getattr(connection, "declared_entities", ())


@contextlib.contextmanager
def _ignoring(conn: Any) -> Iterator[None]:
    try:
        yield
    except tuple(conn.connection_errors) + tuple(conn.channel_errors):
        pass


def ignore_errors(conn: Any, fun: Optional[Callable[..., Any]] = None, *args: Any, **kwargs: Any) -> Any:
    """Call ``fun(*args, **kwargs)`` ignoring ``conn``'s connection and channel
    errors (None is returned then); without ``fun``, a context manager doing so.

    For clean-up on a connection that may be gone: closing, cancelling.
    """
    if fun is None:
        return _ignoring(conn)
    try:
        return fun(*args, **kwargs)
    except tuple(conn.connection_errors) + tuple(conn.channel_errors):
        return None


class Broadcast(Queue):
    """A queue of its own bound to a fanout exchange: every Broadcast of the
    same ``name`` gets a copy of every message published to it.

    Each instance gets a fresh queue name (``bcast.<uuid>``) unless ``queue``
    is given; ``unique=True`` appends a uuid to ``queue`` as well. The queue
    is auto-deleted once its consumer goes away.
    """

    attrs = (*Queue.attrs, "queue")  # type: ignore[assignment]  # one more keyword
    queue: Optional[str] = None

    def __init__(self, name: Optional[str] = None, queue: Optional[str] = None, unique: bool = False,
                 auto_delete: bool = True, exchange: Optional[Exchange] = None,
                 alias: Optional[str] = None, **kwargs: Any) -> None:
        if unique:
            queue = f"{queue or 'bcast'}.{uuid()}"
        else:
            queue = queue or f"bcast.{uuid()}"
        if exchange is None:
            exchange = Exchange(name or "", type="fanout")
        super().__init__(queue, exchange=exchange, alias=alias or name, queue=queue,
                         auto_delete=auto_delete, **kwargs)


def eventloop(conn: Any, limit: Optional[int] = None, timeout: Optional[float] = None,
              ignore_timeouts: bool = False) -> Iterator[Any]:
    """Call ``conn.drain_events(timeout=timeout)`` ``limit`` times (None: for
    ever), yielding each result. A timeout is raised unless ``ignore_timeouts``,
    in which case it just counts as one turn."""
    for _ in (range(limit) if limit else itertools.count()):
        try:
            yield conn.drain_events(timeout=timeout)
        except socket.timeout:
            if timeout and not ignore_timeouts:
                raise


def drain_consumer(consumer: Consumer, limit: Optional[int] = 1, timeout: Optional[float] = None,
                   callbacks: Optional[Iterable[Callback]] = None) -> Iterator[Tuple[Any, Message]]:
    """Consume with ``consumer`` and yield ``(body, message)`` pairs.

    Ends after ``limit`` messages (None or 0: no limit), or quietly when no
    message arrives within ``timeout`` seconds. ``callbacks`` are called with
    every message received too. Messages received but not yielded (one wait
    can bring several) go back to the queue unless the consumer is no_ack.
    """
    received: Deque[Tuple[Any, Message]] = collections.deque()
    consumer.callbacks = [lambda body, message: received.append((body, message)), *(callbacks or ())]
    conn = consumer.connection
    with consumer:
        try:
            for _ in (range(limit) if limit else itertools.count()):
                deadline = None if timeout is None else time.monotonic() + timeout
                while not received:
                    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        conn.drain_events(timeout=remaining)
                    except socket.timeout:
                        return
                yield received.popleft()
        finally:
            _give_back(consumer, received)


def _give_back(consumer: Consumer, received: Deque[Tuple[Any, Message]]) -> None:
    """Requeue what arrived but was not yielded, including deliveries the
    transport queued before the cancel (AMQP pushes ahead of the consumer)."""
    if consumer.no_ack:
        return
    conn = consumer.connection
    with _ignoring(conn):
        consumer.cancel()
        try:
            conn.drain_events(timeout=0)
        except socket.timeout:
            pass
        for _, message in received:
            if not message.acknowledged:
                message.requeue()


def itermessages(conn: Any, channel: Any, queue: Queue, limit: Optional[int] = 1,
                 timeout: Optional[float] = None, callbacks: Optional[Iterable[Callback]] = None,
                 **kwargs: Any) -> Iterator[Tuple[Any, Message]]:
    """:func:`drain_consumer` on a new Consumer of ``queue`` (keywords go to it)."""
    return drain_consumer(conn.Consumer(queues=[queue], channel=channel, **kwargs),
                          limit=limit, timeout=timeout, callbacks=callbacks)


def send_reply(exchange: Union[Exchange, str], req: Message, msg: Any, producer: Optional[Producer] = None,
               retry: bool = False, retry_policy: Optional[Dict[str, Any]] = None, **props: Any) -> None:
    """Publish ``msg`` as the reply to the request message ``req``.

    Routed by the request's ``reply_to`` property, carrying its
    ``correlation_id``, serialized as the request was. Without a
    ``producer``, one on the request's channel is used. ``props`` override
    any of these and go to ``Producer.publish``.
    """
    if producer is None:
        producer = Producer(req.channel, auto_declare=False)
    content_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    options = {
        "routing_key": req.properties["reply_to"],
        "correlation_id": req.properties.get("correlation_id"),
        "serializer": registry.type_to_name.get(content_type),
    }
    options.update(props)
    producer.publish(msg, exchange=exchange, retry=retry, retry_policy=retry_policy, **options)


def collect_replies(conn: Any, channel: Any, queue: Queue, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Yield the bodies of replies arriving on ``queue`` (see :func:`itermessages`
    for ``limit`` and ``timeout``).

    As in kombu, replies are consumed with ``no_ack=True`` unless
    ``no_ack=False`` is passed, in which case each is acked before its body
    is yielded.
    """
    no_ack = kwargs.setdefault("no_ack", True)
    for body, message in itermessages(conn, channel, queue, *args, **kwargs):
        if not no_ack:
            message.ack()
        yield body
