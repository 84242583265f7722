"""Where the test beanstalkd is, queue names of each test's own, and a raw
greenstalk client to look at the server.

``scripts/brokers.sh start beanstalkd`` starts beanstalkd on
127.0.0.1:11300; ``KOMBU_GREEN_BEANSTALK_URL`` points the suite elsewhere.
Every test names its queues with a unique prefix and drops their tubes
afterwards (never the whole server: it may be shared).
"""
from __future__ import annotations

import os
import socket
import urllib.parse
import uuid
from typing import Any, Callable, List, Optional, Tuple

import gevent
import gevent.event
import gevent.server
import gevent.socket
import greenstalk

from kombu_green import Connection
from kombu_green.transport.beanstalk.config import tube_name

from ..conformance import WAIT
from ..conftest import require_server

BEANSTALK_URL = os.environ.get("KOMBU_GREEN_BEANSTALK_URL", "beanstalk://127.0.0.1:11300")


def server() -> Tuple[str, int]:
    parsed = urllib.parse.urlsplit(BEANSTALK_URL)
    return parsed.hostname or "127.0.0.1", parsed.port or 11300


def beanstalk_url() -> str:
    """The test server's URL; skips (locally) or fails (in CI) when it is down."""
    host, port = server()
    require_server("beanstalkd", host, port)
    return BEANSTALK_URL


def raw_client() -> "greenstalk.Client[bytes]":
    """A plain greenstalk client, for short looks at the server (its socket is
    gevent's only when the test run is patched)."""
    return greenstalk.Client(server(), encoding=None)


class Space:
    """Unique queue names for one test, and looks at their tubes."""

    def __init__(self) -> None:
        self.url = beanstalk_url()
        self.prefix = f"kgt-{uuid.uuid4().hex[:10]}"
        self.names: List[str] = []

    def name(self, suffix: str = "q") -> str:
        name = f"{self.prefix}-{suffix}"
        self.names.append(name)
        return name

    def connect(self, **options: Any) -> Connection:
        return Connection(self.url, transport_options=options)

    def stats(self, name: str) -> Optional[dict]:
        """``stats-tube`` of queue ``name``'s tube; None when the tube does not exist."""
        with raw_client() as client:
            try:
                return dict(client.stats_tube(tube_name(name)))
            except greenstalk.NotFoundError:
                return None

    def count(self, name: str, what: str) -> int:
        """``current-jobs-<what>`` (ready, reserved, buried...) or ``current-<what>``."""
        stats = self.stats(name) or {}
        return int(stats.get(f"current-jobs-{what}", stats.get(f"current-{what}", 0)))

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Poll ``condition`` (a look at the server) until it holds; fail after ``timeout``."""
        with gevent.Timeout(timeout, AssertionError(f"{what}: not within {timeout}s")):
            while not condition():
                gevent.sleep(0.02)

    def drop_all(self) -> None:
        """Delete every ready, delayed and buried job of this test's tubes."""
        with raw_client() as client:
            for name in self.names:
                client.use(tube_name(name))
                for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                    while True:
                        try:
                            client.delete(peek())
                        except greenstalk.NotFoundError:
                            break


def free_port() -> int:
    """A local port nothing listens on (it was free a moment ago)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
