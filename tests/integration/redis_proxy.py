"""A TCP proxy in front of the test Redis, for interruptions and lost connections."""
from __future__ import annotations

import urllib.parse
from typing import Any, List

import gevent
import gevent.event
import gevent.server
import gevent.socket

from kombu_green import Connection

from .redis_keyspace import Keyspace


class Proxy:
    """A TCP proxy in front of Redis that can hold back the reply to the next script
    (EVALSHA) a client sends -- so a call can be interrupted, deterministically, after
    Redis ran its command and before the reply reaches it -- and drop every connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.armed = False
        self.holding_new = False
        self._holds: List[gevent.event.Event] = []
        self._handlers: List[gevent.Greenlet] = []
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def hold_next_script_reply(self) -> None:
        self.armed = True

    def hold_new_connections(self) -> None:
        """Connections opened from now on get no reply until :meth:`release`."""
        self.holding_new = True

    def release(self) -> None:
        self.armed = self.holding_new = False
        for hold in self._holds:
            hold.set()

    def drop(self) -> None:
        """Cut every connection made through the proxy so far (new ones are accepted)."""
        gevent.killall(self._handlers)

    def _handle(self, client: Any, address: Any) -> None:
        self._handlers.append(gevent.getcurrent())
        released = gevent.event.Event()
        if not self.holding_new:
            released.set()
        self._holds.append(released)
        upstream = gevent.socket.create_connection(self.target)
        try:
            pumps = [gevent.spawn(self._pump, client, upstream, released, False),
                     gevent.spawn(self._pump, upstream, client, released, True)]
            try:
                gevent.joinall(pumps, count=1)
            finally:
                gevent.killall(pumps)
        finally:
            upstream.close()
            client.close()

    def _pump(self, source: Any, sink: Any, released: gevent.event.Event, replies: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return
                if replies:
                    released.wait()
                elif self.armed and b"EVALSHA" in data:
                    self.armed = False
                    released.clear()  # this connection's replies wait from now on
                sink.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.release()
        self.server.stop()
        gevent.killall(self._handlers)


def through(space: Keyspace, proxy: Proxy, **options: Any) -> Connection:
    parsed = urllib.parse.urlsplit(space.url)
    url = urllib.parse.urlunsplit(parsed._replace(netloc=f"127.0.0.1:{proxy.port}"))
    return Connection(url, transport_options=space.options(**options))
