"""redis-py, made cooperative without monkey-patching, and its errors translated.

redis-py opens its sockets through the standard library, which would block
the whole process in an unpatched program. :class:`GreenConnection` opens
gevent sockets (and gevent TLS) instead, and :class:`GreenPool` makes a
greenlet wait for a free connection instead of failing with "Too many
connections" when ``max_connections`` are busy. Everything else -- the
protocol, AUTH/SELECT on connect, scripts, pipelines -- is redis-py's own.
"""
from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Type

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from ... import exceptions as errors
from ... import green
from ..base import error_boundary
from ..tls import ssl_context

__all__ = ["CONNECTION_ERRORS", "GreenConnection", "GreenPool", "GreenSSLConnection",
           "discover_master", "translate", "translated"]


class GreenConnection(redis.Connection):
    """A redis-py connection whose socket is a gevent socket."""

    if TYPE_CHECKING:  # what this module calls of redis-py's, which leaves these unannotated
        def __init__(self, **kwargs: Any) -> None: ...
        def send_command(self, *args: Any, **kwargs: Any) -> None: ...
        def disconnect(self, *args: Any, **kwargs: Any) -> None: ...

    def _connect(self) -> Any:
        error: Optional[OSError] = None
        for family, kind, proto, _, address in socket.getaddrinfo(
                self.host, self.port, self.socket_type, socket.SOCK_STREAM):
            sock = green.cooperative_socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.socket_keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in (self.socket_keepalive_options or {}).items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                sock.settimeout(self.socket_connect_timeout)
                sock.connect(address)
                sock = self._secure(sock)  # the TLS handshake, too, within the connect timeout
                sock.settimeout(self.socket_timeout)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"cannot resolve {self.host}")

    def _secure(self, sock: Any) -> Any:
        return sock


class GreenSSLConnection(GreenConnection):
    """``rediss://``: the gevent socket wrapped in gevent TLS."""

    def __init__(self, ssl_options: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        self.ssl_options = dict(ssl_options or {})
        super().__init__(**kwargs)

    def _secure(self, sock: Any) -> Any:
        context, server_hostname = ssl_context(self.ssl_options, self.host)
        return context.wrap_socket(sock, server_hostname=server_hostname)


class GreenPool(redis.ConnectionPool):
    """A pool that waits (cooperatively) for a free connection at the limit.

    redis-py's own pool raises at ``max_connections``, and its blocking pool
    waits on a thread lock, which would freeze every greenlet. Here a
    greenlet that finds every connection busy waits for the next release,
    up to ``pool_timeout`` seconds.
    """

    def __init__(self, pool_timeout: Optional[float] = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_timeout = pool_timeout
        self._released = green.Bell()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        deadline = None if self.pool_timeout is None else time.monotonic() + self.pool_timeout
        while True:
            try:
                return super().get_connection(*args, **kwargs)
            except redis_errors.ConnectionError as exc:
                if "Too many connections" not in str(exc):
                    raise
            remaining = None if deadline is None else deadline - time.monotonic()
            if (remaining is not None and remaining <= 0) or not green.wait_any([self._released], remaining):
                raise errors.ConnectionLimitExceeded(
                    f"All {self.max_connections} Redis connections of this Connection stayed busy for "
                    f"{self.pool_timeout}s; raise transport_options['max_connections'] or "
                    "['pool_timeout']")

    def release(self, connection: Any) -> None:
        super().release(connection)
        self._released.ring()


def no_retries() -> Retry:
    """A retried write may run twice and a retried pop may lose its message:
    errors surface at once, and retrying is the caller's decision."""
    return Retry(NoBackoff(), 0)


def discover_master(sentinels: Sequence[Tuple[str, int]], master_name: str,
                    options: Dict[str, Any]) -> Tuple[str, int]:
    """Ask each sentinel in turn where ``master_name``'s master is."""
    failures: List[str] = []
    for host, port in sentinels:
        conn = GreenConnection(host=host, port=port, retry=no_retries(),
                               socket_timeout=options.get("socket_timeout") or 5.0,
                               socket_connect_timeout=options.get("socket_connect_timeout") or 5.0,
                               **(options.get("sentinel_kwargs") or {}))
        try:
            conn.send_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
            reply = conn.read_response()
        except (redis_errors.RedisError, OSError) as exc:
            failures.append(f"{host}:{port} ({exc})")
            continue
        finally:
            conn.disconnect()
        if reply:
            address, master_port = reply
            return (address.decode() if isinstance(address, bytes) else address), int(master_port)
        failures.append(f"{host}:{port} (does not know master {master_name!r})")
    raise errors.OperationalError(
        f"No Redis sentinel could name the master {master_name!r}: {'; '.join(failures)}. "
        "Check the sentinel addresses and transport_options['master_name']")


# -- errors -------------------------------------------------------------------

#: What ``ensure`` should retry: losing the server, in any form.
CONNECTION_ERRORS: Tuple[Type[BaseException], ...] = (
    errors.OperationalError, redis_errors.ConnectionError, redis_errors.TimeoutError,
    OSError, socket.timeout, ssl.SSLError,
)


def translate(exc: BaseException, where: str) -> BaseException:
    """The kombu_green error for a redis-py or socket error (names host:port, never the password)."""
    if isinstance(exc, errors.KombuError):
        return exc
    text = (str(exc).strip() or type(exc).__name__).rstrip(".")
    if isinstance(exc, (redis_errors.AuthenticationError, redis_errors.AuthenticationWrongNumberOfArgsError)):
        return errors.AccessRefused(
            f"Redis at {where} refused the credentials ({text}); check the user and password in the URL")
    if isinstance(exc, redis_errors.ResponseError) and text.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
        return errors.AccessRefused(f"Redis at {where} refused access: {text}")
    if isinstance(exc, redis_errors.ReadOnlyError):
        return errors.ConnectionClosed(f"Redis at {where} is a read-only replica now (failover?): {text}")
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__ or exc.__context__, ssl.SSLError) \
            or "[SSL" in text:
        return errors.OperationalError(
            f"TLS failed with Redis at {where}: {text}. Check that the port speaks TLS and that "
            "ssl_ca_certs names the CA that signed the server's certificate")
    if isinstance(exc, (redis_errors.TimeoutError, socket.timeout)):
        return errors.OperationalError(f"Timed out talking to Redis at {where}: {text}")
    if isinstance(exc, (redis_errors.ConnectionError, OSError)):
        return errors.OperationalError(
            f"Cannot reach Redis at {where}: {text}. Is it running, and are the host and port right?")
    if isinstance(exc, redis_errors.RedisError):
        return errors.ChannelError(f"Redis at {where} refused a command: {text}")
    return exc


#: Let only kombu_green errors out of a method of an object with ``where``.
translated = error_boundary(translate, (redis_errors.RedisError, OSError))
