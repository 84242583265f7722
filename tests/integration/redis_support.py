"""Where the test Redis is: plain, TLS and behind a sentinel.

``scripts/brokers.sh start redis`` starts redis-server on 127.0.0.1 (6379,
TLS on 6380 with the self-signed certificate under ``.brokers/tls``) and a
sentinel on 26379 watching it as ``kombu_green``; the environment variables
let the suite run against other servers.
"""
from __future__ import annotations

import os
import pathlib
import urllib.parse

from ..conftest import require_server

ROOT = pathlib.Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("KOMBU_GREEN_REDIS_URL", "redis://127.0.0.1:6379/0")
REDISS_URL = os.environ.get("KOMBU_GREEN_REDISS_URL", "rediss://127.0.0.1:6380/0")
SENTINEL_URL = os.environ.get("KOMBU_GREEN_SENTINEL_URL", "sentinel://127.0.0.1:26379/0")
SENTINEL_MASTER = os.environ.get("KOMBU_GREEN_SENTINEL_MASTER", "kombu_green")
TLS_CA = os.environ.get("KOMBU_GREEN_TLS_CA", str(ROOT / ".brokers" / "tls" / "cert.pem"))


def _require(url: str, default_port: int) -> None:
    parsed = urllib.parse.urlsplit(url)
    require_server("redis", parsed.hostname or "127.0.0.1", parsed.port or default_port)


def redis_url() -> str:
    _require(REDIS_URL, 6379)
    return REDIS_URL


def rediss_url() -> str:
    """The TLS URL, verifying the server against the generated certificate."""
    _require(REDISS_URL, 6380)
    return f"{REDISS_URL}?{urllib.parse.urlencode({'ssl_ca_certs': TLS_CA})}"


def sentinel_url() -> str:
    _require(SENTINEL_URL, 26379)
    return f"{SENTINEL_URL}?{urllib.parse.urlencode({'master_name': SENTINEL_MASTER})}"
