"""Broker URLs: parsing, option routing, validation and password masking."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kombu_green import Connection
from kombu_green.exceptions import (
    ConfigurationError,
    InvalidURL,
    KombuError,
    UnknownTransport,
)
from kombu_green.url import as_url, coerce_option, mask_url, parse_url

# A password full of characters that mean something inside a URL.
SPECIAL_PASSWORD = "p@ss:w/rd#?%&=+ é"


# ------------------------------------------------------------------ parse_url


def test_parse_url_splits_every_part():
    url = parse_url("amqp://alice:s3cret@broker.example:5673/prod")
    assert url.transport == "amqp"
    assert url.userid == "alice"
    assert url.password == "s3cret"
    assert url.hostname == "broker.example"
    assert url.port == 5673
    assert url.virtual_host == "prod"
    assert url.options == {}


def test_parse_url_without_credentials_or_port():
    url = parse_url("amqp://broker/")
    assert (url.userid, url.password, url.port) == (None, None, None)
    assert url.hostname == "broker"


@pytest.mark.parametrize(
    "url, vhost",
    [
        ("amqp://h//", "/"),
        ("amqp://h/foo", "foo"),
        ("amqp://h/%2F", "/"),
        ("amqp://h/%2Ffoo", "/foo"),
        ("amqp://h/a%20b", "a b"),
    ],
)
def test_parse_url_virtual_host(url, vhost):
    assert parse_url(url).virtual_host == vhost


@pytest.mark.parametrize("url", ["amqp://h/", "amqp://h"])
def test_parse_url_empty_virtual_host_means_default(url):
    assert parse_url(url).virtual_host is None


def test_parse_url_unquotes_user_and_password():
    url = parse_url("amqp://us%40er:p%40ss%3Aw%2Frd@h/")
    assert url.userid == "us@er"
    assert url.password == "p@ss:w/rd"


def test_parse_url_coerces_query_options():
    url = parse_url("amqp://h/?heartbeat=30&ratio=0.5&flag=true&off=no&name=x")
    assert url.options == {"heartbeat": 30, "ratio": 0.5, "flag": True, "off": False, "name": "x"}
    assert type(url.options["heartbeat"]) is int
    assert type(url.options["ratio"]) is float


@pytest.mark.parametrize("url", ["amqp://h:notaport/", "amqp://h:70000/", "amqp://h:-1/"])
def test_parse_url_bad_port_is_invalid_url(url):
    with pytest.raises(InvalidURL, match="Invalid broker URL"):
        parse_url(url)


def test_parse_url_without_scheme_is_invalid_url():
    with pytest.raises(InvalidURL, match="Not a broker URL"):
        parse_url("just-a-host")


def test_parse_url_without_scheme_never_shows_password():
    with pytest.raises(InvalidURL) as info:
        parse_url("guest:topsecret@localhost:5672//")
    assert "topsecret" not in str(info.value)


# -------------------------------------------------------------- coerce_option


@pytest.mark.parametrize(
    "text, value",
    [
        ("1", 1), ("-7", -7), ("0", 0), ("1.5", 1.5), ("1e3", 1000.0),
        ("true", True), ("True", True), ("yes", True), ("on", True),
        ("false", False), ("NO", False), ("off", False),
        ("hello", "hello"), ("", ""),
    ],
)
def test_coerce_option(text, value):
    result = coerce_option(text)
    assert result == value
    assert type(result) is type(value)


@given(st.integers())
def test_coerce_option_integers_round_trip(number):
    assert coerce_option(str(number)) == number


# ------------------------------------------------------------------- mask_url


@pytest.mark.parametrize(
    "url, masked",
    [
        ("amqp://user:secret@h:5672//", "amqp://user:**@h:5672//"),
        ("redis://:secret@h:6379/0", "redis://:**@h:6379/0"),
        ("amqp://user@h/", "amqp://user@h/"),
        ("amqp://h/", "amqp://h/"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_mask_url_custom_mask():
    assert mask_url("amqp://u:secret@h/", mask="***") == "amqp://u:***@h/"


def test_mask_url_with_percent_encoded_password():
    masked = mask_url("amqp://u:p%40ss%2Fword@h/")
    assert "p%40ss" not in masked and "word" not in masked
    assert masked == "amqp://u:**@h/"


# --------------------------------------------------------------------- as_url


def test_as_url_masks_password_by_default():
    assert as_url("amqp", "h", 5672, "u", "secret", "/") == "amqp://u:**@h:5672//"


def test_as_url_include_password_quotes_it():
    url = as_url("amqp", "h", None, "u", SPECIAL_PASSWORD, "v", include_password=True)
    assert parse_url(url).password == SPECIAL_PASSWORD


def test_as_url_ipv6_host_gets_brackets():
    assert as_url("amqp", "::1", 5672) == "amqp://[::1]:5672/"


# --------------------------------------------------- URLs given to Connection


@pytest.mark.parametrize(
    "suffix, vhost",
    [("//", "/"), ("/", "/"), ("", "/"), ("/foo", "foo"), ("/%2F", "/"), ("/%2Fapp", "/app")],
)
def test_connection_virtual_host_rules(suffix, vhost):
    assert Connection(f"memory://vhost-rules{suffix}").virtual_host == vhost


def test_connection_takes_every_part_from_url():
    conn = Connection("memory://alice:s3cret@somehost:1234/vh")
    assert conn.transport_cls == "memory"
    assert conn.hostname == "somehost"
    assert conn.userid == "alice"
    assert conn.password == "s3cret"
    assert conn.port == 1234
    assert conn.virtual_host == "vh"


def test_connection_empty_host_defaults_to_localhost():
    assert Connection("memory://").hostname == "localhost"


def test_connection_percent_encoded_credentials():
    conn = Connection("memory://us%40er:p%40ss%3Aw%2Frd@h/")
    assert conn.userid == "us@er"
    assert conn.password == "p@ss:w/rd"


def test_connection_options_go_to_attributes():
    conn = Connection("memory://h/?heartbeat=30&connect_timeout=2.5&ssl=true")
    assert conn.heartbeat == 30
    assert conn.connect_timeout == 2.5
    assert conn.ssl is True
    assert conn.transport_options == {}


def test_connection_other_options_go_to_transport_options():
    conn = Connection("memory://h/?foo=1&ratio=1.5&flag=true&off=false&name=bar")
    assert conn.transport_options == {
        "foo": 1, "ratio": 1.5, "flag": True, "off": False, "name": "bar"}
    assert type(conn.transport_options["foo"]) is int
    assert type(conn.transport_options["ratio"]) is float


def test_connection_url_values_win_over_keywords():
    conn = Connection("memory://fromurl@h/", userid="fromkw", password="kwpass")
    assert conn.userid == "fromurl"
    # what the URL leaves out comes from the keywords
    assert conn.password == "kwpass"


def test_connection_alternates_after_semicolon():
    conn = Connection("memory://first;memory://second; memory://third")
    assert conn.alt == ["memory://first", "memory://second", "memory://third"]
    assert conn.hostname == "first"


def test_connection_single_url_has_no_alternates():
    assert Connection("memory://only").alt == []


@pytest.mark.parametrize("url", ["memory://user:topsecret@h:notaport/",
                                 "memory://user:topsecret@h:70000/"])
def test_connection_bad_port_raises_invalid_url(url):
    with pytest.raises(InvalidURL) as info:
        Connection(url)
    exc = info.value
    assert isinstance(exc, ConfigurationError)
    assert isinstance(exc, KombuError)
    assert isinstance(exc, ValueError)
    assert "topsecret" not in str(exc)


def test_bad_port_message_names_the_problem():
    with pytest.raises(InvalidURL, match="notaport"):
        Connection("memory://h:notaport/")


def test_keyword_port_out_of_range_raises_invalid_url():
    with pytest.raises(InvalidURL, match="70000"):
        Connection(hostname="h", port=70000, transport="memory")


def test_keyword_port_not_a_number_raises_invalid_url():
    with pytest.raises(InvalidURL):
        Connection(hostname="h", port="abc", transport="memory")


def test_unescaped_slash_in_password_not_leaked():
    with pytest.raises(InvalidURL) as info:
        Connection("memory://user:se/cret@host:5672/")
    assert "cret" not in str(info.value)


def test_unknown_scheme_raises_unknown_transport():
    with pytest.raises(UnknownTransport, match="'foo'") as info:
        Connection("foo://x")
    assert "memory" in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_unknown_transport_keyword():
    with pytest.raises(UnknownTransport, match="'nosuch'"):
        Connection(hostname="h", transport="nosuch")


# ------------------------------------------------------------- masked output


def test_as_uri_masks_password():
    conn = Connection("memory://user:s3cret@h:1234/vh")
    assert conn.as_uri() == "memory://user:**@h:1234/vh"


def test_as_uri_include_password():
    conn = Connection("memory://user:s3cret@h:1234/vh")
    assert conn.as_uri(include_password=True) == "memory://user:s3cret@h:1234/vh"


def test_as_uri_default_virtual_host():
    assert Connection("memory://h").as_uri() == "memory://h//"


@pytest.mark.parametrize("form", ["keywords", "url"])
def test_special_password_is_masked_everywhere(form):
    if form == "keywords":
        conn = Connection(hostname="h", userid="u", password=SPECIAL_PASSWORD,
                          transport="memory")
    else:
        conn = Connection(as_url("memory", "h", None, "u", SPECIAL_PASSWORD, "/",
                                 include_password=True))
    assert conn.password == SPECIAL_PASSWORD
    for text in (conn.as_uri(), repr(conn), str(conn.info())):
        assert "u:**@h" in text or "'**'" in text
        assert "p@ss" not in text and "p%40ss" not in text


def test_special_password_round_trips_through_as_uri():
    conn = Connection(hostname="h", userid="u", password=SPECIAL_PASSWORD, transport="memory")
    again = Connection(conn.as_uri(include_password=True))
    assert again.password == SPECIAL_PASSWORD
    assert again.userid == "u"


def test_repr_masks_password():
    conn = Connection("memory://user:s3cret@h/")
    assert "s3cret" not in repr(conn)
    assert "memory://user:**@h/" in repr(conn)


@settings(max_examples=60, deadline=None)
@given(user=st.text(min_size=1, max_size=12), password=st.text(min_size=1, max_size=12))
def test_credentials_round_trip_and_mask_is_independent_of_password(user, password):
    conn = Connection(hostname="h", userid=user, password=password, transport="memory")
    again = Connection(conn.as_uri(include_password=True))
    assert (again.userid, again.password) == (user, password)
    other = Connection(hostname="h", userid=user, password="x", transport="memory")
    assert conn.as_uri() == other.as_uri()
