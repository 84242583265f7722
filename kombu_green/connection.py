"""Connection: one link to a broker, its channels and its event loop.

``Connection(url)`` (alias ``BrokerConnection``) connects lazily: nothing
touches the network until a channel is needed. Everything that waits on
the broker -- ``connect()``, ``drain_events()`` -- blocks only the calling
greenlet; other greenlets keep running while it waits.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type, Union

from . import green
from .ensure import Resilient, failover_options
from .exceptions import InvalidURL, UnknownTransport
from .options import check_one, number, optional, whole
from .resource import ChannelPool, ConnectionPool, Lendable
from .retry import failover_cycle
from .transport import resolve_transport
from .transport.base import Channel, Transport
from .url import CONNECTION_OPTIONS, WHOLE_URL_SCHEMES, as_url, mask_url, parse_url

__all__ = ["BrokerConnection", "ChannelPool", "Connection", "ConnectionPool"]

logger = logging.getLogger(__name__)


DEFAULT_TRANSPORT = "amqp"

#: The Connection's own numeric settings, checked as every option is.
_CHECKS = {
    "port": optional(whole(1, 65535)),
    "heartbeat": optional(number(at_least=0)),
    "connect_timeout": optional(number()),  # None: wait as long as the OS does, as in kombu
}


class Connection(Resilient, Lendable):
    """A connection to a broker, described by a URL or by keywords.

    ``Connection("redis://:secret@localhost:6379/0")`` and
    ``Connection(hostname="localhost", transport="memory")`` both work;
    values in the URL win over keywords. ``;``-separated URLs are
    alternates for failover. Query options such as ``?heartbeat=30`` set the
    matching keyword; all others become ``transport_options``.
    """

    hostname: Optional[str] = None
    userid: Optional[str] = None
    password: Optional[str] = None
    virtual_host: str = "/"
    ssl: Any = False
    heartbeat: float = 0
    connect_timeout: Optional[float] = 5
    login_method: Optional[str] = None
    insist: bool = False
    failover_strategy: str = "round-robin"

    def __init__(self, hostname: Union[str, Sequence[str], None] = "localhost", userid: Optional[str] = None,
                 password: Optional[str] = None, virtual_host: Optional[str] = None,
                 port: Optional[int] = None, insist: bool = False, ssl: Any = False,
                 transport: Union[str, Type[Transport], None] = None,
                 connect_timeout: Optional[float] = 5, transport_options: Optional[Dict[str, Any]] = None,
                 login_method: Optional[str] = None, uri_prefix: Optional[str] = None,
                 heartbeat: float = 0, failover_strategy: str = "round-robin",
                 alternates: Optional[Iterable[str]] = None, **kwargs: Any) -> None:
        #: Every URL to try, in order (failover); empty for a single broker.
        self.alt: List[str] = _alternates(hostname, alternates)
        url: Optional[str] = self.alt[0] if self.alt and not _is_single(hostname) else \
            (hostname if isinstance(hostname, str) else None)
        self.transport_options: Dict[str, Any] = dict(transport_options or {})
        #: The keywords given, to which each failover URL's own values are applied.
        self._keywords: Dict[str, Any] = dict(
            userid=userid, password=password, virtual_host=virtual_host,
            port=port, insist=insist, ssl=ssl, transport=transport,
            connect_timeout=connect_timeout, login_method=login_method, heartbeat=heartbeat,
            failover_strategy=failover_strategy)
        self._uri_prefix = uri_prefix
        self.extra_options: Dict[str, Any] = kwargs
        self._configure(url)
        cycle = failover_cycle(self.failover_strategy, self.alt)  # an unknown strategy fails here
        self.cycle = cycle if len(self.alt) > 1 else None
        self.declared_entities: Set[Any] = set()
        self._transport: Optional[Transport] = None
        self._connection: Any = None
        self._default_channel: Optional[Channel] = None
        self._opening = green.Lock()
        self._reviving = green.Lock()
        self._closed = False
        #: Set by close(): a connection closed on purpose is not revived by ensure().
        self._released = False
        #: Bumped at each new broker connection; ensure() uses it so greenlets
        #: failing together reconnect once.
        self._generation = 0
        #: Producers and Consumers built on this Connection (not on a channel):
        #: revived together after a reconnection.
        self._attached: "weakref.WeakSet[Any]" = weakref.WeakSet()
        #: Consumers made before the Connection connected: they attach (and declare
        #: their queues) when it does, so they are held until then.
        self._pending: List[Any] = []

    # -- parameters --------------------------------------------------------

    def _configure(self, url: Optional[str]) -> None:
        #: The URL (or host) in use: one of ``alt`` when failing over.
        self.current_url = url
        params: Dict[str, Any] = dict(self._keywords, hostname=url)
        if url and "://" in url:
            params.update(self._params_from_url(url, self._uri_prefix))
        self._apply(params, self.extra_options)

    def _params_from_url(self, url: str, uri_prefix: Optional[str]) -> Dict[str, Any]:
        scheme, _, rest = url.partition("://")
        if scheme in WHOLE_URL_SCHEMES:
            return {"transport": scheme, "hostname": url}
        if "+" in scheme:  # "transport+driver://": kombu's spelling for some transports
            uri_prefix, _, scheme = scheme.partition("+")
            url = f"{scheme}://{rest}"
        parsed = parse_url(url)
        params = {k: v for k, v in parsed._asdict().items() if v is not None and k != "options"}
        params.setdefault("hostname", "localhost")
        if uri_prefix:
            params["transport"] = uri_prefix
            params["hostname"] = url  # the driver parses its own URL
        for key, value in parsed.options.items():
            if key in CONNECTION_OPTIONS:
                params[key] = value
            else:
                self.transport_options.setdefault(key, value)
        return params

    def _apply(self, params: Dict[str, Any], extra: Dict[str, Any]) -> None:
        self.transport_cls = params["transport"] or DEFAULT_TRANSPORT
        self.hostname = params["hostname"]
        self.userid = params["userid"]
        self.password = params["password"]
        self.virtual_host = params["virtual_host"] or "/"
        self.insist = params["insist"]
        self.ssl = params["ssl"]
        self.login_method = params["login_method"]
        self.failover_strategy = params["failover_strategy"]
        self.extra_options = extra
        #: Resolved now so an unknown transport fails here, not at first use.
        try:
            self.transport_class = resolve_transport(self.transport_cls)
        except UnknownTransport as exc:
            if params["transport"]:
                raise
            raise UnknownTransport(
                f"{exc} No transport was given, so kombu's default {DEFAULT_TRANSPORT!r} was "
                "used; pass a URL such as 'memory://' or transport='memory'.") from None
        hostname = self.hostname or ""
        where = mask_url(hostname) if "://" in hostname else f"{self.scheme}://{hostname}"

        def checked(name: str) -> Any:
            return check_one("Connection option", name, params[name], _CHECKS[name], where, InvalidURL)
        self._port: Optional[int] = checked("port")
        self.heartbeat = checked("heartbeat") or 0
        self.connect_timeout = checked("connect_timeout")
        defaults = self.transport_class.default_connection_params
        self.userid = self.userid or defaults.get("userid")
        self.password = self.password or defaults.get("password")

    @property
    def port(self) -> Optional[int]:
        return self._port or self.transport_class.default_port

    @property
    def transport(self) -> Transport:
        """The transport instance (created on first use, not connected)."""
        if self._transport is None:
            self._transport = self.transport_class(client=self, **self.transport_options)
        return self._transport

    @property
    def scheme(self) -> str:
        if isinstance(self.transport_cls, str):
            return self.transport_cls
        return getattr(self.transport_cls, "driver_name", "") or self.transport_cls.__name__.lower()

    # -- connecting --------------------------------------------------------

    @property
    def connection(self) -> Any:
        """The driver-level connection, established on first access."""
        connection = self._connection
        if connection is not None and self.transport.verify_connection(connection):
            return connection
        with self._opening:  # greenlets arriving together share one connection
            if self._connection is None or not self.transport.verify_connection(self._connection):
                # A link that broke (rather than one closed on purpose) is
                # replaced, and what was built on it follows to the new one.
                lost = self._connection is not None or (self._generation > 0 and not self._released)
                if self._connection is not None:
                    self.collect()
                self._connection = self.transport.establish_connection()
                self._closed = self._released = False
                self._generation += 1
                if lost or self._pending:  # consumers made before it connected attach now
                    self.revive_attached()
            return self._connection

    def connect(self) -> "Connection":
        """Connect now (instead of lazily); returns self."""
        self.connection  # noqa: B018 - property access connects
        return self

    @property
    def connected(self) -> bool:
        return self._connection is not None and self.transport.verify_connection(self._connection)

    def channel(self) -> Channel:
        """A new channel on this connection (connecting first if needed)."""
        return self.transport.create_channel(self.connection)

    @property
    def default_channel(self) -> Channel:
        """A channel owned by the connection, reused by Producers/Consumers given it."""
        channel = self._default_channel
        if channel is not None and channel.is_open:
            return channel
        with self._opening:  # greenlets arriving together share one channel
            channel = self._default_channel
            if channel is None or not channel.is_open:
                if not self.connected:
                    self.ensure_connection(**failover_options(self.transport_options, self._rounds()))
                channel = self._default_channel = self.channel()
            return channel

    def drain_events(self, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Wait for one event on any channel of this connection and dispatch it.

        On virtual transports one event is one delivered message. Only the
        calling greenlet waits (through the gevent hub). Raises
        :class:`socket.timeout` if nothing arrives within ``timeout`` seconds
        (``None`` waits forever). A loop that always finds work ready still
        yields to the hub every few milliseconds, so it never starves others.
        """
        result = self.transport.drain_events(self.connection, timeout=timeout, **kwargs)
        green.cooperate()
        return result

    def heartbeat_check(self, rate: int = 2) -> None:
        return self.transport.heartbeat_check(self.connection, rate=rate)

    @property
    def supports_heartbeats(self) -> bool:
        return bool(self.transport.capabilities.heartbeats)

    def close(self) -> None:
        """Close channels (unacked messages go back to their queues) and disconnect.

        The socket is closed whatever happens: if the broker went away first,
        the errors of saying goodbye to it are ignored, as in kombu (messages
        a virtual transport could not hand back are kept for the next
        connection).
        """
        channel, self._default_channel = self._default_channel, None
        connection, self._connection = self._connection, None
        self._closed = self._released = True
        self.declared_entities.clear()
        self._pending.clear()
        if self._transport is None:
            return
        errors = self._transport.connection_errors
        try:
            if channel is not None:
                try:
                    channel.close()
                except errors as exc:
                    logger.debug("ignored while closing %r: %r", self, exc)
        finally:
            if connection is not None:
                try:
                    self._transport.close_connection(connection)
                except errors as exc:
                    logger.debug("ignored while closing %r: %r", self, exc)

    def collect(self) -> None:
        """Forget a connection that failed, without raising.

        Cleanup that needs the broker is attempted and its errors ignored;
        messages that could not be handed back are kept by the transport and
        returned on the next connection. Unlike :meth:`close`, the
        Connection may be revived by :meth:`ensure`.
        """
        channel, self._default_channel = self._default_channel, None
        connection, self._connection = self._connection, None
        self.declared_entities.clear()
        for cleanup in (getattr(channel, "close", None),
                        connection is not None and self._transport is not None
                        and (lambda: self._transport.close_connection(connection))):
            if cleanup:
                try:
                    cleanup()
                except Exception as exc:  # noqa: BLE001 - the connection is known to be broken
                    logger.debug("ignored while collecting %r: %r", self, exc)

    def __enter__(self) -> "Connection":
        return self

    # -- errors ------------------------------------------------------------

    @property
    def connection_errors(self) -> Tuple[Type[BaseException], ...]:
        """Errors after which reconnecting may help (what ``ensure`` retries)."""
        return self.transport.connection_errors

    @property
    def channel_errors(self) -> Tuple[Type[BaseException], ...]:
        return self.transport.channel_errors

    recoverable_connection_errors = connection_errors
    recoverable_channel_errors = channel_errors

    # -- helpers -----------------------------------------------------------

    def Producer(self, channel: Optional[Channel] = None, *args: Any, **kwargs: Any) -> Any:
        from .messaging import Producer
        return Producer(channel or self, *args, **kwargs)

    def Consumer(self, queues: Any = None, channel: Optional[Channel] = None, *args: Any, **kwargs: Any) -> Any:
        from .messaging import Consumer
        return Consumer(channel or self, queues, *args, **kwargs)

    def Pool(self, limit: Optional[int] = None, **kwargs: Any) -> ConnectionPool:
        """A pool of connections like this one (see :mod:`kombu_green.resource`)."""
        return ConnectionPool(self, limit=limit, **kwargs)

    def ChannelPool(self, limit: Optional[int] = None, **kwargs: Any) -> ChannelPool:
        """A pool of channels on this connection (see :mod:`kombu_green.resource`)."""
        return ChannelPool(self, limit=limit, **kwargs)

    def SimpleQueue(self, name: Any, no_ack: Optional[bool] = None, queue_opts: Optional[Dict[str, Any]] = None,
                    queue_args: Optional[Dict[str, Any]] = None, exchange_opts: Optional[Dict[str, Any]] = None,
                    channel: Optional[Channel] = None, **kwargs: Any) -> Any:
        """A persistent FIFO queue with a ``Queue.Queue``-like API (see :mod:`kombu_green.simple`)."""
        from .simple import SimpleQueue
        return SimpleQueue(channel or self, name, no_ack, queue_opts, queue_args, exchange_opts, **kwargs)

    def SimpleBuffer(self, name: Any, no_ack: Optional[bool] = None, queue_opts: Optional[Dict[str, Any]] = None,
                     queue_args: Optional[Dict[str, Any]] = None, exchange_opts: Optional[Dict[str, Any]] = None,
                     channel: Optional[Channel] = None, **kwargs: Any) -> Any:
        """Like :meth:`SimpleQueue`, but transient and without acks (see :mod:`kombu_green.simple`)."""
        from .simple import SimpleBuffer
        return SimpleBuffer(channel or self, name, no_ack, queue_opts, queue_args, exchange_opts, **kwargs)

    def clone(self, **kwargs: Any) -> "Connection":
        """A new, unconnected Connection with the same settings."""
        return type(self)(**dict(self._rebuild_params(), **kwargs))

    def _rebuild_params(self) -> Dict[str, Any]:
        """What re-creates this Connection (clone, pickle). With failover URLs:
        the URLs and the keywords first given, not the values of the URL in use."""
        params = self.info(include_password=True)
        if len(self.alt) > 1:
            params.update(self._keywords, hostname=list(self.alt), alternates=None)
        return params

    def info(self, include_password: bool = False) -> Dict[str, Any]:
        return dict(
            hostname=self.hostname, userid=self.userid,
            password=self.password if include_password else ("**" if self.password else None),
            virtual_host=self.virtual_host, port=self._port, insist=self.insist, ssl=self.ssl,
            transport=self.transport_cls, connect_timeout=self.connect_timeout,
            transport_options=dict(self.transport_options), login_method=self.login_method,
            heartbeat=self.heartbeat, failover_strategy=self.failover_strategy,
            alternates=list(self.alt))

    def as_uri(self, include_password: bool = False, mask: str = "**") -> str:
        """The connection's URL; the password is masked unless asked for."""
        if self.hostname and "://" in self.hostname:  # a URL kept whole for its driver
            from .url import mask_url
            return self.hostname if include_password else mask_url(self.hostname, mask)
        return as_url(self.scheme, self.hostname, self.port,
                      self.userid, self.password, self.virtual_host, include_password, mask)

    def __reduce__(self) -> Any:
        return (_rebuild_connection, (type(self), self._rebuild_params()))

    def __repr__(self) -> str:
        return f"<Connection: {self.as_uri()} at {id(self):#x}>"


def _is_single(hostname: Union[str, Sequence[str], None]) -> bool:
    return isinstance(hostname, str) and ";" not in hostname


def _alternates(hostname: Union[str, Sequence[str], None], extra: Optional[Iterable[str]]) -> List[str]:
    """URLs given as a list or ";"-separated, then ``alternates`` (no repeats)."""
    urls = hostname.split(";") if isinstance(hostname, str) and ";" in hostname else \
        ([] if _is_single(hostname) or hostname is None else list(hostname))
    found: List[str] = []
    for candidate in [*urls, *(extra or ())]:
        candidate = candidate.strip()
        if candidate and candidate not in found:
            found.append(candidate)
    return found


def _rebuild_connection(cls: Type[Connection], params: Dict[str, Any]) -> Connection:
    return cls(**params)


BrokerConnection = Connection
