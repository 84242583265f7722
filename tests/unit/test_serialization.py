"""Tests for kombu_green.serialization: codecs, accept policy, kombu wire format."""
from __future__ import annotations

import json
import pickle
import sys
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kombu_green import serialization
from kombu_green.exceptions import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    KombuError,
    SerializationError,
    SerializerNotInstalled,
)
from kombu_green.serialization import (
    DEFAULT_SERIALIZER,
    TRUSTED_CONTENT,
    SerializerRegistry,
    disable_insecure_serializers,
    dumps,
    enable_insecure_serializers,
    loads,
    prepare_accept_content,
    register,
    register_json_type,
    registry,
    unregister,
)

PICKLE = "application/x-python-serialize"
YAML = "application/x-yaml"
MSGPACK = "application/x-msgpack"


@pytest.fixture(autouse=True)
def restore_registry():
    """Snapshot the global registry so no test leaks codecs or accept changes."""
    accept = set(registry.default_accept)
    default = registry.default_serializer
    names = set(registry.name_to_type)
    yield
    registry.default_accept = accept
    registry.default_serializer = default
    for name in set(registry.name_to_type) - names:
        registry.unregister(name)


@pytest.fixture
def json_types(monkeypatch):
    """Let a test register JSON types without touching the built-in table."""
    monkeypatch.setattr(serialization, "_json_encoders", dict(serialization._json_encoders))
    monkeypatch.setattr(serialization, "_json_decoders", dict(serialization._json_decoders))


def roundtrip(obj, serializer=None, accept=None):
    content_type, encoding, body = dumps(obj, serializer=serializer)
    assert isinstance(body, bytes)
    return loads(body, content_type, encoding, accept=accept)


def wire(obj):
    """The JSON document kombu would see on the broker."""
    content_type, encoding, body = dumps(obj, serializer="json")
    assert (content_type, encoding) == ("application/json", "utf-8")
    return json.loads(body.decode("utf-8"))


# -- defaults and constants ---------------------------------------------------


def test_constants():
    assert DEFAULT_SERIALIZER == "json"
    assert {"application/data", "application/text"} <= TRUSTED_CONTENT
    assert isinstance(TRUSTED_CONTENT, frozenset)


def test_default_accept_is_json_only():
    assert registry.default_accept == {"application/json"}


def test_builtin_names_and_content_types_match_kombu():
    assert registry.name_to_type["json"] == "application/json"
    assert registry.name_to_type["pickle"] == PICKLE
    assert registry.name_to_type["yaml"] == YAML
    assert registry.name_to_type["msgpack"] == MSGPACK
    assert registry.type_to_name[PICKLE] == "pickle"
    assert dumps(1, "pickle")[:2] == (PICKLE, "binary")
    assert dumps(1, "yaml")[:2] == (YAML, "utf-8")
    assert dumps(1, "msgpack")[:2] == (MSGPACK, "binary")


def test_default_serializer_is_json():
    assert dumps({"a": 1}) == ("application/json", "utf-8", b'{"a": 1}')


# -- raw passthrough ----------------------------------------------------------


@pytest.mark.parametrize("raw", [b"\x00\xffdata", bytearray(b"abc"), memoryview(b"mv")])
def test_bytes_pass_through_untouched(raw):
    content_type, encoding, body = dumps(raw)
    assert (content_type, encoding, body) == ("application/data", "binary", bytes(raw))
    assert loads(body, content_type, encoding) == bytes(raw)


def test_str_is_sent_as_utf8_text():
    assert dumps("héllo") == ("text/plain", "utf-8", "héllo".encode())
    assert roundtrip("héllo") == "héllo"


@pytest.mark.parametrize(
    "content_type", [None, "", "application/data", "application/octet-stream"]
)
def test_raw_content_types_return_bytes_even_with_empty_accept(content_type):
    assert loads(b"\x00\x01", content_type, "binary", accept=set()) == b"\x00\x01"


@pytest.mark.parametrize("content_type", ["text/plain", "text/html", "application/text"])
def test_text_is_trusted_and_decoded(content_type):
    assert loads("é".encode(), content_type, "utf-8", accept=set()) == "é"


def test_text_uses_message_encoding():
    assert loads("é".encode("latin-1"), "text/plain", "latin-1") == "é"
    assert loads(b"abc", "text/plain", None) == "abc"
    assert loads(b"\xff", "text/plain", "binary") == b"\xff"


def test_invalid_text_raises_decode_error():
    with pytest.raises(DecodeError, match="text/plain"):
        loads(b"\xff\xfe", "text/plain", "utf-8")
    with pytest.raises(DecodeError):
        loads(b"abc", "text/plain", "no-such-charset")


def test_content_type_is_normalized():
    body = dumps({"a": 1})[2]
    assert loads(body, "Application/JSON; charset=utf-8", "UTF-8") == {"a": 1}


def test_str_body_is_accepted_for_text_codecs():
    assert loads('{"a": 1}', "application/json", "utf-8") == {"a": 1}


# -- json extended types ------------------------------------------------------

UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))
EXTENDED = [
    datetime(2024, 2, 29, 13, 45, 1, 123456),
    datetime(2024, 2, 29, 13, 45, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=IST),
    date(2024, 2, 29),
    time(7, 8, 9, 10),
    time(7, 8, tzinfo=IST),
    Decimal("3.14159265358979323846264338327950288"),
    Decimal("-0.00"),
    uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),  # version 1
    uuid.UUID("9f2c1e8e-1c5e-4c7e-9a3b-6f1d2a0b7c55"),  # version 4
    uuid.UUID(int=0),  # nil: no version
    uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),  # version 7
    b"plain utf-8 \xc3\xa9",
    b"\xff\xfe\x00binary",
    b"",
]


@pytest.mark.parametrize("value", EXTENDED, ids=repr)
def test_json_extended_type_roundtrip(value):
    result = roundtrip(value, "json")
    assert result == value
    assert type(result) is type(value)
    if isinstance(value, (datetime, time)):
        assert result.utcoffset() == value.utcoffset()


def test_json_extended_types_nested():
    payload = {
        "when": [datetime(2020, 1, 1, tzinfo=UTC), date(2020, 1, 2)],
        "money": {"total": Decimal("10.50"), "items": [Decimal("1"), Decimal("9.5")]},
        "ids": (uuid.UUID(int=1), uuid.UUID(int=2)),
        "blobs": {"ok": b"text", "raw": b"\x80"},
        "plain": [1, 2.5, "x", None, True],
    }
    result = roundtrip(payload, "json")
    assert result == {**payload, "ids": list(payload["ids"])}


@pytest.mark.parametrize(
    "value, marker, encoded",
    [
        (datetime(2024, 1, 2, 3, 4, 5), "datetime", "2024-01-02T03:04:05"),
        (datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "datetime",
         "2024-01-02T03:04:05.000006+00:00"),
        (date(2024, 1, 2), "date", "2024-01-02"),
        (time(3, 4, 5), "time", "03:04:05"),
        (Decimal("1.10"), "decimal", "1.10"),
        (uuid.UUID("9f2c1e8e-1c5e-4c7e-9a3b-6f1d2a0b7c55"), "uuid",
         {"hex": "9f2c1e8e1c5e4c7e9a3b6f1d2a0b7c55", "version": 4}),
        (b"caf\xc3\xa9", "bytes", "café"),
        (b"\xff\x00", "base64", "/wA="),
    ],
    ids=["naive-datetime", "aware-datetime", "date", "time", "decimal", "uuid",
         "utf8-bytes", "binary-bytes"],
)
def test_json_wire_format_matches_kombu(value, marker, encoded):
    assert wire({"v": value}) == {"v": {"__type__": marker, "__value__": encoded}}


def test_datetime_is_not_encoded_as_date():
    assert wire(datetime(2024, 1, 1))["__type__"] == "datetime"


def test_json_decodes_documents_written_by_other_producers():
    body = json.dumps({
        "u": {"__type__": "uuid", "__value__": {"hex": "9f2c1e8e1c5e4c7e9a3b6f1d2a0b7c55"}},
        "z": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05Z"},
    }).encode()
    result = loads(body, "application/json", "utf-8")
    assert result["u"] == uuid.UUID("9f2c1e8e-1c5e-4c7e-9a3b-6f1d2a0b7c55")
    assert result["z"] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_json_unknown_marker_raises_decode_error():
    body = b'{"__type__": "martian", "__value__": 1}'
    with pytest.raises(DecodeError, match="martian"):
        loads(body, "application/json", "utf-8")


def test_json_objects_with_other_keys_stay_dicts():
    doc = {"__type__": "martian", "__value__": 1, "extra": True}
    assert roundtrip(doc, "json") == doc


def test_json_honours_dunder_json():
    class Point:
        def __json__(self):
            return {"x": 1, "y": 2}

    assert roundtrip({"p": Point()}, "json") == {"p": {"x": 1, "y": 2}}


def test_register_json_type(json_types):
    class Money:
        def __init__(self, cents):
            self.cents = cents

        def __eq__(self, other):
            return type(other) is Money and other.cents == self.cents

    class Tip(Money):
        pass

    register_json_type(Money, "money", lambda m: m.cents, Money)
    assert wire(Money(250)) == {"__type__": "money", "__value__": 250}
    assert roundtrip([Money(1), Tip(2)], "json") == [Money(1), Money(2)]


# -- encode errors ------------------------------------------------------------


def test_unencodable_object_raises_encode_error():
    class Opaque:
        pass

    with pytest.raises(EncodeError) as info:
        dumps({"k": Opaque()}, "json")
    message = str(info.value)
    assert "Opaque" in message and "dict" in message
    assert "pickle" in message  # suggests another serializer
    assert isinstance(info.value.__cause__, TypeError)
    assert isinstance(info.value, SerializationError)


def test_circular_reference_raises_encode_error():
    loop = []
    loop.append(loop)
    with pytest.raises(EncodeError) as info:
        dumps(loop)
    assert isinstance(info.value.__cause__, ValueError)


def test_unknown_serializer_lists_registered_names():
    with pytest.raises(SerializerNotInstalled) as info:
        dumps({}, "protobuf")
    assert "'protobuf'" in str(info.value)
    for name in ("json", "pickle", "yaml", "msgpack"):
        assert name in str(info.value)


def test_default_serializer_can_change():
    registry.default_serializer = "msgpack"
    assert dumps({"a": 1})[0] == MSGPACK


# -- accept policy ------------------------------------------------------------


def test_pickle_refused_by_default():
    content_type, encoding, body = dumps({"a": 1}, "pickle")
    with pytest.raises(ContentDisallowed) as info:
        loads(body, content_type, encoding)
    message = str(info.value)
    assert "'application/x-python-serialize'" in message
    assert "(pickle)" in message
    assert "['application/json']" in message
    assert "Add 'pickle'" in message
    assert isinstance(info.value, SerializerNotInstalled)


def test_pickle_accepted_when_listed():
    value = {"a": {1, 2}, "b": (datetime(2020, 1, 1), Decimal("1"))}
    assert roundtrip(value, "pickle", prepare_accept_content(["pickle"])) == value


def test_pickle_uses_protocol_4():
    body = dumps({"a": 1}, "pickle")[2]
    assert body[:2] == b"\x80\x04"
    assert pickle.loads(body) == {"a": 1}


def test_force_skips_accept_check():
    content_type, encoding, body = dumps([1], "pickle")
    assert loads(body, content_type, encoding, force=True) == [1]


def test_explicit_accept_replaces_default():
    content_type, encoding, body = dumps({"a": 1})
    with pytest.raises(ContentDisallowed):
        loads(body, content_type, encoding, accept=set())
    with pytest.raises(ContentDisallowed):
        loads(body, content_type, encoding, accept={PICKLE})


def test_accept_may_hold_serializer_names():
    assert roundtrip([1], "pickle", accept={"pickle"}) == [1]


def test_unknown_content_type_refused():
    with pytest.raises(ContentDisallowed) as info:
        loads(b"x", "application/x-martian", "binary")
    assert "'application/x-martian'" in str(info.value)
    assert "Add 'application/x-martian'" in str(info.value)


def test_accepted_but_no_decoder_returns_the_raw_body():
    accept = {"application/x-martian"}
    assert loads(b"\xff\x00", "application/x-martian", "binary", accept=accept) == b"\xff\x00"
    assert loads("héllo".encode(), "application/x-martian", "utf-8", accept=accept) == "héllo"


# -- malformed input ----------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe"])
def test_malformed_json_raises_decode_error(body):
    with pytest.raises(DecodeError) as info:
        loads(body, "application/json", "utf-8")
    assert isinstance(info.value, SerializationError)
    assert isinstance(info.value, KombuError)
    assert "application/json" in str(info.value)
    assert info.value.__cause__ is not None


def test_corrupt_pickle_raises_decode_error():
    with pytest.raises(DecodeError):
        loads(b"\x80\x04garbage", PICKLE, "binary", accept={PICKLE})


# -- yaml and msgpack ---------------------------------------------------------


def test_yaml_roundtrip_when_accepted():
    value = {"a": [1, 2.5, "x", None, True], "b": {"nested": "yes"}}
    assert roundtrip(value, "yaml", prepare_accept_content(["yaml"])) == value


def test_yaml_refused_by_default():
    with pytest.raises(ContentDisallowed, match="yaml"):
        roundtrip({"a": 1}, "yaml")


def test_yaml_never_constructs_python_objects():
    body = b"!!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(DecodeError, match="application/x-yaml"):
        loads(body, YAML, "utf-8", accept={YAML})
    body = b"!!python/object:collections.OrderedDict {}\n"
    with pytest.raises(DecodeError):
        loads(body, YAML, "utf-8", accept={YAML})


def test_yaml_safe_dump_refuses_arbitrary_objects():
    with pytest.raises(EncodeError):
        dumps(object(), "yaml")


def test_msgpack_roundtrip_keeps_bytes_and_str_apart():
    value = {"s": "text", "b": b"\xff\x00", "n": [1, -2, 3.5, None, True]}
    assert roundtrip(value, "msgpack", prepare_accept_content(["msgpack"])) == value


def test_msgpack_refused_by_default():
    with pytest.raises(ContentDisallowed, match="msgpack"):
        roundtrip({"a": 1}, "msgpack")


@pytest.mark.parametrize(
    "name, module, content_type, hint",
    [("yaml", "yaml", YAML, "pip install PyYAML"),
     ("msgpack", "msgpack", MSGPACK, "pip install msgpack")],
)
def test_missing_library_gives_install_hint(
    monkeypatch, name, module, content_type, hint
):
    body = dumps({"a": 1}, name)[2]
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(SerializerNotInstalled, match=hint):
        dumps({"a": 1}, name)
    with pytest.raises(SerializerNotInstalled, match=hint):
        loads(body, content_type, "utf-8", accept={content_type})


# -- custom codecs ------------------------------------------------------------


def test_custom_text_codec_decoder_gets_str():
    seen = []

    def my_loads(text):
        seen.append(type(text))
        return json.loads(text)

    register("myjson", json.dumps, my_loads, content_type="application/x-myjson",
             content_encoding="utf-8")
    content_type, encoding, body = dumps({"é": 1}, "myjson")
    assert (content_type, encoding) == ("application/x-myjson", "utf-8")
    assert loads(body, content_type, encoding, accept={"application/x-myjson"}) == {"é": 1}
    assert seen == [str]


def test_custom_text_codec_honours_message_charset():
    register("latin", lambda s: s, lambda s: s, "application/x-latin", "latin-1")
    content_type, encoding, body = dumps("é", "latin")
    assert (encoding, body) == ("latin-1", b"\xe9")
    assert loads(body, content_type, encoding, accept={content_type}) == "é"
    assert loads("é".encode(), content_type, "utf-8", accept={content_type}) == "é"


def test_custom_binary_codec_decoder_gets_bytes():
    seen = []

    def unreverse(data):
        seen.append(type(data))
        return data[::-1]

    register("rev", lambda b: b[::-1], unreverse, "application/x-rev", "binary")
    content_type, encoding, body = dumps(b"abc", "rev")
    assert (content_type, encoding, body) == ("application/x-rev", "binary", b"cba")
    assert loads(body, content_type, encoding, accept=prepare_accept_content(["rev"])) == b"abc"
    assert seen == [bytes]


def test_custom_codec_is_refused_until_accepted():
    register("rev", lambda b: b[::-1], lambda b: b[::-1], "application/x-rev", "binary")
    with pytest.raises(ContentDisallowed, match=r"\(rev\)"):
        loads(b"cba", "application/x-rev", "binary")


def test_custom_text_subtype_codec_is_not_trusted():
    register("csv", lambda rows: "\n".join(rows), lambda t: t.split("\n"), "text/csv")
    with pytest.raises(ContentDisallowed):
        loads(b"a\nb", "text/csv", "utf-8")
    assert loads(b"a\nb", "text/csv", "utf-8", accept={"text/csv"}) == ["a", "b"]


def test_custom_decoder_errors_become_decode_errors():
    def broken(_):
        raise KeyError("boom")

    register("broken", str, broken, "application/x-broken")
    with pytest.raises(DecodeError, match="application/x-broken") as info:
        loads(b"x", "application/x-broken", "utf-8", accept={"application/x-broken"})
    assert isinstance(info.value.__cause__, KeyError)


def test_encoder_returning_non_bytes_is_an_encode_error():
    register("bad", lambda obj: 42, str, "application/x-bad")
    with pytest.raises(EncodeError):
        dumps("x", "bad")


def test_unregister():
    register("rev", bytes, bytes, "application/x-rev", "binary")
    unregister("rev")
    assert "rev" not in registry.name_to_type
    assert "application/x-rev" not in registry.type_to_name
    with pytest.raises(SerializerNotInstalled):
        dumps(b"x", "rev")
    with pytest.raises(SerializerNotInstalled):
        unregister("rev")


def test_register_replaces_same_name():
    register("rev", bytes, bytes, "application/x-rev", "binary")
    register("rev", bytes, bytes, "application/x-rev2", "binary")
    assert registry.name_to_type["rev"] == "application/x-rev2"
    assert "application/x-rev" not in registry.type_to_name


def test_separate_registries_are_independent():
    mine = SerializerRegistry()
    mine.register("upper", str.upper, str.lower, "application/x-upper")
    mine.enable("upper")
    assert mine.loads(mine.dumps("ab", "upper")[2], "application/x-upper", "utf-8") == "ab"
    assert "upper" not in registry.name_to_type
    assert mine.default_accept == {"application/x-upper"}


# -- accept preparation and defaults ------------------------------------------


def test_prepare_accept_content():
    assert prepare_accept_content(None) is None
    assert prepare_accept_content([]) == set()
    assert prepare_accept_content(["json", "pickle"]) == {"application/json", PICKLE}
    assert prepare_accept_content(["Application/JSON", "yaml"]) == {"application/json", YAML}
    assert prepare_accept_content("msgpack") == {MSGPACK}
    with pytest.raises(SerializerNotInstalled, match="'nope'"):
        prepare_accept_content(["json", "nope"])


def test_enable_and_disable():
    content_type, encoding, body = dumps([1], "pickle")
    registry.enable("pickle")
    assert loads(body, content_type, encoding) == [1]
    registry.disable(PICKLE)
    with pytest.raises(ContentDisallowed):
        loads(body, content_type, encoding)
    with pytest.raises(SerializerNotInstalled):
        registry.enable("nope")


def test_enable_insecure_serializers():
    enable_insecure_serializers()
    assert registry.default_accept == {"application/json", PICKLE, YAML, MSGPACK}
    assert roundtrip({"a": 1}, "pickle") == {"a": 1}
    assert roundtrip({"a": 1}, "yaml") == {"a": 1}
    assert roundtrip({"a": 1}, "msgpack") == {"a": 1}


def test_enable_insecure_serializers_with_choices():
    enable_insecure_serializers(["msgpack"])
    assert registry.default_accept == {"application/json", MSGPACK}


def test_disable_insecure_serializers():
    enable_insecure_serializers()
    disable_insecure_serializers()
    assert registry.default_accept == {"application/json"}
    with pytest.raises(ContentDisallowed):
        roundtrip([1], "pickle")
    disable_insecure_serializers(allowed=["json", "msgpack"])
    assert registry.default_accept == {"application/json", MSGPACK}
    disable_insecure_serializers(allowed=None)
    assert registry.default_accept == set()
    with pytest.raises(ContentDisallowed):
        roundtrip({"a": 1})


# -- properties ---------------------------------------------------------------

json_native = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(), children, max_size=5).filter(
        lambda d: d.keys() != {"__type__", "__value__"}
    ),
    max_leaves=30,
)


@given(json_native)
def test_json_roundtrip_property(value):
    assert roundtrip(value, "json") == value


fixed_offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
extended = (
    st.datetimes()
    | st.datetimes(timezones=fixed_offsets)
    | st.dates()
    | st.times()
    | st.times(timezones=fixed_offsets)
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.binary()
)


@settings(max_examples=200)
@given(st.lists(extended, max_size=4))
def test_json_extended_roundtrip_property(values):
    result = roundtrip(values, "json")
    assert result == values
    assert [type(v) for v in result] == [type(v) for v in values]
