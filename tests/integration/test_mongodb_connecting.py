"""Connecting to MongoDB: the errors a user sees, the URL, and the examples.

Wrong credentials, an unreachable server and a mistaken URL or option each
raise a kombu_green error that says what to fix, names host:port and never
the password; pymongo's own URL options reach pymongo while ours are taken
out; the seed examples run unchanged against MongoDB.
"""
from __future__ import annotations

import subprocess
import sys
import urllib.parse
import uuid
from typing import Dict, Iterator, Tuple

import gevent
import pytest

from kombu_green import Connection, Queue
from kombu_green.exceptions import AccessRefused, ConfigurationError, OperationalError

from ..conformance import WAIT, drain_until
from ..conftest import error_chain
from ..unit.test_examples import EXAMPLES, EXPECTED
from .broker_helpers import consume, declare, publish
from .mongodb_support import Collections, own_collections

pytestmark = pytest.mark.mongodb

#: A password that must never show up in an error message.
SECRET = "wrong-secret-123"


@pytest.fixture
def mongo() -> Iterator[Collections]:
    yield from own_collections()


def _where(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.hostname}:{parsed.port or 27017}"


def _as(url: str, user: str, password: str, port: "int | None" = None) -> str:
    """``url`` with these credentials (and maybe another port)."""
    parsed = urllib.parse.urlsplit(url)
    netloc = f"{user}:{password}@{parsed.hostname}:{port or parsed.port or 27017}"
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def _never_shows(secret: str, exc: BaseException, conn: Connection) -> None:
    for link in error_chain(exc):
        assert secret not in str(link) and secret not in repr(link), repr(link)
    assert secret not in repr(conn) and secret not in conn.as_uri()


# -- errors -------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_without_revealing_it(mongo: Collections) -> None:
    """A MongoDB user (createUser) with the wrong password: AccessRefused naming host:port
    and what to check, never containing the password; the right password works."""
    user = f"kgt{uuid.uuid4().hex[:10]}"
    mongo.db.command("createUser", user, pwd="right-pass", roles=["readWrite"])
    try:
        conn = Connection(_as(mongo.url, user, SECRET), connect_timeout=2)
        with gevent.Timeout(WAIT), pytest.raises(AccessRefused, match="password") as info:
            conn.connect()
        assert _where(mongo.url) in str(info.value)
        _never_shows(SECRET, info.value, conn)
        conn.close()
        with Connection(_as(mongo.url, user, "right-pass")) as conn:
            declare(conn, "q")
            publish(conn, "q", ["as the user"])
            assert Queue("q")(conn.channel()).get(no_ack=True).payload == "as the user"
    finally:
        mongo.db.command("dropUser", user)


def test_an_unreachable_port_raises_operational_error_naming_it(mongo: Collections) -> None:
    """Nothing listens on port 1: OperationalError naming host:1, within a few seconds
    of connect_timeout=1, without the password."""
    conn = Connection(_as(mongo.url, "user", SECRET, port=1), connect_timeout=1)
    host = urllib.parse.urlsplit(mongo.url).hostname
    with gevent.Timeout(WAIT, AssertionError("connect() still waiting 5x its connect_timeout")):
        with pytest.raises(OperationalError, match=f"Cannot reach MongoDB at {host}:1") as info:
            conn.connect()
    _never_shows(SECRET, info.value, conn)
    conn.close()


@pytest.mark.parametrize("query, message", [
    pytest.param({"polling_interval": -1}, "option polling_interval='-1' is not valid: it must be a number",
                 id="negative-polling"),
    pytest.param({"visibility_timeout": "soon"}, "option visibility_timeout='soon' is not valid", id="not-a-number"),
    pytest.param({"max_threads": 0}, "option max_threads='0' is not valid: it must be a whole number",
                 id="no-threads"),
    pytest.param({"notAnOption": 1}, "MongoDB URL option notAnOption='1' is not valid", id="unknown-pymongo-option"),
])
def test_bad_options_are_configuration_errors(mongo: Collections, query: Dict[str, object], message: str) -> None:
    """A transport option out of range, or an option pymongo does not know, is a
    ConfigurationError that names it, raised before anything waits on the server."""
    conn = Connection(_as(mongo.url_with(**query), "user", SECRET), connect_timeout=1)
    with gevent.Timeout(WAIT), pytest.raises(ConfigurationError, match=message) as info:
        conn.connect()
    _never_shows(SECRET, info.value, conn)
    conn.close()


def test_a_port_that_is_not_a_number_is_a_configuration_error() -> None:
    """``mongodb://h:notaport/`` is refused when connecting (no lookup of ``h``) with a
    ConfigurationError about the port; the password stays out of it."""
    conn = Connection(f"mongodb://user:{SECRET}@h:notaport/db")
    with gevent.Timeout(WAIT), pytest.raises(ConfigurationError, match="host 'h:notaport' is not valid") as info:
        conn.connect()
    _never_shows(SECRET, info.value, conn)
    conn.close()


# -- the URL ------------------------------------------------------------------------------


def test_pymongo_options_reach_pymongo_and_ours_do_not(mongo: Collections) -> None:
    """Our options (collection_prefix, polling_interval...) in the query are taken out
    -- pymongo refuses options it does not know -- and pymongo's (maxPoolSize) reach
    the MongoClient."""
    with Connection(mongo.url_with(maxPoolSize=3, polling_interval=0.5)) as conn:
        declare(conn, "q")
        received = consume(conn, "q")
        publish(conn, "q", ["through the options"])
        drain_until(conn, lambda: received)
        transport = conn.transport
        assert "polling_interval" not in transport.uri and "collection_prefix" not in transport.uri
        client = transport.store.messages.database.client
        assert client.options.pool_options.max_pool_size == 3
        assert transport.store.polling_interval_max == 0.5
        assert transport.store.names.prefix == mongo.prefix
    assert [m.payload for m in received] == ["through the options"]


def test_an_appname_in_the_url_reaches_pymongo(mongo: Collections) -> None:
    """``?appname=`` names the application in the server's logs and currentOp; the one
    in the URL must win over the transport's default name."""
    with Connection(mongo.url_with(appname="kgt-test")) as conn:
        conn.connect()
        client = conn.transport.store.messages.database.client
        assert client.options.pool_options.metadata["application"] == {"name": "kgt-test"}


# -- the examples -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_runs() -> Iterator[Dict[str, Tuple[subprocess.CompletedProcess, bool]]]:
    """The four seed examples, run at once, each under a collection prefix of its own
    (its URL from argv): script -> (the finished process, whether it used the prefix)."""
    spaces = {script: Collections() for script in EXPECTED}
    try:
        running = {script: subprocess.Popen([sys.executable, str(EXAMPLES / script), space.url],
                                            cwd=EXAMPLES, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True)
                   for script, space in spaces.items()}
        runs = {}
        for script, proc in running.items():
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            used = any(name.startswith(spaces[script].prefix + ".")
                       for name in spaces[script].db.list_collection_names())
            runs[script] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), used)
        yield runs
    finally:
        for space in spaces.values():
            space.drop_all()


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_on_mongodb(example_runs: Dict[str, Tuple[subprocess.CompletedProcess, bool]],
                                 script: str) -> None:
    """The seed examples run unchanged against MongoDB, in collections of their own."""
    out, used_prefix = example_runs[script]
    assert out.returncode == 0, out.stderr
    assert EXPECTED[script] in out.stdout
    assert used_prefix, "the example did not use the collection prefix it was given"
