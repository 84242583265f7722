"""The option checks every transport reads its settings through."""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List

import pytest

from kombu_green import Connection
from kombu_green.exceptions import ConfigurationError
from kombu_green.options import (
    Option,
    choice,
    describe_value,
    flag,
    mapping,
    number,
    optional,
    read_options,
    text,
    whole,
    whole_list,
)
from kombu_green.transport import known_transports, resolve_transport
from kombu_green.transport.tls import ssl_context, ssl_options

TABLE = {
    "visibility_timeout": Option(number(), 3600.0),
    "max_connections": Option(whole(1, 100, "connections"), 10),
    "ack_emulation": Option(flag, True),
    "prefix": Option(text, ""),
    "mode": Option(choice("fast", "safe"), "safe"),
    "steps": Option(whole_list(0, 9), [0, 3, 6, 9]),
    "extra": Option(mapping, None),
    "pool_timeout": Option(optional(number()), 10.0),
}


def test_defaults_fill_in_and_other_transports_options_pass_through() -> None:
    checked = read_options("Test transport option", {"unknown_to_us": "kept"}, TABLE)
    assert checked["visibility_timeout"] == 3600.0 and checked["max_connections"] == 10
    assert checked["unknown_to_us"] == "kept"


@pytest.mark.parametrize("name, given, used", [
    ("visibility_timeout", "30", 30.0), ("visibility_timeout", 0.5, 0.5),
    ("max_connections", "7", 7), ("max_connections", 7.0, 7),
    ("ack_emulation", "no", False), ("ack_emulation", 1, True), ("ack_emulation", "ON", True),
    ("prefix", 12, "12"), ("mode", "FAST", "fast"),
    ("steps", "9, 0,5", [0, 5, 9]), ("steps", (3, 3, 1), [1, 3]), ("steps", 4, [4]),
    ("extra", {"a": 1}, {"a": 1}), ("pool_timeout", "none", None), ("pool_timeout", "2", 2.0),
])
def test_good_values_are_converted(name: str, given: Any, used: Any) -> None:
    assert read_options("Test transport option", {name: given}, TABLE)[name] == used


@pytest.mark.parametrize("name, given, requirement", [
    ("visibility_timeout", "soon", "a number of seconds above 0"),
    ("visibility_timeout", -1, "a number of seconds above 0"),
    ("visibility_timeout", True, "a number of seconds above 0"),
    ("visibility_timeout", math.nan, "a number of seconds above 0"),
    ("max_connections", 0, "a whole number of connections from 1 to 100"),
    ("max_connections", 2.5, "a whole number of connections from 1 to 100"),
    ("max_connections", "many", "a whole number of connections from 1 to 100"),
    ("ack_emulation", "maybe", "true or false"),
    ("prefix", ["a"], "text"),
    ("mode", "slow", "one of 'fast', 'safe'"),
    ("steps", "a,b", "whole numbers from 0 to 9"),
    ("steps", [10], "whole numbers from 0 to 9"),
    ("extra", "a=1", "a dict"),
])
def test_a_bad_value_names_the_option_the_value_and_what_it_must_be(name: str, given: Any,
                                                                      requirement: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        read_options("Test transport option", {name: given}, TABLE)
    message = str(info.value)
    assert message.startswith(f"Test transport option {name}={given!r} is not valid: it must be ")
    assert requirement in message


def test_none_means_the_default() -> None:
    assert read_options("Test", {"max_connections": None}, TABLE)["max_connections"] == 10


def test_secret_values_are_never_shown() -> None:
    assert describe_value("tlsCertificateKeyFilePassword", "hunter2") == "tlsCertificateKeyFilePassword='**'"
    assert describe_value("authMechanismProperties", "AWS_SESSION_TOKEN:x") == "authMechanismProperties='**'"
    assert describe_value("ssl_keyfile", "/etc/key.pem") == "ssl_keyfile='/etc/key.pem'"
    with pytest.raises(ConfigurationError) as info:
        read_options("Test option", {"password": ["hunter2"]}, {"password": Option(text)})
    assert "hunter2" not in str(info.value) and "password='**'" in str(info.value)


# -- every transport ----------------------------------------------------------------


def _tables() -> List[Any]:
    cases = []
    for scheme in known_transports():
        transport = resolve_transport(scheme)
        for name in transport.option_table:
            cases.append(pytest.param(scheme, transport.option_label, name, id=f"{scheme}-{name}"))
    return cases


def _url(scheme: str, query: str = "") -> str:
    return f"{scheme}://localhost/{'?' + query if query else ''}"


@pytest.mark.parametrize("scheme, label, name", _tables())
def test_every_transport_names_a_bad_option_and_its_value(scheme: str, label: str, name: str) -> None:
    """Whatever the transport, a value its option cannot take fails when the transport is
    made -- before any network traffic -- with our message naming the option and value."""
    conn = Connection(_url(scheme), transport_options={name: ["nonsense"]})
    with pytest.raises(ConfigurationError) as info:
        conn.transport  # noqa: B018 - making the transport checks its options
    assert str(info.value).startswith(f"{label} {name}=['nonsense'] is not valid: it must be ")


@pytest.mark.parametrize("scheme, label, name", _tables())
def test_every_option_can_be_given_in_the_url(scheme: str, label: str, name: str) -> None:
    """The URL query reaches the same checks: text is taken, anything else named when wrong."""
    conn = Connection(_url(scheme, f"{name}=nonsense"))
    try:
        assert conn.transport.options[name] == "nonsense"
    except ConfigurationError as exc:
        assert str(exc).startswith(f"{label} {name}='nonsense' is not valid: it must be ")


@pytest.mark.parametrize("url, message", [
    ("amqp://u:secret@h:notaport//", "Invalid broker URL 'amqp://u:**@h:notaport//': port 'notaport' is not valid"),
    ("redis://h:70000/0", "port '70000' is not valid: it must be a whole number from 1 to 65535"),
    ("amqp://h//?heartbeat=often", "Connection option heartbeat='often' for amqp://h is not valid"),
    ("amqp://h//?connect_timeout=-1", "Connection option connect_timeout=-1 for amqp://h is not valid"),
    ("memory://?failover_strategy=random", "Unknown failover_strategy 'random'"),
])
def test_connection_settings_name_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Connection(url)
    assert message in str(info.value) and "secret" not in str(info.value)


def test_connect_timeout_none_means_no_timeout() -> None:
    assert Connection("amqp://h//", connect_timeout=None).connect_timeout is None


@pytest.mark.parametrize("ssl, message", [
    ({"cert_reqs": "sometimes"}, "TLS option cert_reqs='sometimes' is not valid: it must be CERT_REQUIRED"),
    ({"ssl_version": 2}, "Unknown TLS option 'version' (ssl_version in a URL)"),
    ({"check_hostname": "perhaps"}, "TLS option check_hostname='perhaps' is not valid"),
])
def test_tls_options_are_checked(ssl: Dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        ssl_options(ssl, {})


def test_a_tls_file_that_cannot_be_read_is_named(tmp_path: Any) -> None:
    missing = str(tmp_path / "ca.pem")
    with pytest.raises(ConfigurationError, match=re.escape(f"TLS option ca_certs={missing!r} cannot be used")):
        ssl_context({"ca_certs": missing}, "h")
