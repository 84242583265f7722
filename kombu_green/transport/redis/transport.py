"""``redis://``, ``rediss://`` and ``sentinel://``: Redis as a message broker.

URL: ``redis://[[user]:password@]host[:port][/db]`` (db 0 by default);
``rediss://`` adds TLS (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` in the query or ``ssl={...}``); ``sentinel://host:26379``
-- several separated by ``;`` -- asks the sentinels for the master named by
``master_name``.

Transport options (``transport_options={...}`` or the URL query), kombu's
names and defaults where kombu has them:

* ``visibility_timeout`` (3600 s) -- an unacked message whose consumer has
  not acked it for this long goes back to its queue, marked redelivered.
  Make it longer than your longest task.
* ``unacked_restore_interval`` (a quarter of the visibility timeout, at
  most 60 s) and ``unacked_mutex_expire`` (300 s): how often each
  connection looks for expired leases, and how long the restore lock lives.
* ``priority_steps`` ([0, 3, 6, 9]) -- one sub-queue per step; priority 9
  is delivered first, as in AMQP.
* ``global_keyprefix`` ('') -- put in front of every key and channel.
* ``max_connections`` (10) and ``pool_timeout`` (10 s) -- command
  connections per Connection; a greenlet waits for a free one.
* ``socket_timeout``, ``socket_connect_timeout`` (the Connection's
  ``connect_timeout``), ``socket_keepalive``, ``socket_keepalive_options``,
  ``health_check_interval`` (25 s), ``client_name`` -- handed to redis-py.
* ``master_name``, ``sentinel_kwargs`` -- for ``sentinel://``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import urlsplit

import redis

from ...exceptions import ConfigurationError
from ...options import Option, flag, mapping, number, optional, text, whole, whole_list
from .. import base
from ..tls import ssl_options
from ..virtual import Transport as VirtualTransport
from ..virtual.payload import MAX_PRIORITY
from .client import (
    CONNECTION_ERRORS,
    GreenConnection,
    GreenPool,
    GreenSSLConnection,
    discover_master,
    no_retries,
    translate,
)
from .keys import DEFAULT_PRIORITY_STEPS, Keys
from .leases import DEFAULT_MUTEX_EXPIRE, DEFAULT_VISIBILITY_TIMEOUT, Leases
from .store import RedisStore

__all__ = ["SSLTransport", "SentinelTransport", "Transport"]

_PASSED_THROUGH = ("socket_timeout", "socket_keepalive", "socket_keepalive_options", "client_name")


class Transport(VirtualTransport):
    """Redis lists as queues, with AMQP routing, prefetch and acks on top."""

    default_port = 6379
    driver_type = driver_name = "redis"
    connection_errors = CONNECTION_ERRORS
    #: TLS even without ``ssl=`` (``rediss://``).
    tls_by_default = False
    capabilities = base.Capabilities(
        durable_fanout=False,
        notes=("fanout exchanges deliver through PUB/SUB: only queues being consumed when a "
               "message is published receive it (kombu's behaviour)",
               "per-message expiration and queue x-expires are honoured; x-message-ttl, "
               "x-max-length and dead-lettering are not"),
    )

    option_label = "Redis transport option"
    option_table = {
        "visibility_timeout": Option(number(), DEFAULT_VISIBILITY_TIMEOUT,
                                     "seconds before an unacked message goes back to its queue"),
        "unacked_restore_interval": Option(optional(number()), None,
                                           "seconds between looks for expired leases"),
        "unacked_mutex_expire": Option(number(), DEFAULT_MUTEX_EXPIRE, "seconds the restore lock lives"),
        "priority_steps": Option(whole_list(0, MAX_PRIORITY), list(DEFAULT_PRIORITY_STEPS),
                                 "one sub-queue per step"),
        "global_keyprefix": Option(text, "", "put in front of every key and channel"),
        "max_connections": Option(whole(1, 100_000, "connections"), 10, "command connections per Connection"),
        "pool_timeout": Option(optional(number()), 10.0, "seconds a greenlet waits for a free connection"),
        "socket_timeout": Option(optional(number()), None, "seconds a command may take"),
        "socket_connect_timeout": Option(optional(number()), None,
                                         "seconds to connect (default: the Connection's connect_timeout)"),
        "socket_keepalive": Option(flag, None, "TCP keep-alive"),
        "socket_keepalive_options": Option(mapping, None, "TCP keep-alive settings"),
        "health_check_interval": Option(number(at_least=0), 25.0, "seconds idle before a connection is pinged"),
        "client_name": Option(text, None, "CLIENT SETNAME"),
        "master_name": Option(text, None, "sentinel://: the master's name"),
        "sentinel_kwargs": Option(mapping, None, "sentinel://: keywords for the sentinel connections"),
    }

    def driver_version(self) -> str:
        return redis.__version__

    # -- configuration ------------------------------------------------------------

    def _db(self) -> int:
        vhost = (self.client.virtual_host or "/").strip("/") or "0"
        try:
            return int(vhost)
        except ValueError:
            raise ConfigurationError(
                f"Redis database must be a number (redis://host:6379/0), not {vhost!r}") from None

    def _server(self) -> Tuple[str, int]:
        return self.client.hostname or "localhost", int(self.client.port or self.default_port)

    def _connection_kwargs(self) -> Tuple[type, Dict[str, Any]]:
        options, client = self.options, self.client
        host, port = self._server()
        kwargs: Dict[str, Any] = {
            "host": host, "port": port, "db": self._db(),
            "username": client.userid or None, "password": client.password or None,
            "socket_connect_timeout": options["socket_connect_timeout"] or client.connect_timeout,
            "health_check_interval": options["health_check_interval"],
            "retry": no_retries(),
            # RESP2: PUB/SUB messages arrive as plain replies on every server version.
            "protocol": 2,
        }
        kwargs.update({key: options[key] for key in _PASSED_THROUGH if options[key] is not None})
        tls = ssl_options(client.ssl or self.tls_by_default, options)
        if tls is False:
            return GreenConnection, kwargs
        return GreenSSLConnection, {**kwargs, "ssl_options": tls}

    def _keys(self) -> Keys:
        return Keys(self.options["global_keyprefix"], self._db(), self.options["priority_steps"])

    # -- connecting ---------------------------------------------------------------

    def create_store(self) -> RedisStore:
        connection_class, kwargs = self._connection_kwargs()
        where = f"{kwargs['host']}:{kwargs['port']}"
        pool = GreenPool(connection_class=connection_class,
                         max_connections=self.options["max_connections"],
                         pool_timeout=self.options["pool_timeout"], **kwargs)
        client = redis.Redis(connection_pool=pool)
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            pool.disconnect()
            raise translate(exc, where) from exc
        leases = Leases(client, self._keys(),
                        visibility_timeout=self.options["visibility_timeout"],
                        restore_interval=self.options["unacked_restore_interval"],
                        mutex_expire=self.options["unacked_mutex_expire"])
        return RedisStore(client, leases.keys, where, self._dedicated(connection_class, kwargs), leases)

    @staticmethod
    def _dedicated(connection_class: type, kwargs: Dict[str, Any]) -> Callable[[], Any]:
        """Connections that wait for long (blocking pops, PUB/SUB): no read
        timeout, and no health-check pings that would interleave with the wait."""
        def connect() -> Any:
            conn = connection_class(**{**kwargs, "socket_timeout": None, "health_check_interval": 0})
            conn.connect()
            return conn
        return connect


class SSLTransport(Transport):
    """``rediss://``: Redis over TLS (verified against the system CAs by default)."""

    tls_by_default = True


class SentinelTransport(Transport):
    """``sentinel://``: find the current master through Redis Sentinel."""

    default_port = 26379
    #: The ``;``-separated URLs are the sentinels, asked in turn here:
    #: Connection does not fail over between them itself.
    handles_alternates = True

    def _sentinels(self) -> List[Tuple[str, int]]:
        found: List[Tuple[str, int]] = []
        for url in self.client.alt or []:
            parts = urlsplit(url)
            if parts.hostname:
                found.append((parts.hostname, parts.port or self.default_port))
        return found or [(self.client.hostname or "localhost", int(self.client.port or self.default_port))]

    def _server(self) -> Tuple[str, int]:
        master_name = self.options["master_name"]
        if not master_name:
            raise ConfigurationError(
                "sentinel:// needs the master's name: transport_options={'master_name': 'mymaster'} "
                "or ?master_name=mymaster in the URL")
        return discover_master(self._sentinels(), str(master_name), self.options)
