"""Pure logic of the AMQP transport: framing, error translation, TLS options.

No broker here: sockets are replaced by byte feeds, which is all this logic
sees. The behaviour on a real RabbitMQ is in tests/integration/.
"""
from __future__ import annotations

import socket
import ssl
import struct
from typing import List

import pytest
from amqp import exceptions as amqp_errors

from kombu_green import Connection, exceptions
from kombu_green.transport.pyamqp import SSLTransport, Transport
from kombu_green.transport.pyamqp.errors import translate
from kombu_green.transport.pyamqp.wire import GreenTCPTransport, ssl_context


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


class FeedTransport(GreenTCPTransport):
    """The framing code of the real transport, reading from a list of chunks."""

    def __init__(self, chunks: List[bytes]) -> None:
        super().__init__("127.0.0.1:5672")
        self.chunks = list(chunks)
        self.recv_calls = 0
        self._quick_recv = self._feed
        self._reset_buffer()

    def _feed(self, size: int) -> bytes:
        self.recv_calls += 1
        if not self.chunks:
            raise socket.timeout("timed out")
        return self.chunks.pop(0)


def test_many_frames_come_out_of_one_read() -> None:
    data = b"".join(frame(1, n, b"x" * n) for n in range(1, 51))
    feed = FeedTransport([data])
    frames = [feed.read_frame() for _ in range(50)]
    assert frames == [(1, n, b"x" * n) for n in range(1, 51)]
    assert feed.recv_calls == 1


def test_a_frame_split_across_reads_is_reassembled() -> None:
    data = frame(3, 7, b"payload" * 100)
    feed = FeedTransport([data[:3], data[3:10], data[10:]])
    assert feed.read_frame() == (3, 7, b"payload" * 100)


def test_a_timeout_mid_frame_loses_nothing() -> None:
    data = frame(1, 1, b"abc") + frame(1, 2, b"defgh")
    feed = FeedTransport([data[:15]])  # the second frame is cut short
    assert feed.read_frame() == (1, 1, b"abc")
    with pytest.raises(socket.timeout):
        feed.read_frame()
    feed.chunks.append(data[15:])
    assert feed.read_frame() == (1, 2, b"defgh")


def test_a_bad_frame_end_is_an_error() -> None:
    bad = struct.pack(">BHI", 1, 1, 2) + b"ab" + b"\x00"
    with pytest.raises(amqp_errors.UnexpectedFrame):
        FeedTransport([bad]).read_frame()


def test_a_closed_socket_is_an_error() -> None:
    with pytest.raises(OSError, match="closed"):
        FeedTransport([b""]).read_frame()


@pytest.mark.parametrize("code, kind", [
    (404, exceptions.NotFound), (406, exceptions.PreconditionFailed),
    (403, exceptions.AccessRefused), (405, exceptions.ResourceLocked),
    (320, exceptions.ConnectionClosed),
])
def test_broker_reply_codes_map_to_our_errors(code: int, kind: type) -> None:
    error = translate(amqp_errors.error_for_code(code, "TEXT", (50, 10), amqp_errors.ChannelError),
                      "broker:5672")
    assert isinstance(error, kind)
    assert "broker:5672" in str(error) and str(code) in str(error) and "TEXT" in str(error)
    assert error.reply_code == code


def test_socket_errors_name_the_address_and_are_retryable() -> None:
    error = translate(ConnectionRefusedError(111, "Connection refused"), "10.1.2.3:5999")
    assert isinstance(error, exceptions.OperationalError)
    assert "10.1.2.3:5999" in str(error) and "Connection refused" in str(error)
    assert isinstance(translate(socket.timeout(), "h:1"), exceptions.OperationalError)
    assert isinstance(translate(ssl.SSLError("bad cert"), "h:1"), exceptions.OperationalError)


def test_our_errors_and_unknown_errors_pass_through() -> None:
    ours = exceptions.NotFound("x")
    assert translate(ours, "h:1") is ours
    other = ValueError("y")
    assert translate(other, "h:1") is other


def test_connection_and_channel_errors_are_advertised() -> None:
    conn = Connection("amqp://guest:secret@127.0.0.1:5672//")
    assert exceptions.OperationalError in conn.connection_errors
    assert exceptions.ChannelError in conn.channel_errors
    assert not issubclass(exceptions.AccessRefused, conn.connection_errors)


def test_tls_context_defaults_verify_the_host() -> None:
    context, hostname = ssl_context({}, "broker.example")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert hostname == "broker.example"


def test_tls_context_options() -> None:
    context, hostname = ssl_context({"cert_reqs": "CERT_NONE", "server_hostname": "other"}, "h")
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert hostname == "other"


def test_scheme_picks_the_transport_and_port() -> None:
    plain = Connection("amqp://u:p@h//")
    tls = Connection("amqps://u:p@h//?ssl_ca_certs=/ca.pem")
    assert plain.transport_class is Transport and tls.transport_class is SSLTransport
    assert plain.transport._address() == "h:5672"
    assert tls.transport._address() == "h:5671"
    assert tls.transport._ssl_options() == {"ca_certs": "/ca.pem"}
    assert plain.transport._ssl_options() is False
    assert Connection("pyamqp://h//").transport_class is Transport


def test_bad_ssl_option_type_is_a_configuration_error() -> None:
    with pytest.raises(exceptions.ConfigurationError, match="ssl must be"):
        Connection("amqp://h//", ssl=42).transport._ssl_options()


def test_confirms_settle_one_or_up_to_a_tag() -> None:
    from kombu_green.transport.pyamqp.confirms import Confirms

    confirms = Confirms()
    results = [confirms.track()[1] for _ in range(5)]
    confirms.settle(2, multiple=False)
    assert [r.ready() for r in results] == [False, True, False, False, False]
    confirms.settle(4, multiple=True)
    assert [r.ready() for r in results] == [True, True, True, True, False]
    confirms.settle(5, multiple=False, error=exceptions.MessageNacked("no"))
    with pytest.raises(exceptions.MessageNacked):
        results[4].get()
    assert all(r.successful() for r in results[:4])


def test_confirms_fail_all_and_restart_numbering() -> None:
    from kombu_green.transport.pyamqp.confirms import Confirms

    confirms = Confirms()
    first = [confirms.track() for _ in range(3)]
    assert confirms.fail_all(exceptions.ConnectionClosed("gone")) == 3
    assert all(isinstance(r.exception, exceptions.ConnectionClosed) for _, r in first)
    confirms.restart()
    assert confirms.track()[0] == 1
    confirms.forget(1)
    assert confirms.fail_all(exceptions.ConnectionClosed("gone")) == 0
