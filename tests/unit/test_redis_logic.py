"""Pure logic of the Redis transport: key names, encoding, options, errors.

No server here: everything that talks to Redis is in tests/integration.
"""
from __future__ import annotations

import json

import pytest
from redis import exceptions as redis_errors

from kombu_green import Connection
from kombu_green.exceptions import AccessRefused, ConfigurationError, OperationalError
from kombu_green.transport.redis.client import GreenConnection, GreenSSLConnection, translate
from kombu_green.transport.redis.keys import Keys
from kombu_green.transport.redis.store import decode, encode
from kombu_green.transport.tls import ssl_options
from kombu_green.transport.virtual import payload as payloads
from kombu_green.transport.virtual.shared_state import binding_member


@pytest.mark.parametrize("priority, step", [(0, 0), (2, 0), (3, 3), (5, 3), (6, 6), (9, 9), (12, 9), (-1, 0)])
def test_priority_maps_to_the_highest_step_not_above_it(priority: int, step: int) -> None:
    assert Keys().step_of(priority) == step


def test_lists_are_named_like_kombu_and_ordered_highest_priority_first() -> None:
    keys = Keys(prefix="p:", priority_steps=[0, 5])
    assert keys.lists("q") == ["p:q\x06\x165", "p:q"]
    assert keys.list("q") == "p:q"


def test_step_zero_always_exists() -> None:
    assert Keys(priority_steps=[4, 8]).steps == [0, 4, 8]


def test_every_internal_key_and_channel_carries_the_prefix() -> None:
    keys = Keys(prefix="app1:", db=3)
    for name in (keys.version, keys.exchanges, keys.bindings, keys.unacked,
                 keys.unacked_index, keys.unacked_mutex, keys.meta("q"), keys.fanout_channel("ex")):
        assert name.startswith("app1:")
    assert keys.exchange_of_channel(keys.fanout_channel("ex.name")) == "ex.name"
    assert keys.fanout_channel("ex") != Keys(prefix="app1:", db=4).fanout_channel("ex")


def _payload() -> payloads.Payload:
    payload = payloads.make(b"\x00\xffbody", "application/data", "binary", {"h": 1},
                            {"priority": 3, "delivery_info": {"exchange": "", "routing_key": "q"}})
    payload["redelivered"] = False
    payload["lease"] = "tag-1"
    return payload


def test_encode_keeps_bytes_and_drops_process_local_fields() -> None:
    raw = encode(_payload())
    data = json.loads(raw)
    assert "redelivered" not in data and "lease" not in data
    back = decode(raw, "tag-2")
    assert back["body"] == b"\x00\xffbody"
    assert back["headers"] == {"h": 1}
    assert back["redelivered"] is False and back["lease"] == "tag-2"


def test_the_servers_redelivered_mark_wins() -> None:
    """The Lua scripts mark a message by putting the field first; the
    encoder never writes it, so there is no second value to override it."""
    raw = encode(_payload())
    marked = b'{"redelivered":true,' + raw[1:]
    assert decode(marked, None)["redelivered"] is True


def test_binding_members_are_stable_whatever_the_argument_order() -> None:
    assert binding_member("q", "ex", "q1", "rk", {"b": 2, "a": 1}) == binding_member(
        "q", "ex", "q1", "rk", {"a": 1, "b": 2})
    assert binding_member("q", "ex", "q1", "rk", None) == binding_member("q", "ex", "q1", "rk", {})


def test_expiration_becomes_an_absolute_deadline() -> None:
    payload = payloads.make(b"", None, None, None, {"expiration": "1500"})
    payloads.stamp_expiry(payload, now=100.0)
    assert payload["expires_at"] == 101.5
    assert not payloads.expired(payload, now=101.4)
    assert payloads.expired(payload, now=101.5)


@pytest.mark.parametrize("bad", ["soon", "-5", "1.5"])
def test_bad_expiration_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        payloads.stamp_expiry(payloads.make(b"", None, None, None, {"expiration": bad}))


@pytest.mark.parametrize("url, db", [("redis://h", 0), ("redis://h/", 0), ("redis://h/3", 3),
                                     ("redis://h:7000/15", 15)])
def test_database_number_comes_from_the_path(url: str, db: int) -> None:
    assert Connection(url).transport._db() == db


def test_a_database_that_is_not_a_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="must be a number"):
        Connection("redis://h/abc").transport._db()


def test_connection_settings_reach_redis_py() -> None:
    transport = Connection("redis://user:secret@h:7000/2?socket_timeout=3&health_check_interval=5").transport
    cls, kwargs = transport._connection_kwargs()
    assert cls is GreenConnection
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 7000, 2)
    assert (kwargs["username"], kwargs["password"]) == ("user", "secret")
    assert kwargs["socket_timeout"] == 3 and kwargs["health_check_interval"] == 5
    assert kwargs["protocol"] == 2


def test_rediss_uses_tls_with_the_url_options() -> None:
    cls, kwargs = Connection("rediss://h?ssl_ca_certs=/ca.pem").transport._connection_kwargs()
    assert cls is GreenSSLConnection
    assert kwargs["ssl_options"] == {"ca_certs": "/ca.pem"}
    assert Connection("rediss://h").transport_class.default_port == 6379


def test_sentinel_needs_a_master_name() -> None:
    with pytest.raises(ConfigurationError, match="master_name"):
        Connection("sentinel://h:26379").transport._server()


def test_sentinel_addresses_come_from_every_url() -> None:
    transport = Connection("sentinel://a:26379;sentinel://b:26380;sentinel://c",
                           transport_options={"master_name": "m"}).transport
    assert transport._sentinels() == [("a", 26379), ("b", 26380), ("c", 26379)]


def test_tls_options_merge_url_and_ssl_argument() -> None:
    assert ssl_options(False, {"ssl_ca_certs": "/x"}) is False
    assert ssl_options(True, {"ssl_ca_certs": "/x", "other": 1}) == {"ca_certs": "/x"}
    assert ssl_options({"certfile": "/c"}, {"ssl_ca_certs": "/x"}) == {"ca_certs": "/x", "certfile": "/c"}
    with pytest.raises(ConfigurationError):
        ssl_options(42, {})


@pytest.mark.parametrize("error, kind", [
    (redis_errors.AuthenticationError("invalid username-password pair"), AccessRefused),
    (redis_errors.ResponseError("WRONGPASS invalid username-password pair"), AccessRefused),
    (redis_errors.ConnectionError("Error 111 connecting"), OperationalError),
    (redis_errors.TimeoutError("Timeout reading"), OperationalError),
    (ConnectionRefusedError(111, "Connection refused"), OperationalError),
    (redis_errors.ConnectionError("Error 1 connecting: [SSL: CERTIFICATE_VERIFY_FAILED] failed"),
     OperationalError),
])
def test_driver_errors_become_ours_and_name_the_server(error: Exception, kind: type) -> None:
    translated = translate(error, "10.0.0.1:6379")
    assert isinstance(translated, kind)
    assert "10.0.0.1:6379" in str(translated)
    assert ("TLS" in str(translated)) == ("SSL" in str(error))
