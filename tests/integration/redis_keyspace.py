"""A key prefix of its own for each Redis test, a plain client to look inside,
and connections through a TCP proxy.

Every test connects with ``global_keyprefix`` set to a unique prefix, so
its queues, bindings and -- most important for the visibility-timeout
tests -- its unacked records are its own: a restorer with a short
visibility timeout never touches another test's messages, and another
run on the same server never sees ours. Afterwards every key under the
prefix is deleted (never FLUSHDB: the server may be shared).
"""
from __future__ import annotations

import contextlib
import json
import urllib.parse
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import gevent
import redis

from kombu_green import Connection

from ..conformance import WAIT
from .redis_support import redis_url

#: Where the transport puts priority step ``n`` of queue ``q``: ``q + SEPARATOR + n``.
SEPARATOR = "\x06\x16"


class Keyspace:
    """Connections under one unique key prefix, and a raw client to inspect it."""

    def __init__(self, tag: str = "kgt-redis") -> None:
        self.url = redis_url()
        self.prefix = f"{tag}-{uuid.uuid4().hex[:10]}:"
        self.raw = redis.Redis.from_url(self.url)
        self._prefixes: Set[str] = {self.prefix}

    # -- connecting ---------------------------------------------------------

    def options(self, **extra: Any) -> Dict[str, Any]:
        return {"global_keyprefix": self.prefix, **extra}

    def connect(self, **extra: Any) -> Connection:
        return Connection(self.url, transport_options=self.options(**extra))

    def other_prefix(self) -> str:
        """A second unique prefix, cleaned up with this one."""
        prefix = f"kgt-redis-{uuid.uuid4().hex[:10]}:"
        self._prefixes.add(prefix)
        return prefix

    # -- looking inside -----------------------------------------------------

    def key(self, name: str) -> str:
        return self.prefix + name

    def internal(self, name: str) -> str:
        """An internal key such as ``unacked`` or ``queue.<name>``."""
        return f"{self.prefix}_kombu_green.{name}"

    def list_key(self, queue: str, step: int = 0) -> str:
        return self.key(queue) if step == 0 else self.key(f"{queue}{SEPARATOR}{step}")

    def keys(self, prefix: Optional[str] = None) -> Set[str]:
        return {key.decode() for key in self.raw.scan_iter(match=f"{prefix or self.prefix}*", count=1000)}

    def unacked(self) -> int:
        """Unacked records in Redis: in the hash or still in its time index (an ack
        removes the two one command after the other)."""
        pipe = self.raw.pipeline(transaction=True)
        pipe.hlen(self.internal("unacked"))
        pipe.zcard(self.internal("unacked_index"))
        return max(pipe.execute())

    def ready(self, queue: str) -> List[Dict[str, Any]]:
        """The messages in a queue's lowest-step list, head (next to deliver) first."""
        return [json.loads(raw) for raw in reversed(self.raw.lrange(self.list_key(queue), 0, -1))]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Poll ``condition`` (a look at Redis) until it holds; fail after ``timeout``."""
        with gevent.Timeout(timeout, AssertionError(f"{what}: not within {timeout}s")):
            while not condition():
                gevent.sleep(0.02)

    # -- users --------------------------------------------------------------

    def url_as(self, user: str, password: str, port: Optional[int] = None) -> str:
        """The server's URL with these credentials (and maybe another port)."""
        parsed = urllib.parse.urlsplit(self.url)
        netloc = f"{user}:{password}@{parsed.hostname}:{port or parsed.port or 6379}"
        return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))

    @contextlib.contextmanager
    def acl_user(self, password: str, **rules: Any) -> Iterator[Tuple[str, str]]:
        """A Redis user (ACL SETUSER) with every permission unless ``rules`` say otherwise;
        yields its name and URL, and deletes it afterwards."""
        name = f"kgt-{uuid.uuid4().hex[:10]}"
        acl = {"keys": ["*"], "channels": ["*"], "categories": ["+@all"], **rules}
        self.raw.acl_setuser(name, enabled=True, passwords=[f"+{password}"], **acl)
        try:
            yield name, self.url_as(name, password)
        finally:
            self.raw.acl_deluser(name)

    # -- cleaning up --------------------------------------------------------

    def delete_all(self) -> None:
        try:
            for prefix in self._prefixes:
                keys = list(self.raw.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    self.raw.delete(*keys)
        finally:
            self.raw.close()


def through(space: Keyspace, proxy: Any, **options: Any) -> Connection:
    """A Connection to the keyspace's Redis through ``proxy`` (a :class:`.tcp_proxy.TcpProxy`)."""
    return Connection(proxy.url(space.url), transport_options=space.options(**options))
