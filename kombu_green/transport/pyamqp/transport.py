"""``amqp://``, ``pyamqp://`` and ``amqps://``: RabbitMQ (any AMQP 0-9-1 broker).

The broker does the routing, acknowledgements and prefetch itself; this
transport only carries the verbs (see :mod:`.channel`) and waits for
deliveries through the hub (see :mod:`.connection`).

Transport options (``transport_options={...}`` or URL query):

* ``confirm_publish`` -- publisher confirms: ``publish`` returns once the
  broker has taken the message, and raises ``MessageNacked`` or
  ``PublishTimeout`` otherwise.
* ``confirm_timeout`` -- seconds to wait for a confirm (default 30); a
  ``timeout=`` given to ``publish`` wins.
* ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
  ``ssl_server_hostname`` -- TLS options, for ``amqps://`` URLs.
* ``client_properties``, ``frame_max``, ``channel_max``, ``socket_settings``
  -- handed to py-amqp.
"""
from __future__ import annotations

import socket
import time
from typing import Any, Optional

import amqp

from ... import green
from ...options import Option, flag, mapping, number, optional, whole
from .. import base
from ..tls import ssl_options
from .channel import Channel
from .connection import GreenConnection
from .errors import CHANNEL_ERRORS, CONNECTION_ERRORS, translate

__all__ = ["SSLTransport", "Transport"]

DEFAULT_CONFIRM_TIMEOUT = 30.0


class Transport(base.Transport):
    """Native AMQP 0-9-1 over py-amqp, cooperative through gevent sockets."""

    default_port = 5672
    default_ssl_port = 5671
    default_connection_params = {"userid": "guest", "password": "guest"}
    connection_errors = CONNECTION_ERRORS
    channel_errors = CHANNEL_ERRORS
    driver_type = "amqp"
    driver_name = "py-amqp"
    capabilities = base.Capabilities(
        heartbeats=True,
        notes=("priorities need the queue argument x-max-priority (Queue(max_priority=...))",),
    )

    option_label = "AMQP transport option"
    option_table = {
        "confirm_publish": Option(flag, False, "wait for the broker's confirm of every publish"),
        "confirm_timeout": Option(optional(number(at_least=0)), DEFAULT_CONFIRM_TIMEOUT,
                                  "seconds to wait for a confirm (0 or none: no limit)"),
        "client_properties": Option(mapping, None, "extra client properties sent to the broker"),
        "frame_max": Option(whole(4096, 2 ** 31 - 1, "bytes"), None, "largest frame to negotiate"),
        "channel_max": Option(whole(1, 65535, "channels"), None, "most channels to negotiate"),
        "socket_settings": Option(mapping, None, "TCP socket options, {option: value}"),
    }

    # -- connecting -----------------------------------------------------------

    def _use_ssl(self) -> Any:
        return self.client.ssl

    def _address(self) -> str:
        port = self.client._port or (self.default_ssl_port if self._use_ssl() else self.default_port)
        host = self.client.hostname or "localhost"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _ssl_options(self) -> Any:
        """``ssl=True`` or a dict, plus ``ssl_*`` URL query options (e.g. ``ssl_ca_certs``)."""
        return ssl_options(self._use_ssl(), self.options)

    def establish_connection(self) -> GreenConnection:
        client, options = self.client, self.options
        where = self._address()
        conn = GreenConnection(
            host=where, userid=client.userid, password=client.password,
            virtual_host=client.virtual_host or "/", login_method=client.login_method,
            ssl=self._ssl_options(), heartbeat=int(client.heartbeat or 0),
            connect_timeout=client.connect_timeout,
            client_properties=options["client_properties"],
            frame_max=options["frame_max"], channel_max=options["channel_max"],
            socket_settings=options["socket_settings"],
            client=client, where=where,
            publisher_confirms=options["confirm_publish"],
            confirm_timeout=options["confirm_timeout"] or None)
        try:
            conn.connect()
        except BaseException as exc:
            conn.close()
            error = translate(exc, where)
            if error is exc:
                raise
            raise error from exc
        return conn

    def close_connection(self, connection: GreenConnection) -> None:
        connection.close()

    def verify_connection(self, connection: Any) -> bool:
        return connection is not None and connection.failure is None and bool(connection.connected)

    def create_channel(self, connection: GreenConnection) -> Channel:
        connection.raise_failure()
        try:
            channel: Channel = connection.channel()
        except Exception as exc:
            error = translate(exc, connection.where)
            if error is exc:
                raise
            raise error from exc
        return channel

    # -- waiting ----------------------------------------------------------------

    def drain_events(self, connection: GreenConnection, timeout: Optional[float] = None) -> None:
        """Wait for deliveries on every channel of ``connection``; run them all.

        Raises :class:`socket.timeout` when ``timeout`` seconds pass with
        nothing to do, and the broker's error for a channel when one closed
        while nobody was waiting on it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            connection.raise_failure()
            self._raise_channel_errors(connection)
            if connection.deliveries and self._run_deliveries(connection):
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise socket.timeout("timed out")
            connection.delivered.wait(remaining)

    @staticmethod
    def _raise_channel_errors(connection: GreenConnection) -> None:
        errored = connection.errored_channels
        while errored:
            errored.popleft().raise_pending()

    @staticmethod
    def _run_deliveries(connection: GreenConnection) -> int:
        """Run what is queued now (not what callbacks cause); return how many ran."""
        deliveries, ran = connection.deliveries, 0
        for _ in range(len(deliveries)):
            if not deliveries:
                break  # a callback drained them meanwhile
            channel, generation, function, argument = deliveries.popleft()
            if channel.generation != generation or not channel.is_open:
                continue  # its channel closed: the broker delivers it again
            ran += 1
            function(argument)
            green.cooperate()
        return ran

    def heartbeat_check(self, connection: Any, rate: int = 2) -> None:
        """Heartbeats run in their own greenlet; kept so kombu-style loops still work."""
        if connection is not None:
            connection.raise_failure()

    def driver_version(self) -> str:
        return str(amqp.__version__)


class SSLTransport(Transport):
    """``amqps://``: AMQP over TLS (port 5671 unless the URL says otherwise)."""

    default_port = 5671

    def _use_ssl(self) -> Any:
        return self.client.ssl or True
