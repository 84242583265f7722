"""Pure logic of the MongoDB transport: documents, URLs, options, errors.

No server here: everything that talks to MongoDB is in tests/integration
(test_mongodb*.py).
"""
from __future__ import annotations

import time

import pytest
from bson import Binary, ObjectId
from pymongo import errors as mongo_errors

from kombu_green import Connection
from kombu_green.exceptions import (
    AccessRefused,
    ChannelError,
    ConfigurationError,
    NotFound,
    OperationalError,
    PreconditionFailed,
)
from kombu_green.transport.mongodb.client import Names, translate
from kombu_green.transport.mongodb.documents import NEXT, from_document, is_fanout_copy, lease_of, to_document, utc
from kombu_green.transport.mongodb.uri import describe, mongo_uri, parse_mongo_url
from kombu_green.transport.virtual import payload as payloads

WHERE = "10.0.0.1:27017"


def _payload(**properties: object) -> payloads.Payload:
    payload = payloads.make(b"\x00\xffbody", "application/data", "binary", {"h": 1},
                            {"priority": 3, "delivery_info": {"exchange": "", "routing_key": "q"},
                             **properties})
    payloads.stamp_expiry(payload)
    return payload


# -- documents ----------------------------------------------------------------------------


def test_a_document_is_ready_in_its_queue_with_its_priority() -> None:
    document = to_document("q", _payload(), 7)
    assert {k: document[k] for k in ("q", "lease", "p")} == {"q": "q", "lease": None, "p": 7}
    assert "x" not in document and "fan" not in document and "r" not in document
    assert isinstance(document["m"], Binary)


def test_the_next_message_is_the_highest_priority_then_the_oldest() -> None:
    assert NEXT == [("p", -1), ("_id", 1)]


def test_a_payload_survives_the_round_trip_with_its_lease() -> None:
    document = to_document("q", _payload(), 3)
    document.update(_id=ObjectId(), lease=ObjectId())
    payload = from_document(document)
    assert payload["body"] == b"\x00\xffbody" and payload["headers"] == {"h": 1}
    assert payload["properties"]["priority"] == 3
    assert not payload.get("redelivered")
    assert lease_of(payload) == (document["_id"], document["lease"])


def test_a_returned_document_is_redelivered() -> None:
    document = dict(to_document("q", _payload(), 0), _id=ObjectId(), lease=ObjectId(), r=True)
    assert from_document(document)["redelivered"] is True


def test_the_lease_is_never_stored_with_the_message() -> None:
    """A delivered payload put back as a new document (no lease of its own) does not
    carry the old lease into the stored bytes."""
    document = dict(to_document("q", _payload(), 0), _id=ObjectId(), lease=ObjectId())
    again = to_document("q", from_document(document), 0)
    assert lease_of(from_document(dict(again, _id=ObjectId(), lease=None)))[1] is None
    assert b"_mongodb_lease" not in bytes(again["m"])


def test_a_payload_without_a_lease_has_none() -> None:
    assert lease_of(_payload()) == (None, None)


def test_expiration_becomes_the_x_date() -> None:
    payload = _payload(expiration="1500")
    document = to_document("q", payload, 0)
    assert document["x"] == utc(payload["expires_at"])
    assert document["x"].tzinfo is not None


def test_x_message_ttl_sets_a_deadline_and_shortens_a_later_expiration() -> None:
    before = time.time()
    document = to_document("q", _payload(), 0, message_ttl=2.0)
    deadline = payloads.loads(bytes(document["m"]))["expires_at"]
    assert before + 2.0 <= deadline <= time.time() + 2.0
    assert document["x"] == utc(deadline)

    later = to_document("q", _payload(expiration="60000"), 0, message_ttl=2.0)
    assert payloads.loads(bytes(later["m"]))["expires_at"] <= time.time() + 2.0


def test_x_message_ttl_keeps_a_sooner_expiration_and_the_raw_bytes() -> None:
    payload = _payload(expiration="500")
    raw = payloads.dumps(payload)
    document = to_document("q", payload, 0, message_ttl=60.0, raw=raw)
    assert document["x"] == utc(payload["expires_at"])
    assert bytes(document["m"]) == raw


def test_a_fanout_copy_carries_its_fan_key() -> None:
    document = to_document("q", _payload(), 0, fan="0123:q")
    assert document["fan"] == "0123:q"


def test_a_delivered_fanout_copy_is_known_as_one_and_stored_without_the_mark() -> None:
    """Its ack leaves a tombstone instead of deleting it; the mark never reaches storage."""
    copy = dict(to_document("q", _payload(), 0, fan="0123:q"), _id=ObjectId(), lease=ObjectId())
    plain = dict(to_document("q", _payload(), 0), _id=ObjectId(), lease=ObjectId())
    assert is_fanout_copy(from_document(copy)) and not is_fanout_copy(from_document(plain))
    again = to_document("q", from_document(copy), 0)
    assert not is_fanout_copy(from_document(dict(again, _id=ObjectId(), lease=None)))


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, where", [
    ("mongodb://user:secret@h1:27018,h2/db?replicaSet=rs", "h1:27018,h2:27017"),
    ("mongodb://h", "h:27017"),
    ("mongodb://[::1]:27019/db", "[::1]:27019"),
    ("mongodb://[::1]/db", "[::1]:27017"),
    ("mongodb+srv://user:secret@cluster.example.com/db", "cluster.example.com (SRV)"),
    ("mongodb:///db", "localhost:27017"),
])
def test_describe_names_the_hosts_never_the_password(uri: str, where: str) -> None:
    assert describe(uri) == where
    assert "secret" not in describe(uri)


def test_a_whole_url_passes_through() -> None:
    url = "mongodb+srv://u:p@cluster.example.com/db?appname=x"
    assert mongo_uri(url, 27017, "other", "other", "other") == url


def test_connection_parameters_are_assembled_and_quoted() -> None:
    assert mongo_uri("h", 27018, "us@r", "p:w/d", "my db") == "mongodb://us%40r:p%3Aw%2Fd@h:27018/my%20db"
    assert mongo_uri(None, None, None, None, "/") == "mongodb://localhost:27017/"
    assert mongo_uri("h", None, "u", None, None) == "mongodb://u@h:27017/"


def test_the_url_gives_the_database_hosts_and_pymongos_options_as_written() -> None:
    url = parse_mongo_url("mongodb://h:27018,g/jobs?replicaSet=rs0&maxPoolSize=7&polling_interval=2",
                          ["polling_interval"])
    assert (url.database, url.hosts) == ("jobs", ("h:27018", "g:27017"))
    assert url.driver_options == {"replicaSet": "rs0", "maxPoolSize": "7"}
    assert url.ours == {"polling_interval": "2"}
    assert url.uri == "mongodb://h:27018,g/jobs?replicaSet=rs0&maxPoolSize=7"
    assert parse_mongo_url("mongodb://h/")[2:] == ("", {}, {})


def test_an_srv_url_is_read_without_any_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver

    def no_lookups(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DNS lookup")

    monkeypatch.setattr(dns.resolver, "resolve", no_lookups)
    url = parse_mongo_url("mongodb+srv://u:p@cluster.example.com/db?appname=x")
    assert (url.database, url.hosts, url.driver_options) == ("db", ("cluster.example.com (SRV)",), {"appname": "x"})


@pytest.mark.parametrize("uri, message", [
    pytest.param("mongodb://u:secret@h:notaport/", "MongoDB URL host 'h:notaport' is not valid: its port must be "
                 "a whole number from 1 to 65535, not 'notaport'", id="port-not-a-number"),
    pytest.param("mongodb://h:70000/", "host 'h:70000' is not valid", id="port-out-of-range"),
    pytest.param("mongodb://u:secret@h/?notAnOption=1", "MongoDB URL option notAnOption='1' is not valid: pymongo ",
                 id="unknown-option"),
    pytest.param("mongodb://h/?maxPoolSize=many&appname=a", "MongoDB URL option maxPoolSize='many' is not valid",
                 id="bad-value"),
    pytest.param("mongodb://h/?one=1&two=2", "MongoDB URL options one='1', two='2' are not valid", id="two-unknown"),
    pytest.param("mongodb://h/?tls=true&ssl=false", "options tls='true', ssl='false' are not valid together",
                 id="conflicting"),
    pytest.param("mongodb://h/?tlsCertificateKeyFilePassword=secret&zzz=1", "option zzz='1' is not valid",
                 id="a-secret-beside-it"),
    pytest.param("mongodb+srv://h:27017/db", "mongodb\\+srv:// takes one host name", id="srv-with-port"),
    pytest.param("redis://h/", "Not a MongoDB URL", id="other-scheme"),
])
def test_a_url_pymongo_would_refuse_is_named_in_our_words(uri: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_mongo_url(uri)
    assert info.match(message)
    assert "secret" not in str(info.value)


def test_collections_are_named_under_the_prefix() -> None:
    names = Names("app1")
    assert [names.messages, names.queues, names.exchanges, names.bindings, names.meta, names.broadcast] == [
        "app1.messages", "app1.queues", "app1.exchanges", "app1.bindings", "app1.meta", "app1.broadcast"]


# -- transport options --------------------------------------------------------------------


def test_our_options_leave_the_url_and_pymongos_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DNS lookup while building the transport, even for mongodb+srv://."""
    import socket

    import dns.resolver

    def no_lookups(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DNS lookup")

    monkeypatch.setattr(dns.resolver, "resolve", no_lookups)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    transport = Connection("mongodb+srv://user:pw@cluster.example.com/db?appname=x&polling_interval=2"
                           "&replicaSet=rs&visibility_timeout=9&collection_prefix=abc").transport
    assert transport.uri == "mongodb+srv://user:pw@cluster.example.com/db?appname=x&replicaSet=rs"
    assert (transport.options["polling_interval"], transport.options["visibility_timeout"]) == (2.0, 9.0)
    assert transport.options["collection_prefix"] == "abc"


def test_a_url_of_only_our_options_leaves_no_query() -> None:
    transport = Connection("mongodb://h:27018/db?ttl=true&broadcast_size=4096&max_threads=2"
                           "&restore_interval=5").transport
    assert transport.uri == "mongodb://h:27018/db"
    options = transport.options
    assert (options["ttl"], options["broadcast_size"], options["max_threads"]) == (True, 4096, 2)
    assert options["restore_interval"] == 5.0


def test_transport_options_win_over_the_url() -> None:
    transport = Connection("mongodb+srv://cluster.example.com/db?polling_interval=2",
                           transport_options={"polling_interval": 0.5, "ttl": True}).transport
    assert transport.options["polling_interval"] == 0.5 and transport.options["ttl"] is True


def test_connection_keywords_build_the_url() -> None:
    transport = Connection(hostname="h", port=27018, userid="u", password="p w", virtual_host="jobs",
                           transport="mongodb").transport
    assert transport.uri == "mongodb://u:p%20w@h:27018/jobs"


@pytest.mark.parametrize("option, value, message", [
    ("polling_interval", -1, "a number of seconds above 0"), ("polling_interval", 0, "a number of seconds above 0"),
    ("visibility_timeout", "soon", "a number of seconds above 0"), ("max_threads", 0, "a whole number of threads"),
    ("ttl", "maybe", "true or false"), ("broadcast_size", "big", "a whole number of bytes"),
])
def test_transport_options_are_checked_when_the_transport_is_made(option: str, value: object, message: str) -> None:
    conn = Connection("mongodb+srv://cluster.example.com/db", transport_options={option: value})
    with pytest.raises(ConfigurationError) as info:
        conn.transport  # noqa: B018 - making the transport checks its options
    assert str(info.value).startswith(f"MongoDB transport option {option}={value!r} is not valid: it must be {message}")


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("error, kind", [
    (mongo_errors.OperationFailure("not authorized", code=13), AccessRefused),
    (mongo_errors.OperationFailure("authentication failed", code=18,
                                   details={"errmsg": "authentication failed", "code": 18}), AccessRefused),
    (mongo_errors.ServerSelectionTimeoutError(
        "127.0.0.1:1: [Errno 111] Connection refused, Timeout: 1.0s, Topology Description: <...>"),
     OperationalError),
    (mongo_errors.AutoReconnect("connection closed"), OperationalError),
    (mongo_errors.NetworkTimeout("timed out"), OperationalError),
    (ConnectionRefusedError(111, "Connection refused"), OperationalError),
    (mongo_errors.ConfigurationError("Unknown option"), ConfigurationError),
    (mongo_errors.InvalidURI("bad"), ConfigurationError),
    (mongo_errors.DocumentTooLarge("BSON document too large"), PreconditionFailed),
    (mongo_errors.OperationFailure("unknown command", code=59), ChannelError),
    (mongo_errors.ExecutionTimeout("operation exceeded time limit", code=50), ChannelError),
    (mongo_errors.PyMongoError("something else"), OperationalError),
])
def test_driver_errors_become_ours_and_name_the_server(error: Exception, kind: type) -> None:
    translated = translate(error, WHERE)
    assert type(translated) is kind
    assert WHERE in str(translated)


def test_an_unreachable_server_is_reported_without_the_topology_dump() -> None:
    error = mongo_errors.ServerSelectionTimeoutError(
        "127.0.0.1:1: [Errno 111] Connection refused, Timeout: 1.0s, Topology Description: <huge>")
    message = str(translate(error, "127.0.0.1:1"))
    assert "Connection refused" in message and "Topology" not in message
    assert "Is the server running" in message


def test_refused_credentials_say_what_to_check() -> None:
    error = mongo_errors.OperationFailure("auth failed", code=18, details={"errmsg": "authentication failed"})
    message = str(translate(error, WHERE))
    assert "authentication failed" in message and "authSource" in message


def test_our_errors_pass_through() -> None:
    error = NotFound("no such queue")
    assert translate(error, WHERE) is error
