"""Where the test MongoDB-compatible server is.

``scripts/brokers.sh start mongodb`` starts one on 127.0.0.1:27017 (an
in-memory wire-protocol server); ``KOMBU_GREEN_MONGODB_URL`` points the
suite at another, e.g. a real mongod.
"""
from __future__ import annotations

import os
import urllib.parse
import uuid

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
