"""Connecting to Redis: the errors a user sees, TLS, and the examples.

Wrong credentials, an unreachable server and a mistaken URL each raise a
kombu_green error that names host:port and never the password; rediss://
verifies the server's certificate and never hangs on a handshake; the
seed examples run unchanged against Redis.
"""
from __future__ import annotations

import subprocess
import sys
import urllib.parse

import gevent
import pytest

from kombu_green import Connection, Queue
from kombu_green.exceptions import AccessRefused, ConfigurationError, OperationalError

from ..conformance import WAIT, drain_until
from ..conftest import error_chain
from ..unit.test_examples import EXAMPLES, EXPECTED
from .broker_helpers import consume, declare, publish
from .redis_keyspace import Keyspace
from .redis_support import REDISS_URL, rediss_url

pytestmark = pytest.mark.redis

#: A password that must never show up in an error message.
SECRET = "wrong-secret-123"


def _where(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.hostname}:{parsed.port}"


# -- errors -------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_without_revealing_it(space: Keyspace) -> None:
    """A Redis user (ACL SETUSER) with the wrong password: AccessRefused, naming host:port,
    never containing the password; the right password works."""
    with space.acl_user("right-pass") as (user, url):
        conn = Connection(space.url_as(user, SECRET))
        with gevent.Timeout(WAIT), pytest.raises(AccessRefused) as info:
            conn.connect()
        assert _where(space.url) in str(info.value)
        for exc in error_chain(info.value):
            assert SECRET not in str(exc) and SECRET not in repr(exc)
        assert SECRET not in repr(conn)
        conn.close()
        with Connection(url, transport_options=space.options()) as conn:
            declare(conn, "q")
            publish(conn, "q", ["as the user"])
            assert Queue("q")(conn.channel()).get(no_ack=True).payload == "as the user"


def test_an_unreachable_port_raises_operational_error_naming_it(space: Keyspace) -> None:
    """Nothing listens on port 1: OperationalError naming host:1, without the password."""
    parsed = urllib.parse.urlsplit(space.url)
    conn = Connection(space.url_as("", SECRET, port=1), connect_timeout=2)
    with gevent.Timeout(WAIT), pytest.raises(OperationalError, match=f"{parsed.hostname}:1") as info:
        conn.connect()
    for exc in error_chain(info.value):
        assert SECRET not in str(exc)
    conn.close()


@pytest.mark.parametrize("url, message", [
    pytest.param("redis://127.0.0.1:6379/abc", "must be a number", id="non-numeric-db"),
    pytest.param("sentinel://127.0.0.1:26379/0", "master_name", id="sentinel-without-master"),
])
def test_configuration_errors(url: str, message: str) -> None:
    """Mistakes in the URL are ConfigurationErrors that say what to write instead."""
    conn = Connection(url)
    with gevent.Timeout(WAIT), pytest.raises(ConfigurationError, match=message):
        conn.connect()
    conn.close()


# -- TLS ----------------------------------------------------------------------------------


def test_rediss_round_trip(space: Keyspace) -> None:
    """rediss:// verified against the generated certificate (ssl_ca_certs) carries messages."""
    with Connection(rediss_url(), transport_options=space.options()) as conn:
        declare(conn, "q")
        received = consume(conn, "q")
        publish(conn, "q", [{"over": "tls"}])
        drain_until(conn, lambda: received)
    assert [m.payload for m in received] == [{"over": "tls"}]


def test_rediss_against_system_cas_refuses_a_self_signed_server() -> None:
    """Without ssl_ca_certs the certificate is checked against the system CAs: an
    OperationalError about the certificate, naming host:port, rather than a hang."""
    rediss_url()  # skips (or fails in CI) when the TLS port is closed
    conn = Connection(REDISS_URL)
    with gevent.Timeout(WAIT), pytest.raises(OperationalError, match=_where(REDISS_URL)) as info:
        conn.connect()
    assert "certificate" in str(info.value).lower()
    conn.close()


def test_rediss_at_a_plain_port_fails_within_the_connect_timeout(space: Keyspace) -> None:
    """rediss:// at the plain Redis port: the server never answers the TLS hello;
    connect_timeout must bound the handshake (the connections that wait for
    messages have no read timeout at all)."""
    plain = urllib.parse.urlsplit(space.url)
    url = urllib.parse.urlunsplit(plain._replace(scheme="rediss"))
    conn = Connection(url, connect_timeout=1, transport_options={"socket_timeout": None})
    try:
        with gevent.Timeout(3, AssertionError("connect() still waiting 3x its connect_timeout")):
            with pytest.raises(OperationalError, match=_where(space.url)):
                conn.connect()
    finally:
        conn.close()


# -- the examples -------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_on_redis(space: Keyspace, script: str) -> None:
    """The seed examples run unchanged (their URL from argv), under a key prefix of their own."""
    separator = "&" if "?" in space.url else "?"
    url = f"{space.url}{separator}{urllib.parse.urlencode({'global_keyprefix': space.prefix})}"
    out = subprocess.run([sys.executable, str(EXAMPLES / script), url], cwd=EXAMPLES,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert EXPECTED[script] in out.stdout
    assert space.keys(), "the example did not use the prefix it was given"
