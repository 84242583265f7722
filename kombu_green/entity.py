"""Exchange, Queue and binding: declarations first, operations when bound.

An entity is plain data that can be pickled, kept in configuration and
shared between greenlets. To act on a broker it must be bound to a
channel: ``exchange(channel)`` (or ``.bind(channel)``) returns a bound
*copy* and leaves the original untouched, so one declaration can serve many
channels at once.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

from .abstract import MaybeChannelBound
from .exceptions import ContentDisallowed

if TYPE_CHECKING:  # pragma: no cover
    from .message import Message

__all__ = ["Exchange", "Queue", "binding", "maybe_delivery_mode"]

TRANSIENT_DELIVERY_MODE = 1
PERSISTENT_DELIVERY_MODE = 2
DELIVERY_MODES = {"transient": TRANSIENT_DELIVERY_MODE, "persistent": PERSISTENT_DELIVERY_MODE}


def maybe_delivery_mode(mode: Union[int, str, None],
                        default: int = PERSISTENT_DELIVERY_MODE) -> int:
    """1/2, "transient"/"persistent" or None (-> ``default``) as an int."""
    if mode is None:
        return default
    if isinstance(mode, str):
        try:
            return DELIVERY_MODES[mode]
        except KeyError:
            raise ValueError(f"delivery_mode must be 1, 2, 'transient' or 'persistent', not {mode!r}") from None
    return int(mode)


class Exchange(MaybeChannelBound):
    """A named router with a type: direct, topic, fanout or headers.

    ``Exchange('')`` is the broker's default exchange, which routes by
    queue name and is never declared or deleted.
    """

    TRANSIENT_DELIVERY_MODE = TRANSIENT_DELIVERY_MODE
    PERSISTENT_DELIVERY_MODE = PERSISTENT_DELIVERY_MODE
    attrs = ("name", "type", "arguments", "durable", "passive", "auto_delete",
             "delivery_mode", "no_declare")

    name: str = ""
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    passive: bool = False
    delivery_mode: Union[int, str, None] = None
    no_declare: bool = False
    arguments: Optional[Dict[str, Any]] = None

    def __init__(self, name: str = "", type: str = "", channel: Any = None, **kwargs: Any) -> None:
        self.name = name or self.name
        self.type = type or self.type
        self._set_attrs(kwargs)
        if isinstance(self.delivery_mode, str):
            self.delivery_mode = maybe_delivery_mode(self.delivery_mode)
        self.maybe_bind(channel)

    def declare(self, nowait: bool = False, passive: Optional[bool] = None, channel: Any = None) -> None:
        """Create the exchange on the broker (no-op for the default exchange)."""
        passive = self.passive if passive is None else passive
        if self.name and not self.no_declare:
            self._require_channel("declare", channel).exchange_declare(
                exchange=self.name, type=self.type, durable=self.durable,
                auto_delete=self.auto_delete, arguments=self.arguments,
                nowait=nowait, passive=passive)

    def bind_to(self, exchange: Union["Exchange", str] = "", routing_key: str = "",
                arguments: Optional[Dict[str, Any]] = None, nowait: bool = False, channel: Any = None) -> None:
        """Route messages published to ``exchange`` into this exchange too."""
        source = exchange.name if isinstance(exchange, Exchange) else exchange
        self._require_channel("bind_to", channel).exchange_bind(
            destination=self.name, source=source, routing_key=routing_key,
            nowait=nowait, arguments=arguments)

    def unbind_from(self, source: Union["Exchange", str] = "", routing_key: str = "",
                    nowait: bool = False, arguments: Optional[Dict[str, Any]] = None, channel: Any = None) -> None:
        source_name = source.name if isinstance(source, Exchange) else source
        self._require_channel("unbind_from", channel).exchange_unbind(
            destination=self.name, source=source_name, routing_key=routing_key,
            nowait=nowait, arguments=arguments)

    def Message(self, body: bytes, delivery_mode: Union[int, str, None] = None,
                properties: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        """Build a transport message (see :meth:`Producer.publish` for the usual path)."""
        properties = dict(properties or {})
        properties["delivery_mode"] = maybe_delivery_mode(delivery_mode or self.delivery_mode)
        return self._require_channel("Message").prepare_message(body, properties=properties, **kwargs)

    def publish(self, message: Any, routing_key: Optional[str] = None, mandatory: bool = False,
                immediate: bool = False, exchange: Optional[str] = None) -> None:
        """Publish a message made by :meth:`Message`."""
        self._require_channel("publish").basic_publish(
            message, exchange=self.name if exchange is None else exchange,
            routing_key=routing_key or "", mandatory=mandatory, immediate=immediate)

    def delete(self, if_unused: bool = False, nowait: bool = False) -> None:
        """Delete the exchange on the broker."""
        self._require_channel("delete").exchange_delete(
            exchange=self.name, if_unused=if_unused, nowait=nowait)

    def binding(self, routing_key: str = "", arguments: Optional[Dict[str, Any]] = None,
                unbind_arguments: Optional[Dict[str, Any]] = None) -> "binding":
        return binding(self, routing_key, arguments, unbind_arguments)

    @property
    def can_cache_declaration(self) -> bool:
        return bool(self.durable and not self.auto_delete)

    def _key(self) -> Tuple[Any, ...]:
        return (self.name, self.type, self.durable, self.auto_delete,
                self.delivery_mode, repr(sorted((self.arguments or {}).items())))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Exchange):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Exchange", self.name))

    def __str__(self) -> str:
        return f"Exchange {self.name or repr('')}({self.type})"

    def __repr__(self) -> str:
        return self._bound_repr(str(self))


class binding:
    """One extra binding of a Queue (``Queue(bindings=[binding(...)])``)."""

    def __init__(self, exchange: Optional[Exchange] = None, routing_key: str = "",
                 arguments: Optional[Dict[str, Any]] = None, unbind_arguments: Optional[Dict[str, Any]] = None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.arguments = arguments
        self.unbind_arguments = unbind_arguments

    def declare(self, channel: Any, nowait: bool = False) -> None:
        if self.exchange is not None and self.exchange.name:
            self.exchange.declare(channel=channel, nowait=nowait)

    def bind(self, entity: Any, nowait: bool = False, channel: Any = None) -> None:
        entity.bind_to(exchange=self.exchange, routing_key=self.routing_key,
                       arguments=self.arguments, nowait=nowait, channel=channel)

    def unbind(self, entity: Any, nowait: bool = False, channel: Any = None) -> None:
        entity.unbind_from(self.exchange, routing_key=self.routing_key,
                           arguments=self.unbind_arguments, nowait=nowait, channel=channel)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, binding):
            return (self.exchange, self.routing_key, self.arguments) == \
                (other.exchange, other.routing_key, other.arguments)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.exchange, self.routing_key))

    def __repr__(self) -> str:
        return f"<binding: {self.exchange} rkey:{self.routing_key!r}>"


class Queue(MaybeChannelBound):
    """A queue and how it is bound: ``Queue(name, exchange, routing_key)``.

    ``key=`` is accepted as an alias of ``routing_key`` (the spelling of
    kombu's first releases). The kombu shortcuts ``message_ttl``,
    ``expires`` (seconds), ``max_length``, ``max_length_bytes`` and
    ``max_priority`` become the matching ``x-`` queue arguments.
    """

    ContentDisallowed = ContentDisallowed
    attrs = ("name", "exchange", "routing_key", "queue_arguments", "binding_arguments",
             "consumer_arguments", "durable", "exclusive", "auto_delete", "no_ack", "alias",
             "bindings", "no_declare", "expires", "message_ttl", "max_length",
             "max_length_bytes", "max_priority")

    name: str = ""
    exchange: Exchange = Exchange("")
    routing_key: str = ""
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    no_ack: bool = False
    no_declare: bool = False
    alias: Optional[str] = None
    queue_arguments: Optional[Dict[str, Any]] = None
    binding_arguments: Optional[Dict[str, Any]] = None
    consumer_arguments: Optional[Dict[str, Any]] = None
    expires: Optional[float] = None
    message_ttl: Optional[float] = None
    max_length: Optional[int] = None
    max_length_bytes: Optional[int] = None
    max_priority: Optional[int] = None

    def __init__(self, name: str = "", exchange: Union[Exchange, str, None] = None,
                 routing_key: str = "", channel: Any = None,
                 bindings: Optional[Iterable[binding]] = None, on_declared: Any = None,
                 key: Optional[str] = None, **kwargs: Any) -> None:
        self.name = name or self.name
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        self.exchange = exchange if exchange is not None else self.exchange
        self.routing_key = routing_key or key or self.routing_key
        self.bindings = set(bindings or ())
        self.on_declared = on_declared
        self._set_attrs(kwargs)
        if self.exclusive:
            self.auto_delete = True
        self.maybe_bind(channel)

    def when_bound(self) -> None:
        if self.exchange is not None:
            self.exchange = self.exchange(self._channel)

    def declare(self, nowait: bool = False, channel: Any = None) -> str:
        """Declare the exchange, the queue and its bindings; return the name."""
        channel = self._require_channel("declare", channel)
        if not self.no_declare:
            if self.exchange is not None:
                self.exchange.declare(nowait=nowait, channel=channel)
            self.queue_declare(nowait=nowait, passive=False, channel=channel)
            if self.exchange is not None and self.exchange.name:
                self.queue_bind(nowait=nowait, channel=channel)
            for extra in self.bindings:
                extra.declare(channel)
                extra.bind(self, nowait=nowait, channel=channel)
        return self.name

    def queue_arguments_for_broker(self) -> Optional[Dict[str, Any]]:
        """``queue_arguments`` plus the x- arguments from the kombu shortcuts."""
        args = dict(self.queue_arguments or {})
        for attr, key, scale in (("message_ttl", "x-message-ttl", 1000), ("expires", "x-expires", 1000),
                                 ("max_length", "x-max-length", 1),
                                 ("max_length_bytes", "x-max-length-bytes", 1),
                                 ("max_priority", "x-max-priority", 1)):
            value = getattr(self, attr)
            if value is not None:
                args[key] = int(value * scale)
        return args or None

    def queue_declare(self, nowait: bool = False, passive: bool = False, channel: Any = None) -> Any:
        """Declare only the queue; a passive declare checks it exists."""
        ok = self._require_channel("queue_declare", channel).queue_declare(
            queue=self.name, passive=passive, durable=self.durable, exclusive=self.exclusive,
            auto_delete=self.auto_delete, arguments=self.queue_arguments_for_broker(),
            nowait=nowait)
        if not self.name and ok:
            self.name = ok[0]
        if self.on_declared and ok:
            self.on_declared(*ok)
        return ok

    def queue_bind(self, nowait: bool = False, channel: Any = None) -> None:
        self.bind_to(self.exchange, self.routing_key, self.binding_arguments, nowait=nowait, channel=channel)

    def bind_to(self, exchange: Union[Exchange, str] = "", routing_key: str = "",
                arguments: Optional[Dict[str, Any]] = None, nowait: bool = False, channel: Any = None) -> None:
        name = exchange.name if isinstance(exchange, Exchange) else exchange
        self._require_channel("bind_to", channel).queue_bind(
            queue=self.name, exchange=name, routing_key=routing_key,
            arguments=arguments, nowait=nowait)

    def unbind_from(self, exchange: Union[Exchange, str] = "", routing_key: str = "",
                    arguments: Optional[Dict[str, Any]] = None, nowait: bool = False, channel: Any = None) -> None:
        name = exchange.name if isinstance(exchange, Exchange) else exchange
        self._require_channel("unbind_from", channel).queue_unbind(
            queue=self.name, exchange=name, routing_key=routing_key,
            arguments=arguments, nowait=nowait)

    def queue_unbind(self, arguments: Optional[Dict[str, Any]] = None, nowait: bool = False,
                     channel: Any = None) -> None:
        self.unbind_from(self.exchange, self.routing_key, arguments, nowait, channel)

    def get(self, no_ack: Optional[bool] = None, accept: Optional[Iterable[str]] = None) -> Optional["Message"]:
        """Fetch one message without consuming (basic_get); None when empty.

        Never waits: it returns at once whether or not a message is ready.
        """
        from .serialization import prepare_accept_content

        no_ack = self.no_ack if no_ack is None else no_ack
        message: Optional[Message] = self._require_channel("get").basic_get(queue=self.name, no_ack=no_ack)
        if message is not None and accept is not None:
            message.accept = prepare_accept_content(accept)
        return message

    def purge(self, nowait: bool = False) -> int:
        """Remove all ready messages; return how many were removed."""
        return self._require_channel("purge").queue_purge(queue=self.name, nowait=nowait) or 0

    def consume(self, consumer_tag: str = "", callback: Any = None, no_ack: Optional[bool] = None,
                nowait: bool = False, on_cancel: Any = None) -> str:
        no_ack = self.no_ack if no_ack is None else no_ack
        tag: str = self._require_channel("consume").basic_consume(
            queue=self.name, no_ack=no_ack, consumer_tag=consumer_tag or None,
            callback=callback, nowait=nowait, arguments=self.consumer_arguments,
            on_cancel=on_cancel)
        return tag

    def cancel(self, consumer_tag: str) -> None:
        self._require_channel("cancel").basic_cancel(consumer_tag)

    def delete(self, if_unused: bool = False, if_empty: bool = False, nowait: bool = False) -> int:
        """Delete the queue; return how many messages it held."""
        return self._require_channel("delete").queue_delete(
            queue=self.name, if_unused=if_unused, if_empty=if_empty, nowait=nowait) or 0

    @property
    def can_cache_declaration(self) -> bool:
        return bool(self.durable and not self.auto_delete and self.name)

    def as_dict(self, recurse: bool = False) -> Dict[str, Any]:
        data: Dict[str, Any] = {name: getattr(self, name) for name in self.attrs}
        data["bindings"] = list(self.bindings)
        if recurse and self.exchange is not None:
            data["exchange"] = {n: getattr(self.exchange, n) for n in Exchange.attrs}
        return data

    @classmethod
    def from_dict(cls, queue: str, **options: Any) -> "Queue":
        """Build from a configuration mapping, as Celery's queue settings use.

        Understands kombu's keys: ``exchange`` (a name, dict or Exchange),
        ``exchange_type``, ``exchange_durable``, ``exchange_auto_delete``,
        ``exchange_arguments``, ``binding_key`` (= ``routing_key``),
        ``queue_durable``, ``queue_auto_delete``, plus any Queue keyword.
        """
        options = dict(options)
        exchange = options.pop("exchange", None)
        exchange_options = {key: options.pop(f"exchange_{key}", None)
                            for key in ("type", "durable", "auto_delete", "arguments")}
        if options.get("delivery_mode") is not None:
            exchange_options["delivery_mode"] = options.pop("delivery_mode")
        if isinstance(exchange, dict):
            exchange = Exchange(**dict(exchange, **{k: v for k, v in exchange_options.items() if v is not None}))
        elif isinstance(exchange, Exchange):
            exchange = copy.copy(exchange)
            exchange._set_attrs(exchange_options)
        else:  # only a type given: an exchange named after the queue (Celery's habit)
            name = exchange if exchange is not None else (queue if exchange_options["type"] else "")
            exchange = Exchange(name, **exchange_options)
        binding_key = options.pop("binding_key", None)
        if binding_key is not None:
            options.setdefault("routing_key", binding_key)
        for key in ("durable", "auto_delete"):
            queue_value = options.pop(f"queue_{key}", None)
            if queue_value is not None:
                options[key] = queue_value
        return cls(queue, exchange=exchange, **options)

    def _key(self) -> Tuple[Any, ...]:
        return (self.name, self.exchange, self.routing_key, self.durable, self.exclusive,
                self.auto_delete, *(repr(sorted((args or {}).items())) for args in (
                    self.queue_arguments, self.binding_arguments, self.consumer_arguments)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Queue):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Queue", self.name))

    def __str__(self) -> str:
        return f"Queue {self.name or repr('')} -> {self.exchange} -> {self.routing_key}"

    def __repr__(self) -> str:
        return self._bound_repr(str(self))


def maybe_list(value: Any) -> List[Any]:
    """One item or many -> a list (None -> [])."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]
