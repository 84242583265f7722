"""Where the test MongoDB-compatible server is.

``scripts/brokers.sh start mongodb`` starts one on 127.0.0.1:27017 (an
in-memory wire-protocol server); ``KOMBU_GREEN_MONGODB_URL`` points the
suite at another, e.g. a real mongod. :class:`Collections` gives a test
collections of its own and a plain pymongo client to look inside them.
"""
from __future__ import annotations

import os
import urllib.parse
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import gevent
import gevent.event
import gevent.server
import gevent.socket
import pymongo
from pymongo.collection import Collection

from kombu_green import Connection

from ..conformance import WAIT
from ..conftest import require_server

MONGODB_URL = os.environ.get("KOMBU_GREEN_MONGODB_URL", "mongodb://127.0.0.1:27017/kombu_green")


def mongodb_url(**options: object) -> str:
    """The server's URL (skips or fails when it is not running), plus ``options``."""
    parsed = urllib.parse.urlsplit(MONGODB_URL)
    require_server("mongodb", parsed.hostname or "127.0.0.1", parsed.port or 27017)
    if not options:
        return MONGODB_URL
    separator = "&" if parsed.query else "?"
    return MONGODB_URL + separator + urllib.parse.urlencode(options)


def private_url(**options: object) -> str:
    """A URL with collections of its own (a fresh ``collection_prefix``)."""
    return mongodb_url(collection_prefix=f"kgt{uuid.uuid4().hex[:10]}", **options)


#: The collections a transport keeps under one prefix.
SUFFIXES = ("messages", "queues", "exchanges", "bindings", "meta", "broadcast")
#: Prefixes of this run whose collections were dropped ("<prefix>.").
_DROPPED: Set[str] = set()


class Collections:
    """Connections under one collection prefix of their own, and a plain pymongo
    client to look inside.

    Short visibility timeouts in one test then only ever restore that test's
    leases, and another run on the same server never sees its messages.
    :meth:`drop_all` drops every collection under the prefix.
    """

    def __init__(self) -> None:
        self.url = private_url()
        self.prefix = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)["collection_prefix"][0]
        self.client: pymongo.MongoClient = pymongo.MongoClient(MONGODB_URL, serverSelectionTimeoutMS=5000)
        self.db = self.client.get_default_database(default="kombu_default")

    # -- connecting ---------------------------------------------------------

    def url_with(self, **options: object) -> str:
        """This prefix's URL plus more query options (transport or pymongo ones)."""
        return self.url + ("&" + urllib.parse.urlencode(options) if options else "")

    def connect(self, **options: object) -> Connection:
        return Connection(self.url_with(**options))

    # -- looking inside -----------------------------------------------------

    def collection(self, suffix: str) -> Collection:
        return self.db[f"{self.prefix}.{suffix}"]

    @property
    def messages(self) -> Collection:
        return self.collection("messages")

    def documents(self, queue: Optional[str] = None) -> List[Dict[str, Any]]:
        """The message documents (of ``queue``), next to deliver first."""
        query = {} if queue is None else {"q": queue}
        return list(self.messages.find(query, sort=[("p", -1), ("_id", 1)]))

    def leased(self) -> int:
        return self.messages.count_documents({"lease": {"$ne": None}})

    def ready(self, queue: str) -> int:
        return self.messages.count_documents({"q": queue, "lease": None})

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Poll ``condition`` (a look at the server) until it holds; fail after ``timeout``."""
        with gevent.Timeout(timeout, AssertionError(f"{what}: not within {timeout}s")):
            while not condition():
                gevent.sleep(0.02)

    # -- cleaning up --------------------------------------------------------

    def drop_all(self) -> None:
        """Drop this prefix's collections, and any that an earlier test's connection
        created again after its drop (an update still on its way when the connection
        closed creates its collection again on the test server)."""
        try:
            for suffix in SUFFIXES:
                self.db.drop_collection(f"{self.prefix}.{suffix}")
            _DROPPED.add(f"{self.prefix}.")
            for name in self.db.list_collection_names():
                if name.startswith(tuple(_DROPPED)):
                    self.db.drop_collection(name)
        finally:
            self.client.close()


def own_collections() -> Iterator[Collections]:
    """Body of the per-module ``mongo`` fixture: a prefix of its own, dropped afterwards."""
    made = Collections()
    try:
        yield made
    finally:
        made.drop_all()
