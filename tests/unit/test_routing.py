"""Routing rules for non-AMQP transports must agree with RabbitMQ's."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kombu_green.transport.virtual.exchange import (
    EXCHANGE_TYPES,
    Binding,
    direct_match,
    headers_match,
    route,
    topic_match,
)

# --------------------------------------------------------------------- topic

TOPIC_CASES = [
    # seed facts
    ("*.stock.#", "usd.stock", True),
    ("*.stock.#", "eur.stock.db", True),
    ("*.stock.#", "stock.nasdaq", False),
    # "#" matches everything, including the empty key
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    # "#" may stand for zero words, dots included
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("a.#", "", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("#.a.#", "a", True),
    ("#.a.#", "x.a.y", True),
    ("#.a.#", "x.y", False),
    # "*" is exactly one word
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*", ".", False),
    ("*.*", ".", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.*.c", "a..c", True),  # an empty word is still a word
    ("*.#", "", False),
    ("*.#", "a", True),
    ("#.*", "a.b.c", True),
    # empty pattern matches only the empty key
    ("", "", True),
    ("", "a", False),
    ("", ".", False),
    # literals, including regex metacharacters that must not leak
    ("a.b", "a.b", True),
    ("a.b", "a.bb", False),
    ("a.b", "aXb", False),
    ("a+b", "a+b", True),
    ("a+b", "aab", False),
    ("a(b", "a(b", True),
    ("a.b*", "a.b*", True),
    ("a.b*", "a.bc", False),
    ("[ab]", "a", False),
    ("^a$", "^a$", True),
    ("a|b", "a", False),
    ("stock.#x", "stock.#x", True),  # "#" inside a word is literal
    ("stock.#x", "stock.a", False),
    ("a.*b", "a.xb", False),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
]


@pytest.mark.parametrize("pattern, key, expected", TOPIC_CASES)
def test_topic_match_table(pattern, key, expected):
    assert topic_match(pattern, key) is expected


def reference_topic_match(pattern: str, key: str) -> bool:
    """Independent oracle: regex over a key where every word ends in ".".

    Terminating each word (rather than separating) lets "#" be a plain
    "zero or more words" group that takes its dot with it. The empty key and
    empty pattern are zero words, as in RabbitMQ.
    """
    subject = key + "." if key else ""
    parts = []
    for word in pattern.split(".") if pattern else []:
        if word == "#":
            parts.append(r"(?:[^.]*\.)*")
        elif word == "*":
            parts.append(r"[^.]*\.")
        else:
            parts.append(re.escape(word) + r"\.")
    return re.fullmatch("".join(parts), subject) is not None


@pytest.mark.parametrize("pattern, key, expected", TOPIC_CASES)
def test_reference_oracle_agrees_with_table(pattern, key, expected):
    assert reference_topic_match(pattern, key) is expected


def _dotted(words):
    return st.lists(st.sampled_from(words), max_size=6).map(".".join)


PATTERNS = _dotted(["a", "b", "c", "", "*", "#"])
KEYS = _dotted(["a", "b", "c", ""])


@settings(max_examples=2000)
@given(pattern=PATTERNS, key=KEYS)
def test_topic_match_agrees_with_reference(pattern, key):
    assert topic_match(pattern, key) is reference_topic_match(pattern, key)


@given(st.lists(st.sampled_from(["#", "*", "a"]), max_size=40).map(".".join),
       st.lists(st.just("a"), max_size=40).map(".".join))
def test_topic_match_no_blowup_on_many_wildcards(pattern, key):
    assert topic_match(pattern, key) is reference_topic_match(pattern, key)


def test_topic_match_long_adversarial_pattern_is_fast():
    pattern = ".".join(["#", "a"] * 200) + ".b"
    key = ".".join(["a"] * 400)
    assert topic_match(pattern, key) is False


# -------------------------------------------------------------------- direct

def test_direct_match_is_exact():
    b = Binding("q", "a.b")
    assert direct_match(b, "a.b", None)
    assert not direct_match(b, "a.B", None)
    assert not direct_match(b, "a.b.", None)
    assert not direct_match(Binding("q", "#"), "a", None)
    assert not direct_match(Binding("q", "*"), "a", None)
    assert direct_match(Binding("q"), "", {"x": 1})


def test_binding_defaults():
    b = Binding("q")
    assert b.queue == "q" and b.routing_key == "" and b.arguments is None


# ------------------------------------------------------------------- headers

HEADERS_CASES = [
    # default is "all"
    ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
    ({"x-match": "all", "a": 1}, {"a": 1}, True),
    ({"x-match": "all", "a": 1}, {"a": "1"}, False),
    # "any"
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 9, "b": 9}, False),
    ({"x-match": "any", "a": 1}, {}, False),
    # None binding value: key presence only
    ({"a": None}, {"a": "anything"}, True),
    ({"a": None}, {"a": None}, True),
    ({"a": None}, {"b": 1}, False),
    ({"x-match": "any", "a": None, "b": 2}, {"a": 0}, True),
    ({"a": 1}, {"a": None}, False),
    # "x-" keys in the binding are ignored by all/any
    ({"x-foo": 1, "a": 1}, {"a": 1}, True),
    ({"x-match": "any", "x-foo": 1}, {"x-foo": 1}, False),
    ({"x-match": "all", "x-foo": 1}, {}, True),
    # ... but compared by the "-with-x" variants
    ({"x-match": "all-with-x", "x-foo": 1, "a": 1}, {"a": 1}, False),
    ({"x-match": "all-with-x", "x-foo": 1, "a": 1}, {"a": 1, "x-foo": 1}, True),
    ({"x-match": "any-with-x", "x-foo": 1, "a": 1}, {"x-foo": 1}, True),
    ({"x-match": "any-with-x", "x-foo": 1}, {"x-foo": 2}, False),
    ({"x-match": "all-with-x", "x-foo": None}, {"x-foo": "v"}, True),
    # "x-match" itself is never a comparable key
    ({"x-match": "all-with-x"}, {}, True),
    ({"x-match": "any-with-x"}, {"x-match": "any-with-x"}, False),
    # nothing to compare: all -> everything, any -> nothing
    (None, None, True),
    ({}, {"a": 1}, True),
    ({"x-match": "any"}, {"a": 1}, False),
    # missing headers are an empty mapping
    ({"a": 1}, None, False),
    ({"x-match": "any", "a": None}, None, False),
    # unknown x-match falls back to "all"
    ({"x-match": "bogus", "a": 1, "b": 2}, {"a": 1}, False),
    ({"x-match": "bogus", "a": 1}, {"a": 1}, True),
    ({"x-match": b"any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": ["any"], "a": 1, "b": 2}, {"b": 2}, False),
]


@pytest.mark.parametrize("arguments, headers, expected", HEADERS_CASES)
def test_headers_match_table(arguments, headers, expected):
    assert headers_match(arguments, headers) is expected


# --------------------------------------------------------------------- route

BINDINGS = [
    Binding("q1", "a.b"),
    Binding("q2", "a.*"),
    Binding("q3", "#"),
    Binding("q1", "a.#"),
    Binding("q4", "x", {"x-match": "any", "h": 1}),
]


def test_exchange_types():
    assert EXCHANGE_TYPES == frozenset({"direct", "topic", "fanout", "headers"})
    assert isinstance(EXCHANGE_TYPES, frozenset)


@pytest.mark.parametrize("exchange_type, key, headers, expected", [
    ("direct", "a.b", None, ["q1"]),
    ("direct", "x", None, ["q4"]),
    ("direct", "nope", None, []),
    ("topic", "a.b", None, ["q1", "q2", "q3"]),
    ("topic", "a", None, ["q3", "q1"]),
    ("topic", "", None, ["q3"]),
    ("fanout", "anything", None, ["q1", "q2", "q3", "q4"]),
    ("headers", "", {"h": 1}, ["q1", "q2", "q3", "q4"]),  # no args = match all
    ("headers", "", {"h": 2}, ["q1", "q2", "q3"]),
])
def test_route_table(exchange_type, key, headers, expected):
    assert route(exchange_type, BINDINGS, key, headers) == expected


def test_route_duplicate_binding_delivers_once():
    bindings = [Binding("q", "k"), Binding("q", "k"), Binding("r", "k")]
    assert route("direct", bindings, "k") == ["q", "r"]
    assert route("fanout", bindings, "") == ["q", "r"]


def test_route_accepts_any_iterable():
    assert route("fanout", (Binding(q) for q in "abc"), "") == ["a", "b", "c"]
    assert route("topic", [], "a") == []


def test_route_unknown_type_raises_value_error():
    with pytest.raises(ValueError) as info:
        route("x-consistent-hash", BINDINGS, "k")
    message = str(info.value)
    assert "x-consistent-hash" in message
    for name in EXCHANGE_TYPES:
        assert name in message


QUEUES = st.sampled_from(["q1", "q2", "q3", "q4"])
BINDING = st.builds(
    Binding,
    queue=QUEUES,
    routing_key=PATTERNS,
    arguments=st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(["x-match", "a", "x-b"]),
                        st.sampled_from(["any", "all", 1, None]), max_size=3),
    ),
)


@given(bindings=st.lists(BINDING, max_size=12), key=KEYS)
def test_fanout_routes_to_every_queue(bindings, key):
    expected = list(dict.fromkeys(b.queue for b in bindings))
    assert route("fanout", bindings, key) == expected


@given(
    exchange_type=st.sampled_from(sorted(EXCHANGE_TYPES)),
    bindings=st.lists(BINDING, max_size=12),
    key=KEYS,
    headers=st.one_of(st.none(), st.dictionaries(
        st.sampled_from(["a", "x-b"]), st.sampled_from([1, "any", None]))),
)
def test_route_never_duplicates_and_keeps_binding_order(
    exchange_type, bindings, key, headers
):
    def matches(b):
        if exchange_type == "direct":
            return b.routing_key == key
        if exchange_type == "topic":
            return reference_topic_match(b.routing_key, key)
        if exchange_type == "headers":
            return headers_match(b.arguments, headers)
        return True

    result = route(exchange_type, bindings, key, headers)
    assert len(result) == len(set(result))
    # queues appear in the order of their first *matching* binding
    assert result == list(dict.fromkeys(b.queue for b in bindings if matches(b)))
