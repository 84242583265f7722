"""carrot's API on kombu_green: port a carrot program by changing its imports.

carrot (kombu's predecessor) built a Publisher or Consumer per queue from a
connection and names; kombu kept that as ``kombu.compat``. Import
``BrokerConnection``, ``Publisher``, ``Consumer`` and ``ConsumerSet`` from
here instead of ``carrot.connection``/``carrot.messaging``, and give a URL
(``"redis://"``) or ``transport=`` for ``backend_cls``. Then, in the modern API:

==============================  ==============================================
``Publisher.send(data)``        ``Producer(channel, exchange).publish(data)``
``Consumer.wait(limit)``        ``Consumer(channel, queues).consume()``, then
                                ``connection.drain_events()`` in a loop
``Consumer.fetch()``            ``queue(channel).get()``
``Consumer.discard_all()``      ``consumer.purge()``
``ConsumerSet(from_dict=...)``  ``Consumer(channel, [Queue.from_dict(...)])``
==============================  ==============================================

``wait()`` and ``iterconsume()`` block only their greenlet. Docstrings say
where behaviour differs from carrot.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import warnings
from typing import Any, Callable, Deque, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from . import green, messaging
from .connection import BrokerConnection
from .entity import Exchange, Queue
from .exceptions import ConfigurationError
from .message import Message
from .messaging import is_connection, owner_of

__all__ = ["BrokerConnection", "Consumer", "ConsumerSet", "Publisher", "entry_to_queue"]

#: kombu.compat's name for building a Queue from a configuration entry.
entry_to_queue = Queue.from_dict
#: carrot's name for an object's channel.
_backend = property(lambda self: self.channel)


@contextlib.contextmanager
def _channel_for(connection: Any, channel: Any = None) -> Iterator[Tuple[Any, Any, Any]]:
    """(connection, channel to use, channel opened here, closed if the body fails).

    carrot gave each object a channel of its own; one passed in stays the caller's."""
    opened = None
    if channel is None and is_connection(connection):
        channel = opened = connection.channel()
    channel = connection if channel is None else channel  # a channel where carrot took a connection
    try:
        yield (connection if is_connection(connection) else owner_of(channel)), channel, opened
    except BaseException:
        if opened is not None:
            opened.close()
        raise


def _close_own_channel(obj: Any) -> None:
    own, obj._own_channel = obj._own_channel, None
    if own is not None:
        own.close()


def _settled_by_broker(message: Message) -> bool:
    """True for a no_ack delivery: it can be neither acked nor handed back."""
    return message.delivery_info.get("consumer_tag") in getattr(message.channel, "no_ack_consumers", ())


def _give_back(message: Message) -> None:
    """Return an unsettled message to its queue, if its channel still can."""
    settled = message.acknowledged or _settled_by_broker(message)
    if not settled and getattr(message.channel, "is_open", False):
        with contextlib.suppress(Exception):  # a lost channel: the broker redelivers what it held
            message.requeue()


def _carrot_entry(name: str, options: Mapping[str, Any]) -> Queue:
    """A Queue from a configuration entry; carrot's ``durable``/``auto_delete`` cover the exchange too."""
    options = dict(options)
    for key in ("durable", "auto_delete"):
        if options.get(key) is not None:
            options.setdefault(f"exchange_{key}", options[key])
    options.pop("auto_ack", None)  # a consumer setting, not the queue's
    return Queue.from_dict(name, **options)


class Publisher(messaging.Producer):
    """carrot's Publisher: a Producer built from names, on a channel of its own.

    ``exchange`` is a name (an Exchange of ``exchange_type``, durable, not
    auto-deleted unless told otherwise) or an :class:`Exchange`.
    """

    exchange: Any = ""
    exchange_type: str = "direct"
    routing_key: str = ""
    durable: bool = True
    auto_delete: bool = False
    delivery_mode: Union[int, str, None] = None

    def __init__(self, connection: Any, exchange: Union[Exchange, str, None] = None,
                 routing_key: Optional[str] = None, exchange_type: Optional[str] = None,
                 durable: Optional[bool] = None, auto_delete: Optional[bool] = None,
                 channel: Any = None, delivery_mode: Union[int, str, None] = None, **kwargs: Any) -> None:
        self._closed = False
        self.exchange_type = exchange_type or self.exchange_type
        self.durable = self.durable if durable is None else durable
        self.auto_delete = self.auto_delete if auto_delete is None else auto_delete
        self.delivery_mode = delivery_mode or self.delivery_mode
        target = exchange if exchange is not None else self.exchange
        if not isinstance(target, Exchange):
            target = Exchange(target or "", type=self.exchange_type, durable=self.durable,
                              auto_delete=self.auto_delete)
        if self.delivery_mode:  # carrot's per-publisher setting, carried by a copy of the exchange
            options = {attr: getattr(target, attr) for attr in Exchange.attrs}
            target = Exchange(**dict(options, delivery_mode=self.delivery_mode))
        with _channel_for(connection, channel) as (owner, chan, self._own_channel):
            super().__init__(chan, target, routing_key or None, **kwargs)
        self._owner = owner

    backend = _backend

    def close(self) -> None:
        """Stop publishing and close the channel this publisher opened."""
        if not self._closed:
            self._closed = True
            super().close()
            _close_own_channel(self)

    release = close  # Producer.__exit__ calls release()


class _CarrotConsumer(messaging.Consumer):
    """What Consumer and ConsumerSet share: loops with a limit, closing.

    A loop's limit is a budget each delivery spends; deliveries past it (AMQP
    may run several per ``drain_events``) are held unacked, as carrot's client
    buffered them, for the next loop or ``fetch``; closing requeues them.
    """

    auto_ack: bool = False
    _closed: bool = False
    _own_channel: Any = None
    #: None: every delivery runs the callbacks; n: n more may, later ones are held.
    _budget: Optional[int] = None
    _held: Deque[Message]

    def _setup(self, auto_ack: Optional[bool]) -> None:  # before messaging.Consumer's __init__
        self._held = collections.deque()
        self.auto_ack = self.auto_ack if auto_ack is None else auto_ack

    backend = _backend

    def _receive_callback(self, message: Message) -> Any:
        budget = self._budget
        if budget is not None:
            if budget <= 0 and not _settled_by_broker(message):
                self._held.append(message)
                return None
            self._budget = max(budget - 1, 0)
        if self.auto_ack and not _settled_by_broker(message) and not message.acknowledged:
            message.ack()
        return super()._receive_callback(message)

    def consume(self, no_ack: Optional[bool] = None) -> None:
        """Start consuming; any greenlet draining the connection runs the callbacks."""
        self._budget = None
        super().consume(no_ack)

    def iterconsume(self, limit: Optional[int] = None, no_ack: Optional[bool] = None) -> Iterator[Any]:
        """Consume (from now, not from the first ``next()``), yielding once per
        ``drain_events()``, until ``limit`` messages ran (None or 0: for ever).
        """
        self.consume(no_ack=no_ack)
        self._budget = limit or None
        return self._loop()

    def _loop(self) -> Iterator[Any]:
        connection = self.connection
        while self._budget is None or self._budget > 0:
            if self._held:  # run as if delivered now, spending the budget
                green.cooperate()
                yield self._receive_callback(self._held.popleft())
            else:
                yield connection.drain_events()

    def wait(self, limit: Optional[int] = None) -> List[Any]:
        """Run the callbacks for ``limit`` messages (for ever without one)."""
        return list(self.iterconsume(limit))

    def discard_all(self) -> int:
        """Purge the queues (and drop held messages); return how many went."""
        held, self._held = self._held, collections.deque()
        for message in held:
            message.ack()
        return self.purge() + len(held)

    def _return_held(self) -> None:
        held, self._held = self._held, collections.deque()
        for message in reversed(held):  # each goes back to the head: keep their order
            _give_back(message)  # on a lost channel the broker redelivers it anyway

    def revive(self, channel: Any) -> None:
        """Move onto ``channel`` (after a reconnection), keeping a running loop's limit."""
        self._return_held()
        budget = self._budget
        super().revive(channel)
        self._budget = budget

    def close(self) -> None:
        """Stop consuming, give held messages back and close the channel opened here."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.channel is not None and self.channel.is_open:
                self.cancel()
                self._return_held()
        finally:
            _close_own_channel(self)

    release = close

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Consumer(_CarrotConsumer):
    """carrot's Consumer: one queue, built from names, on a channel of its own.

    The exchange (``exchange_type``, direct), queue and binding are declared;
    ``durable`` and ``auto_delete`` apply to both, ``exclusive`` to the queue;
    ``auto_ack=True`` acks each message before the callbacks run. Other
    keywords go to :class:`kombu_green.Consumer`. Subclasses may set any of
    these as class attributes, as in carrot.
    """

    queue: Any = ""
    exchange: Any = ""
    routing_key: str = ""
    exchange_type: str = "direct"
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    #: Seconds ``iterqueue(infinite=True)`` pauses after finding the queue empty.
    polling_interval: float = 0.1

    def __init__(self, connection: Any, queue: Union[Queue, str, None] = None,
                 exchange: Union[Exchange, str, None] = None, routing_key: Optional[str] = None,
                 exchange_type: Optional[str] = None, durable: Optional[bool] = None,
                 exclusive: Optional[bool] = None, auto_delete: Optional[bool] = None,
                 auto_ack: Optional[bool] = None, **kwargs: Any) -> None:
        self._setup(auto_ack)
        for name, value in (("durable", durable), ("exclusive", exclusive), ("auto_delete", auto_delete)):
            if value is not None:
                setattr(self, name, value)
        self.queue = queue or self.queue
        self.exchange = exchange or self.exchange
        self.exchange_type = exchange_type or self.exchange_type
        self.routing_key = routing_key or self.routing_key
        with _channel_for(connection) as (owner, chan, self._own_channel):
            super().__init__(chan, self._build_queue(), **kwargs)
        self._owner = owner

    def _build_queue(self) -> Queue:
        if isinstance(self.queue, Queue):
            return self.queue
        exchange = self.exchange
        if not isinstance(exchange, Exchange):
            exchange = Exchange(exchange or "", type=self.exchange_type, durable=self.durable,
                                auto_delete=self.auto_delete)
        return Queue(self.queue, exchange=exchange, routing_key=self.routing_key, durable=self.durable,
                     exclusive=self.exclusive, auto_delete=self.auto_delete)

    def fetch(self, no_ack: Optional[bool] = None, enable_callbacks: bool = False,
              *, auto_ack: Optional[bool] = None) -> Optional[Message]:
        """The next message (basic_get) or None, at once; ``enable_callbacks`` runs the callbacks on it."""
        no_ack = bool(self.no_ack if no_ack is None else no_ack)
        auto_ack = self.auto_ack if auto_ack is None else auto_ack
        held = bool(self._held)
        message = self._held.popleft() if held else self.queues[0].get(no_ack=no_ack, accept=self.accept)
        green.cooperate()  # a fetch loop on memory:// never waits otherwise
        if message is not None:
            if (no_ack and held) or (auto_ack and not no_ack):
                message.ack()  # auto_ack, or a held delivery asked for settled
            if enable_callbacks:
                messaging.Consumer._receive_callback(self, message)
        return message

    def process_next(self) -> Optional[Message]:
        """Deprecated in carrot: ``fetch(enable_callbacks=True)``."""
        warnings.warn("process_next() is deprecated: use fetch(enable_callbacks=True)", DeprecationWarning, 2)
        return self.fetch(enable_callbacks=True)

    def discard_all(self, filterfunc: Optional[Callable[[Message], Any]] = None) -> int:
        """Remove waiting messages, or those ``filterfunc(message)`` is true for; return how many.

        A filter needs acks (not with ``no_ack``/``auto_ack``, as in carrot);
        messages it keeps go back to the queue at once (carrot kept them unacked).
        """
        if filterfunc is None:
            return super().discard_all()
        if self.no_ack or self.auto_ack:
            raise ConfigurationError("discard_all(filterfunc) needs acks: not with no_ack or auto_ack")
        discarded, kept = 0, []
        try:
            while True:
                message = self.fetch(no_ack=False, auto_ack=False)
                if message is None:
                    return discarded
                if filterfunc(message):
                    message.ack()
                    discarded += 1
                else:
                    kept.append(message)
        finally:
            for message in reversed(kept):  # each goes back to the head: keep their order
                _give_back(message)

    def iterqueue(self, limit: Optional[int] = None, infinite: bool = False) -> Iterator[Optional[Message]]:
        """Yield fetched messages until the queue is empty (or after ``limit`` steps).

        ``infinite`` yields None for an empty queue and fetches again
        :attr:`polling_interval` seconds later (carrot spun instead).
        """
        for step in itertools.count():
            if limit and step >= limit:
                return
            message = self.fetch()
            if message is None and not infinite:
                return
            yield message
            if message is None:
                green.sleep(self.polling_interval)

    def __iter__(self) -> Iterator[Optional[Message]]:
        return self.iterqueue(infinite=True)


class ConsumerSet(_CarrotConsumer):
    """carrot's ConsumerSet: one consumer and one channel for many queues.

    Queues come from ``from_dict`` (``{name: {"exchange": ..., "routing_key":
    ...}}``, as for ``Queue.from_dict``) and from compat Consumers. As in
    carrot, the set's callbacks handle every message and closing the set
    closes the consumers added.
    """

    def __init__(self, connection: Any, from_dict: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 consumers: Optional[Iterable[Consumer]] = None, channel: Any = None,
                 auto_ack: Optional[bool] = None, **kwargs: Any) -> None:
        self._setup(auto_ack)
        self.consumers: List[Consumer] = list(consumers or ())
        queues = [queue for consumer in self.consumers for queue in consumer.queues]
        queues += [_carrot_entry(name, options) for name, options in (from_dict or {}).items()]
        with _channel_for(connection, channel) as (owner, chan, self._own_channel):
            super().__init__(chan, queues, **kwargs)
        self._owner = owner

    def add_queue_from_dict(self, queue: str, **options: Any) -> Queue:
        """Add a queue from a configuration entry; the next loop consumes it."""
        return self.add_queue(_carrot_entry(queue, options))

    add_consumer_from_dict = add_queue_from_dict

    def add_consumer(self, consumer: Consumer) -> None:
        """Consume ``consumer``'s queue in this set, with the set's callbacks."""
        self.consumers.append(consumer)
        for queue in consumer.queues:
            self.add_queue(queue)

    def close(self) -> None:
        """Stop consuming, close the channel opened here and every consumer added."""
        try:
            super().close()
        finally:
            for consumer in self.consumers:
                consumer.close()

    release = close
