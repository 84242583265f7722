"""Where the test RabbitMQ is, and how to reach it over TLS.

``scripts/brokers.sh start rabbitmq`` starts it on 127.0.0.1 with a
self-signed certificate under ``.brokers/tls``; the environment variables
let the suite run against another broker.
"""
from __future__ import annotations

import os
import pathlib
import urllib.parse

from ..conftest import require_server

ROOT = pathlib.Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("KOMBU_GREEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
AMQPS_URL = os.environ.get("KOMBU_GREEN_AMQPS_URL", "amqps://guest:guest@127.0.0.1:5671//")
TLS_CA = os.environ.get("KOMBU_GREEN_TLS_CA", str(ROOT / ".brokers" / "tls" / "cert.pem"))


def require_rabbitmq() -> None:
    parsed = urllib.parse.urlsplit(AMQP_URL)
    require_server("rabbitmq", parsed.hostname or "127.0.0.1", parsed.port or 5672)


def amqps_url() -> str:
    """The TLS URL, verifying the broker against the generated certificate."""
    parsed = urllib.parse.urlsplit(AMQPS_URL)
    require_server("rabbitmq", parsed.hostname or "127.0.0.1", parsed.port or 5671)
    query = urllib.parse.urlencode({"ssl_ca_certs": TLS_CA, "ssl_server_hostname": "localhost"})
    return f"{AMQPS_URL}?{query}"
