"""ConsumerMixin and ConsumerProducerMixin: consumer programs that keep running.

A subclass sets ``self.connection`` (a template: the mixin consumes on a
clone of it) and implements ``get_consumers(Consumer, channel)``;
``run()`` then consumes until ``should_stop`` is set, reconnecting after
connection errors, as kombu's mixin does. What gevent changes:

* One loop drains the connection, and every consumer's callbacks run in a
  greenlet of the consumer's own, in delivery order. A slow handler holds
  up only its own consumer. Each consumer gets its own channel, so its
  ``prefetch_count`` bounds what waits for it (and nothing else).
* ``should_stop = True``, from any greenlet, ends ``run()`` within about
  ``safety_interval`` seconds, cleanly: draining stops, the consumers are
  cancelled, each worker finishes the message in hand (and any ``no_ack``
  ones received: the broker has forgotten those), then the channels and the
  connection close, which returns every unacked message to its queue.
* An error raised by a callback ends ``run()`` the same clean way and is
  re-raised from it (kombu's behaviour), unless it is a connection error:
  then ``run()`` reconnects, as for an error of the connection itself.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple, Type

from . import green, messaging
from .common import ignore_errors
from .exceptions import ConnectionClosed
from .message import Message

__all__ = ["ConsumerMixin", "ConsumerProducerMixin"]

logger = logging.getLogger(__name__)

_STOP = object()


class _Stopped(Exception):
    """``should_stop`` was set while (re)connecting: give up quietly."""


class _TokenBucket:
    """At most ``capacity`` starts at once, refilled at ``fill_rate`` per second."""

    def __init__(self, fill_rate: float, capacity: float = 1) -> None:
        self.fill_rate, self.capacity = float(fill_rate), float(capacity)
        self._tokens, self._stamp = self.capacity, time.monotonic()

    def _refill(self) -> float:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.fill_rate)
        self._stamp = now
        return self._tokens

    def can_consume(self, tokens: float = 1) -> bool:
        if tokens > self._refill():
            return False
        self._tokens -= tokens
        return True

    def expected_time(self, tokens: float = 1) -> float:
        return max(0.0, (tokens - self._refill()) / self.fill_rate)


class _Mailbox:
    """One consumer's deliveries and the greenlet that runs its callbacks."""

    def __init__(self, consumer: messaging.Consumer, on_failure: Callable[[BaseException], None],
                 told_to_stop: Callable[[], bool]) -> None:
        self.consumer = consumer
        self._on_failure = on_failure
        self._told_to_stop = told_to_stop
        self._queue: Any = green.Queue()
        self._stopping = False
        consumer.dispatcher = self._queue.put  # deliveries are posted here, handled in _work
        self.greenlet = green.spawn(self._work)

    def _work(self) -> None:
        while True:
            message = self._queue.get()
            if message is _STOP:
                return
            if (self._stopping or self._told_to_stop()) and not self.consumer.no_ack:
                continue  # left unacked: the channel's close gives it back
            try:
                self.consumer.handle(message)
            except Exception as exc:  # noqa: BLE001 - reported to the drain loop
                self._on_failure(exc)
                return

    def stop(self, finish_all: bool) -> None:
        """End after every message received (``finish_all``), or after the
        one in hand and any no_ack ones received."""
        self._stopping = not finish_all
        self._queue.put(_STOP)


class _Dispatch:
    """The consumers of one connection: their channels, mailboxes and workers."""

    def __init__(self, mixin: "ConsumerMixin", connection: Any) -> None:
        self.mixin = mixin
        self.connection = connection
        self.channels: List[Any] = []
        self.mailboxes: List[_Mailbox] = []
        self.failure: Optional[BaseException] = None

    def make_consumer(self, *args: Any, **kwargs: Any) -> messaging.Consumer:
        """The ``Consumer`` given to ``get_consumers``: each on a channel of its own."""
        channel = kwargs.pop("channel", None) or self.connection.channel()
        self.channels.append(channel)
        kwargs.setdefault("on_decode_error", self.mixin.on_decode_error)
        return messaging.Consumer(channel, *args, **kwargs)

    def start(self, consumers: List[messaging.Consumer]) -> None:
        for consumer in consumers:
            self.mailboxes.append(_Mailbox(consumer, self._failed, lambda: self.mixin.should_stop))
            consumer.consume()

    def _failed(self, exc: BaseException) -> None:
        self.failure = self.failure or exc

    def check(self) -> None:
        """Raise a worker's error, or ConnectionClosed if a channel died under us."""
        if self.failure is not None:
            raise self.failure
        for mailbox in self.mailboxes:
            if not mailbox.consumer.channel.is_open:
                raise ConnectionClosed("A consumer's channel was closed; reconnecting")

    def close(self, timeout: Optional[float], finish_all: bool = False) -> None:
        """Cancel, let the workers finish, close the channels (errors ignored:
        the connection may be gone already)."""
        for mailbox in self.mailboxes:
            ignore_errors(self.connection, mailbox.consumer.cancel)
        for mailbox in self.mailboxes:
            mailbox.stop(finish_all)
        deadline = None if timeout is None else time.monotonic() + timeout
        for mailbox in self.mailboxes:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            mailbox.greenlet.join(left)
            if not mailbox.greenlet.dead:
                logger.warning("A handler of %r did not finish within %ss; stopping it",
                               mailbox.consumer, timeout)
                mailbox.greenlet.kill()
        for channel in self.channels:
            ignore_errors(self.connection, channel.close)


def _release(connection: Any, error: Optional[BaseException] = None) -> None:
    """Close ``connection`` gracefully, or collect it if it (or closing it) failed."""
    errors = tuple(connection.connection_errors)
    if not isinstance(error, errors):
        try:
            connection.close()
            return
        except errors:
            pass
    connection.collect()


class ConsumerMixin:
    """Consume from the queues ``get_consumers`` returns until told to stop::

        class Worker(ConsumerMixin):
            def __init__(self, connection):
                self.connection = connection

            def get_consumers(self, Consumer, channel):
                return [Consumer(queues=[tasks], callbacks=[self.on_task], prefetch_count=10)]

        gevent.spawn(Worker(Connection(url)).run)
    """

    #: The template connection (set by the subclass); consuming uses a clone.
    connection: Any = None
    #: Retries of each (re)connection attempt; None retries for ever.
    connect_max_retries: Optional[int] = None
    #: Seconds the workers get to finish their message when stopping (None: no limit).
    shutdown_timeout: Optional[float] = None
    _dispatch: Optional[_Dispatch] = None

    # -- stopping ----------------------------------------------------------

    @property
    def should_stop(self) -> bool:
        """Set to True (from any greenlet) to make :meth:`run` return."""
        return bool(self.__dict__.get("_should_stop", False))

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.__dict__["_should_stop"] = bool(value)
        event = self._stop_event()
        if value:
            event.set()
        else:
            event.clear()

    def _stop_event(self) -> Any:
        return self.__dict__.setdefault("_stop_flag", green.Event())

    def _pause(self, seconds: float) -> None:
        """Sleep cooperatively, waking early when told to stop (polling too, in
        case a subclass shadows the property with kombu's class attribute)."""
        end = time.monotonic() + seconds
        while not self.should_stop and time.monotonic() < end:
            self._stop_event().wait(min(end - time.monotonic(), 1.0))

    def _abort_if_stopping(self) -> None:
        if self.should_stop:
            raise _Stopped()

    # -- hooks -------------------------------------------------------------

    def get_consumers(self, Consumer: Callable[..., messaging.Consumer], channel: Any) -> List[messaging.Consumer]:
        """Return the consumers to run; ``Consumer(queues, ...)`` makes one
        (on a channel of its own: don't call its ``consume()``)."""
        raise NotImplementedError("Subclass responsibility")

    def on_connection_revived(self) -> None:
        """Called after each (re)connection, before the consumers are made."""

    def on_consume_ready(self, connection: Any, channel: Any, consumers: List[messaging.Consumer],
                         **kwargs: Any) -> None:
        """Called once the consumers consume."""

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Called when consuming on ``connection`` ended (workers done, before it closes)."""

    def on_iteration(self) -> None:
        """Called before each wait for messages."""

    def on_decode_error(self, message: Message, exc: BaseException) -> None:
        """A body that cannot be decoded: logged and rejected (dead-lettered
        where the queue has a dead-letter exchange; kombu acks it instead)."""
        logger.error("Can't decode message body: %r (type:%r encoding:%r raw:%r)",
                     exc, message.content_type, message.content_encoding, (message.body or b"")[:256])
        message.reject()

    def on_connection_error(self, exc: BaseException, interval: float) -> None:
        """Called before each pause between connection attempts."""
        logger.warning("Broker connection error, trying again in %s seconds: %r", interval, exc)

    @contextlib.contextmanager
    def extra_context(self, connection: Any, channel: Any) -> Iterator[None]:
        """Override to wrap consuming in a context of your own."""
        yield

    # -- connections -------------------------------------------------------

    @property
    def connection_errors(self) -> Tuple[Type[BaseException], ...]:
        return tuple(self.connection.connection_errors)

    @property
    def channel_errors(self) -> Tuple[Type[BaseException], ...]:
        return tuple(self.connection.channel_errors)

    @property
    def restart_limit(self) -> _TokenBucket:
        """At most one (re)start of consuming per second."""
        limit: _TokenBucket = self.__dict__.setdefault("_restart_limit", _TokenBucket(1))
        return limit

    def create_connection(self) -> Any:
        return self.connection.clone()

    @contextlib.contextmanager
    def establish_connection(self) -> Iterator[Any]:
        """A connected clone of :attr:`connection`, retried while the broker is away."""
        conn = self.create_connection()
        try:
            conn.ensure_connection(self.on_connection_error, self.connect_max_retries,
                                   callback=self._abort_if_stopping)
            yield conn
        except BaseException as exc:
            _release(conn, exc)
            raise
        conn.close()

    def maybe_conn_error(self, fun: Callable[[], Any]) -> Any:
        """Call ``fun`` ignoring connection and channel errors."""
        return ignore_errors(self, fun)

    # -- consuming ---------------------------------------------------------

    @contextlib.contextmanager
    def Consumer(self) -> Iterator[Tuple[Any, Any, List[messaging.Consumer]]]:
        """Connect, build and start the consumers; stop them cleanly on exit."""
        with self.establish_connection() as conn:
            self.on_connection_revived()
            logger.info("Connected to %s", conn.as_uri())
            channel = conn.default_channel
            dispatch = self._dispatch = _Dispatch(self, conn)
            try:
                consumers = list(self.get_consumers(dispatch.make_consumer, channel))
                dispatch.start(consumers)
                yield conn, channel, consumers
            except BaseException:
                dispatch.close(self.shutdown_timeout)
                ignore_errors(conn, self.on_consume_end, conn, channel)
                raise
            finally:
                self._dispatch = None
            # Consuming ended by its limit: what was received is handled, as in kombu.
            dispatch.close(self.shutdown_timeout, finish_all=not self.should_stop)
            self.on_consume_end(conn, channel)
            if dispatch.failure is not None:  # a handler failed while we were stopping
                raise dispatch.failure

    @contextlib.contextmanager
    def consumer_context(self, **kwargs: Any) -> Iterator[Tuple[Any, Any, List[messaging.Consumer]]]:
        with self.Consumer() as (connection, channel, consumers):
            with self.extra_context(connection, channel):
                self.on_consume_ready(connection, channel, consumers, **kwargs)
                yield connection, channel, consumers

    def consume(self, limit: Optional[int] = None, timeout: Optional[float] = None,
                safety_interval: float = 1, **kwargs: Any) -> Iterator[None]:
        """Drain the connection, yielding after each event, ``limit`` times at most.

        Raises ``socket.timeout`` when ``timeout`` seconds pass without an
        event; checks ``should_stop`` at least every ``safety_interval`` seconds.
        """
        elapsed = 0.0
        with self.consumer_context(**kwargs) as (conn, channel, consumers):
            dispatch = self._dispatch
            assert dispatch is not None
            for _ in (range(limit) if limit else itertools.count()):
                if self.should_stop:
                    break
                self.on_iteration()
                dispatch.check()
                try:
                    conn.drain_events(timeout=safety_interval)
                except socket.timeout:
                    conn.heartbeat_check()
                    elapsed += safety_interval
                    if timeout and elapsed >= timeout:
                        raise
                except OSError:
                    if not self.should_stop:
                        raise
                else:
                    yield
                    elapsed = 0.0
            dispatch.check()

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Consume until :attr:`should_stop`, reconnecting after connection errors."""
        errors = self.connection_errors + self.channel_errors
        while not self.should_stop:
            try:
                if self.restart_limit.can_consume(_tokens):
                    for _ in self.consume(limit=None, **kwargs):
                        pass
                else:
                    self._pause(self.restart_limit.expected_time(_tokens))
            except _Stopped:
                break
            except errors as exc:
                if not self.should_stop:
                    logger.warning("Connection to broker lost (%r); reconnecting", exc, exc_info=True)


class ConsumerProducerMixin(ConsumerMixin):
    """A ConsumerMixin whose handlers publish through :attr:`producer`.

    Publishing uses a connection of its own (:attr:`producer_connection`),
    so a full or blocked publishing connection never stalls consuming.
    """

    _producer_connection: Any = None

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        if self._producer_connection is not None:
            _release(self._producer_connection)
            self._producer_connection = None

    @property
    def producer(self) -> messaging.Producer:
        """A Producer on the producer connection's default channel."""
        return messaging.Producer(self.producer_connection)

    @property
    def producer_connection(self) -> Any:
        """A connected clone of :attr:`connection`, made on first use."""
        lock = self.__dict__.setdefault("_producer_lock", green.Lock())
        with lock:  # handlers of several consumers may ask at once
            if self._producer_connection is None:
                conn = self.connection.clone()
                conn.ensure_connection(self.on_connection_error, self.connect_max_retries)
                self._producer_connection = conn
            return self._producer_connection
