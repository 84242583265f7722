"""A TCP proxy in front of a test broker: interruptions and lost connections on cue.

Each client connection gets two pump greenlets. The proxy can

* hold back a connection's replies from the request containing a marker on
  (:meth:`TcpProxy.hold_after`), until :meth:`TcpProxy.release` -- so a call
  is interrupted, deterministically, after the broker ran it and before the
  reply reaches the client;
* swallow them for good instead (:meth:`TcpProxy.lose_after`), as a network
  that dies at that moment would;
* hold every connection opened from now on (:meth:`TcpProxy.hold_new_connections`);
* cut every connection made so far (:meth:`TcpProxy.drop`); new ones are accepted;
* stand for a broker that is down (:meth:`TcpProxy.refuse`: nothing listens on
  its port, so connecting is refused) until :meth:`TcpProxy.listen`.
"""
from __future__ import annotations

import urllib.parse
from typing import Any, List, Optional

import gevent
import gevent.event
import gevent.server
import gevent.socket

__all__ = ["TcpProxy"]


class _Link:
    """One proxied connection: replies flow while ``flowing`` is set."""

    __slots__ = ("flowing", "deaf")

    def __init__(self, flowing: bool) -> None:
        self.flowing = gevent.event.Event()
        if flowing:
            self.flowing.set()
        self.deaf = False


class TcpProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        #: Set once a reply was swallowed (see :meth:`lose_after`).
        self.swallowed = gevent.event.Event()
        self._marker: Optional[bytes] = None
        self._lose = False
        self._holding_new = False
        self._links: List[_Link] = []
        self._handlers: List[gevent.Greenlet] = []
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port: int = self.server.server_port

    def url(self, url: str) -> str:
        """``url`` going through the proxy (same scheme, path and query)."""
        parts = urllib.parse.urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def hold_after(self, marker: bytes) -> None:
        """The next connection to send ``marker`` gets no replies until :meth:`release`."""
        self._marker, self._lose = marker, False

    def lose_after(self, marker: bytes) -> None:
        """The next connection to send ``marker`` never gets another reply."""
        self.swallowed.clear()
        self._marker, self._lose = marker, True

    def hold_new_connections(self) -> None:
        """Connections opened from now on get no reply until :meth:`release`."""
        self._holding_new = True

    def release(self) -> None:
        self._marker = None
        self._holding_new = False
        for link in self._links:
            link.flowing.set()

    def drop(self) -> None:
        """Cut every connection made through the proxy so far."""
        gevent.killall(list(self._handlers))

    def refuse(self) -> None:
        """Be a broker that is down: cut every connection and stop listening."""
        self.server.stop()
        self.drop()

    def listen(self) -> None:
        """Be back: listen on the same port again."""
        if not self.server.started:
            self.server = gevent.server.StreamServer(("127.0.0.1", self.port), self._handle)
            self.server.start()

    def close(self) -> None:
        self.release()
        self.server.stop()
        self.drop()

    def _handle(self, client: Any, address: Any) -> None:
        self._handlers.append(gevent.getcurrent())
        link = _Link(flowing=not self._holding_new)
        self._links.append(link)
        upstream = gevent.socket.create_connection(self.target)
        try:
            pumps = [gevent.spawn(self._pump, client, upstream, link, False),
                     gevent.spawn(self._pump, upstream, client, link, True)]
            try:
                gevent.joinall(pumps, count=1)
            finally:
                gevent.killall(pumps)
        finally:
            upstream.close()
            client.close()
            self._links.remove(link)
            self._handlers.remove(gevent.getcurrent())

    def _pump(self, source: Any, sink: Any, link: _Link, replies: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return
                if replies:
                    link.flowing.wait()
                    if link.deaf:
                        self.swallowed.set()
                        continue
                elif self._marker is not None and self._marker in data:
                    self._marker = None
                    if self._lose:
                        link.deaf = True
                    else:
                        link.flowing.clear()
                sink.sendall(data)
        except OSError:
            return
