"""Pure logic of the beanstalk transport: tube names, priorities, options,
replies, payloads and error translation.

No server here; the behaviour on a real beanstalkd is in tests/integration/.
"""
from __future__ import annotations

import socket
from typing import List

import greenstalk
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kombu_green import Connection, exceptions
from kombu_green.transport.beanstalk.config import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TTR,
    PRIORITY_BASE,
    TUBE_CHARS,
    WAKE_PRIORITY,
    from_beanstalk_priority,
    is_plain_tube,
    parse_options,
    queue_name,
    to_beanstalk_priority,
    tube_name,
    wake_tube,
)
from kombu_green.transport.beanstalk.errors import translate
from kombu_green.transport.beanstalk.protocol import Reader, Reply, deleted, parse_stats, stats_request, stats_results
from kombu_green.transport.beanstalk.reserving import decode, encode
from kombu_green.transport.virtual.payload import make

WHERE = "127.0.0.1:11300"


# -- tube names -----------------------------------------------------------------------


def valid_tube(name: str) -> bool:
    return (0 < len(name.encode()) <= 200 and not name.startswith("-")
            and all(char in TUBE_CHARS for char in name))


@pytest.mark.parametrize("name", ["celery", "kgt-1f2e3d4c5b", "amq.gen-6c1e0b52-7a3f-4d0e-9a57-0f3c2b1d4e5f",
                                  "a+b/c;d.e$f_g(h)", "x" * 200])
def test_valid_names_are_their_own_tube(name: str) -> None:
    assert is_plain_tube(name) and tube_name(name) == name and queue_name(name) == name


@pytest.mark.parametrize("name, tube", [
    ("a b", "$kg$a$20b"),
    ("-lead", "$kg$-lead"),
    ("video@host#1", "$kg$video$40host$231"),
    ("cost$", "cost$"),  # '$' is allowed: unchanged
    ("$kg$a", "$kg$$24kg$24a"),  # the reserved prefix is escaped, so it cannot collide
    ("é", "$kg$$C3$A9"),
    ("", "$kg$"),
])
def test_other_names_are_escaped(name: str, tube: str) -> None:
    assert tube_name(name) == tube
    assert valid_tube(tube)
    assert queue_name(tube) == name


def test_long_names_are_cut_and_hashed() -> None:
    long_a, long_b = "q " * 150 + "a", "q " * 150 + "b"
    tube_a, tube_b = tube_name(long_a), tube_name(long_b)
    assert valid_tube(tube_a) and valid_tube(tube_b) and tube_a != tube_b
    assert tube_a.startswith("$kgh") and queue_name(tube_a) is None
    assert tube_name("x" * 201).startswith("$kgh")


def test_the_wake_tube_is_out_of_reach_of_every_queue_name() -> None:
    tube = wake_tube("0123abcd")
    assert valid_tube(tube) and queue_name(tube) is None
    assert tube_name(tube) != tube


@given(st.text(max_size=120))
def test_every_name_maps_to_a_valid_tube_it_can_be_read_back_from(name: str) -> None:
    tube = tube_name(name)
    assert valid_tube(tube)
    back = queue_name(tube)
    assert back == name or (back is None and tube.startswith("$kgh"))


@given(st.text(max_size=60), st.text(max_size=60))
def test_different_names_never_share_a_tube(first: str, second: str) -> None:
    if first != second:
        assert tube_name(first) != tube_name(second)


# -- priorities -----------------------------------------------------------------------


def test_priority_9_is_reserved_first_and_0_sits_at_the_usual_default() -> None:
    mapped = [to_beanstalk_priority(p) for p in range(10)]
    assert mapped == sorted(mapped, reverse=True)  # lower beanstalk priority = sooner
    assert to_beanstalk_priority(0) == PRIORITY_BASE == 2 ** 31
    assert to_beanstalk_priority(9) == 2 ** 31 - 9
    assert WAKE_PRIORITY < min(mapped)  # wake-ups overtake every message
    assert [from_beanstalk_priority(p) for p in mapped] == list(range(10))


def test_priorities_out_of_range_are_clamped() -> None:
    assert to_beanstalk_priority(-3) == to_beanstalk_priority(0)
    assert to_beanstalk_priority(42) == to_beanstalk_priority(9)
    assert from_beanstalk_priority(0) == 9  # a very urgent job of another client
    assert from_beanstalk_priority(2 ** 32 - 1) == 0
    assert from_beanstalk_priority(2 ** 16) == 9  # greenstalk's default priority


# -- options ----------------------------------------------------------------------------


def test_option_defaults() -> None:
    options = parse_options({}, connect_timeout=5.0)
    assert options.ttr == DEFAULT_TTR == 3600
    assert options.max_connections == DEFAULT_MAX_CONNECTIONS
    assert options.max_batch == DEFAULT_MAX_BATCH
    assert options.socket_connect_timeout == 5.0


def test_options_from_a_dict_or_url_text() -> None:
    options = parse_options({"ttr": "30", "max_connections": 2, "max_batch": 8.0,
                             "socket_connect_timeout": "1.5", "visibility_timeout": 9})
    assert (options.ttr, options.max_connections, options.max_batch) == (30, 2, 8)
    assert options.socket_connect_timeout == 1.5


@pytest.mark.parametrize("options", [
    {"ttr": 0}, {"ttr": 1.5}, {"ttr": "soon"}, {"ttr": True}, {"ttr": 2 ** 32}, {"max_connections": 0},
    {"max_batch": -1}, {"socket_connect_timeout": 0}, {"socket_connect_timeout": "x"},
])
def test_bad_options_are_configuration_errors_naming_the_option(options: dict) -> None:
    ((name, value),) = options.items()
    with pytest.raises(exceptions.ConfigurationError) as info:
        parse_options(options)
    assert str(info.value).startswith(f"beanstalk transport option {name}={value!r} is not valid: it must be ")


def test_bad_options_fail_before_any_connection() -> None:
    conn = Connection("beanstalk://127.0.0.1:1?ttr=0")
    with pytest.raises(exceptions.ConfigurationError, match="beanstalk transport option ttr="):
        conn.transport  # noqa: B018 - creating the transport checks its options


def test_a_virtual_host_is_a_configuration_error() -> None:
    conn = Connection("beanstalk://127.0.0.1:1/jobs")
    with pytest.raises(exceptions.ConfigurationError, match="no virtual hosts"):
        conn.connect()


def test_a_non_numeric_port_is_a_configuration_error() -> None:
    with pytest.raises(exceptions.ConfigurationError):
        Connection("beanstalk://127.0.0.1:eleven/")


# -- replies ------------------------------------------------------------------------------


class Feed:
    """A socket whose recv_into() hands out prepared chunks, then EOF."""

    def __init__(self, chunks: List[bytes]) -> None:
        self.chunks = list(chunks)

    def recv_into(self, buffer: memoryview) -> int:
        chunk = self.chunks.pop(0) if self.chunks else b""
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_replies_split_across_reads_are_reassembled() -> None:
    reader = Reader(Feed([b"RESERVED 12 5\r", b"\nhel", b"lo\r\nTIMED_OUT\r\n"]))
    assert reader.readline() == b"RESERVED 12 5\r\n"
    assert reader.read(7) == b"hello\r\n"
    assert reader.readline() == b"TIMED_OUT\r\n"
    assert reader.readline() == b""  # end of stream


def test_reply_expect_raises_greenstalks_errors() -> None:
    assert Reply(b"DELETED", [], None).expect(b"DELETED").status == b"DELETED"
    with pytest.raises(greenstalk.NotFoundError):
        Reply(b"NOT_FOUND", [], None).expect(b"DELETED")
    with pytest.raises(greenstalk.UnknownResponseError):
        Reply(b"WHAT", [b"1"], None).expect(b"DELETED")


def test_stats_are_parsed_with_numbers() -> None:
    stats = parse_stats(b"---\nid: 7\ntube: kgt-a\nstate: reserved\npri: 2147483648\nreserves: 2\n")
    assert stats == {"id": 7, "tube": "kgt-a", "state": "reserved", "pri": 2 ** 31, "reserves": 2}


def test_job_and_tube_statistics_in_one_round_trip() -> None:
    request, count = stats_request([4, 5], ["kgt-a"])
    assert request == b"stats-job 4\r\nstats-job 5\r\nstats-tube kgt-a\r\n" and count == 3
    job = b"---\nid: 4\ntube: kgt-a\nstate: reserved\npri: 2147483639\nage: 0\nreserves: 3\nkicks: 0\n"
    tube = b"---\nname: kgt-a\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 17\ncurrent-jobs-reserved: 1\n"
    stats, ready = stats_results([Reply(b"OK", [b"90"], job), Reply(b"NOT_FOUND", [], None),
                                  Reply(b"OK", [b"80"], tube)], jobs=2)
    assert stats == [{"tube": "kgt-a", "pri": 2 ** 31 - 9, "reserves": 3}, None] and ready == 17
    assert stats_results([Reply(b"OK", [b"90"], job)], jobs=1)[1] is None  # no tube asked about


def test_deletes_report_the_jobs_not_found() -> None:
    assert deleted([1, 2, 3], [Reply(b"DELETED", [], None), Reply(b"NOT_FOUND", [], None),
                               Reply(b"DELETED", [], None)]) == [2]
    with pytest.raises(greenstalk.BadFormatError):
        deleted([1], [Reply(b"BAD_FORMAT", [], None)])


# -- payloads -----------------------------------------------------------------------------


def test_payload_round_trip_keeps_local_fields_local() -> None:
    payload = make(b"\x00body", "application/data", "binary", {"h": 1}, {"priority": 3})
    payload.update(job=5, job_pri=7, redelivered=True)
    raw = encode(payload)
    assert b'"job"' not in raw and b"redelivered" not in raw
    back = decode(raw, "q", job_id=9, priority=2 ** 31 - 3, reserves=1)
    assert back["body"] == b"\x00body" and back["headers"] == {"h": 1}
    assert (back["job"], back["job_pri"], back["redelivered"]) == (9, 2 ** 31 - 3, False)
    assert decode(raw, "q", 9, 0, reserves=2)["redelivered"] is True


@pytest.mark.parametrize("raw", [b"plain text", b"\xff\xfe", b'{"id": 1}', b"[1, 2]", b'"text"'])
def test_jobs_of_other_clients_are_delivered_as_raw_bytes(raw: bytes) -> None:
    payload = decode(raw, "q", job_id=3, priority=2 ** 31 - 4, reserves=1)
    assert payload["body"] == raw
    assert payload["content-type"] == "application/data"
    assert payload["properties"]["priority"] == 4
    assert payload["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q"}


# -- errors -------------------------------------------------------------------------------


def test_unreachable_server_names_host_and_port() -> None:
    error = translate(ConnectionRefusedError(111, "Connection refused"), WHERE)
    assert isinstance(error, exceptions.OperationalError)
    assert WHERE in str(error) and "Is it running" in str(error)


def test_a_lost_connection_is_operational() -> None:
    assert isinstance(translate(ConnectionResetError("closed"), WHERE), exceptions.OperationalError)
    timed_out = translate(socket.timeout("timed out"), WHERE)
    assert isinstance(timed_out, exceptions.OperationalError) and "Timed out" in str(timed_out)


def test_a_job_too_big_names_the_limit() -> None:
    error = translate(greenstalk.JobTooBigError([]), WHERE)
    assert isinstance(error, exceptions.ChannelError) and not isinstance(error, exceptions.OperationalError)
    assert "-z" in str(error) and WHERE in str(error)


def test_other_refusals_name_the_response() -> None:
    error = translate(greenstalk.OutOfMemoryError([]), WHERE)
    assert isinstance(error, exceptions.ChannelError) and "OUT_OF_MEMORY" in str(error)
    draining = translate(greenstalk.DrainingError([]), WHERE)
    assert isinstance(draining, exceptions.OperationalError) and "draining" in str(draining)
    unknown = translate(greenstalk.UnknownResponseError(b"HUH", []), WHERE)
    assert isinstance(unknown, exceptions.ChannelError) and "HUH" in str(unknown)


def test_kombu_green_errors_and_others_pass_through() -> None:
    mine = exceptions.ChannelError("x")
    assert translate(mine, WHERE) is mine
    other = KeyError("k")
    assert translate(other, WHERE) is other
