"""The interface every transport implements, and its capability table.

A :class:`Transport` belongs to one :class:`~kombu_green.Connection`; it
opens the broker connection, makes channels and runs
:meth:`Transport.drain_events`. A :class:`Channel` carries the AMQP verbs.
Native AMQP transports map them onto the wire; the ``virtual`` package
implements them once for stores that only keep lists of messages.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Protocol,
    Set,
    Tuple,
    Type,
    TypeVar,
    cast,
)

from ..exceptions import ChannelError, OperationalError
from ..options import Option, read_options

if TYPE_CHECKING:  # pragma: no cover
    from ..message import Message

__all__ = ["Capabilities", "Channel", "Client", "QueueDeclareOk", "Transport", "error_boundary"]


class Client(Protocol):
    """What a transport reads of the :class:`~kombu_green.Connection` that owns it
    (kombu calls it the transport's client). Declared here, rather than importing
    the Connection, so transports depend on this interface and not the other way."""

    hostname: Optional[str]
    userid: Optional[str]
    password: Optional[str]
    virtual_host: str
    ssl: Any
    heartbeat: float
    connect_timeout: Optional[float]
    login_method: Optional[str]
    transport_options: Dict[str, Any]
    #: The failover URLs (``;``-separated alternates); empty for one broker.
    alt: List[str]
    #: The port given in the URL or keywords (None: the transport's default).
    _port: Optional[int]

    @property
    def port(self) -> Optional[int]: ...

F = TypeVar("F", bound=Callable[..., Any])


def error_boundary(translate: Callable[[BaseException, str], BaseException],
                   driver_errors: Tuple[Type[BaseException], ...]) -> Callable[[F], F]:
    """A decorator for a transport's methods: only kombu_green errors escape.

    Errors of the driver (``driver_errors``) become ``translate(exc, self.where)``,
    so every message names the broker as ``host:port``; the original error
    stays attached as ``__cause__``.
    """
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except driver_errors as exc:
                error = translate(exc, self.where)
                if error is exc:
                    raise
                raise error from exc
        return cast(F, guarded)
    return decorate


class QueueDeclareOk(NamedTuple):
    """What ``queue_declare`` reports: the (possibly generated) name and counts."""

    queue: str
    message_count: int
    consumer_count: int


@dataclass(frozen=True)
class Capabilities:
    """What a transport really does; the conformance suite checks each claim."""

    #: Exchange types routed as AMQP does.
    exchange_types: FrozenSet[str] = frozenset({"direct", "topic", "fanout", "headers"})
    #: Messages with a higher ``priority`` (0-9) are delivered first.
    priorities: bool = True
    #: Fanout messages reach bound queues even when nobody consumes them yet
    #: (False for Redis PUB/SUB: only subscribers present at publish time).
    durable_fanout: bool = True
    #: Exchanges can be bound to exchanges.
    exchange_to_exchange: bool = True
    #: The transport sends and checks heartbeats.
    heartbeats: bool = False
    #: Unacknowledged messages return to their queue when the channel closes.
    redelivers_on_close: bool = True
    #: Extra notes for documentation (free text, per transport).
    notes: Tuple[str, ...] = field(default_factory=tuple)


class Channel:
    """The AMQP verbs a transport's channel offers.

    Method names and arguments follow AMQP 0-9-1 as py-amqp spells them, so
    entities and messaging code never care which transport is underneath.
    """

    #: Consumer tags registered with ``no_ack=True`` (their messages need no ack).
    no_ack_consumers: Set[str]
    #: Event handlers, e.g. ``events['basic_return']`` for unroutable messages.
    events: Dict[str, Set[Callable[..., Any]]]
    #: The owning :class:`Connection` (kombu_green's, not the driver's).
    connection: Any

    def exchange_declare(self, exchange: str = "", type: str = "direct", passive: bool = False,
                         durable: bool = False, auto_delete: bool = True,
                         arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        raise NotImplementedError

    def exchange_delete(self, exchange: str = "", if_unused: bool = False, nowait: bool = False) -> None:
        raise NotImplementedError

    def exchange_bind(self, destination: str, source: str = "", routing_key: str = "",
                      nowait: bool = False, arguments: Optional[Dict[str, Any]] = None) -> None:
        raise NotImplementedError

    def exchange_unbind(self, destination: str, source: str = "", routing_key: str = "",
                        nowait: bool = False, arguments: Optional[Dict[str, Any]] = None) -> None:
        raise NotImplementedError

    def queue_declare(self, queue: str = "", passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = True,
                      arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> QueueDeclareOk:
        raise NotImplementedError

    def queue_bind(self, queue: str, exchange: str = "", routing_key: str = "",
                   arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        raise NotImplementedError

    def queue_unbind(self, queue: str, exchange: str = "", routing_key: str = "",
                     arguments: Optional[Dict[str, Any]] = None, nowait: bool = False) -> None:
        raise NotImplementedError

    def queue_purge(self, queue: str, nowait: bool = False) -> int:
        raise NotImplementedError

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False,
                     nowait: bool = False) -> int:
        raise NotImplementedError

    def prepare_message(self, body: bytes, priority: Optional[int] = None,
                        content_type: Optional[str] = None, content_encoding: Optional[str] = None,
                        headers: Optional[Dict[str, Any]] = None,
                        properties: Optional[Dict[str, Any]] = None) -> Any:
        raise NotImplementedError

    def basic_publish(self, message: Any, exchange: str = "", routing_key: str = "",
                      mandatory: bool = False, immediate: bool = False, **kwargs: Any) -> None:
        raise NotImplementedError

    def basic_consume(self, queue: str, no_ack: bool = False,
                      callback: Optional[Callable[["Message"], Any]] = None,
                      consumer_tag: Optional[str] = None, nowait: bool = False,
                      arguments: Optional[Dict[str, Any]] = None,
                      on_cancel: Optional[Callable[[str], Any]] = None) -> str:
        raise NotImplementedError

    def basic_cancel(self, consumer_tag: str, nowait: bool = False) -> None:
        raise NotImplementedError

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Optional["Message"]:
        raise NotImplementedError

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        raise NotImplementedError

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        raise NotImplementedError

    def basic_recover(self, requeue: bool = False) -> None:
        raise NotImplementedError

    def basic_qos(self, prefetch_size: int = 0, prefetch_count: int = 0,
                  a_global: bool = False) -> None:
        raise NotImplementedError

    def flow(self, active: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError


class Transport:
    """Connects a :class:`Connection` to one kind of broker."""

    #: Port used when the URL names none (None: the transport has no port).
    default_port: Optional[int] = None
    #: Connection keywords filled in when the user gives none (e.g. userid).
    default_connection_params: Dict[str, Any] = {}
    #: Errors after which reconnecting may help (what ``ensure`` retries).
    connection_errors: Tuple[Type[BaseException], ...] = (OperationalError,)
    #: Errors the broker raises for one channel's operation.
    channel_errors: Tuple[Type[BaseException], ...] = (ChannelError,)
    #: "amqp" for native AMQP brokers, otherwise the store's name.
    driver_type: str = ""
    driver_name: str = ""
    capabilities: Capabilities = Capabilities()
    #: True when the transport itself uses the Connection's ``;``-separated
    #: URLs (Redis Sentinel's list of sentinels) instead of failing over.
    handles_alternates: bool = False
    #: The transport options this transport reads, each with its check and
    #: default (see :mod:`kombu_green.options`); :attr:`options` holds them
    #: checked, plus any other ``transport_options`` given, unchanged.
    option_table: Mapping[str, Option] = {}
    #: How errors name this transport's options ("Redis transport option").
    option_label: str = "transport option"

    def __init__(self, client: Client, **kwargs: Any) -> None:
        self.client = client
        #: ``transport_options`` (and the URL's query options), checked when the
        #: transport is made: a bad value fails before any network traffic.
        self.options: Dict[str, Any] = read_options(self.option_label, self.given_options(),
                                                    self.option_table)

    def given_options(self) -> Mapping[str, Any]:
        """The options as given, before checking: the Connection's ``transport_options``."""
        return self.client.transport_options

    def establish_connection(self) -> Any:
        """Open the broker connection; return the driver's connection object."""
        raise NotImplementedError

    def close_connection(self, connection: Any) -> None:
        raise NotImplementedError

    def create_channel(self, connection: Any) -> Channel:
        raise NotImplementedError

    def drain_events(self, connection: Any, timeout: Optional[float] = None) -> Any:
        """Wait for one event on any channel and dispatch it (see Connection)."""
        raise NotImplementedError

    def verify_connection(self, connection: Any) -> bool:
        return connection is not None

    def heartbeat_check(self, connection: Any, rate: int = 2) -> None:
        """Transports without heartbeats have nothing to check."""

    def driver_version(self) -> str:
        return "N/A"
