"""Message: settlement state machine, redelivery, lazy decoding, errors."""
from __future__ import annotations

import logging
import zlib

import pytest

from kombu_green import Message, Producer, Queue
from kombu_green.exceptions import (
    ContentDisallowed,
    DecodeError,
    MessageStateError,
    PreconditionFailed,
)


@pytest.fixture
def queue(conn):
    bound = Queue("msgs")(conn)
    bound.declare()
    return bound


@pytest.fixture
def put(conn, queue):
    """Publish one message to the test queue."""
    producer = Producer(conn)

    def put(body, **kwargs):
        producer.publish(body, routing_key=queue.name, **kwargs)

    return put


@pytest.fixture
def message(put, queue):
    put({"hello": "world"})
    return queue.get()


# --------------------------------------------------------------- settlement


def test_new_message_is_not_acknowledged(message):
    assert message.acknowledged is False


def test_ack(message, queue):
    message.ack()
    assert message.acknowledged is True
    assert queue.get() is None


def test_ack_is_final_after_reconnect(message, conn, queue):
    message.ack()
    conn.close()
    assert Queue("msgs")(conn).get() is None


@pytest.mark.parametrize("first", ["ack", "reject", "requeue"])
@pytest.mark.parametrize("second", ["ack", "reject", "requeue"])
def test_second_settle_raises_message_state_error(message, first, second):
    getattr(message, first)()
    with pytest.raises(MessageStateError, match="already acknowledged"):
        getattr(message, second)()


def test_message_state_error_is_on_message_class():
    assert Message.MessageStateError is MessageStateError


def test_reject_drops_message(message, queue):
    message.reject()
    assert message.acknowledged is True
    assert queue.get() is None


def test_reject_with_requeue_returns_message(message, queue):
    message.reject(requeue=True)
    again = queue.get()
    assert again.payload == {"hello": "world"}
    assert again.delivery_info["redelivered"] is True


def test_requeue_comes_back_redelivered(message, queue):
    assert message.delivery_info["redelivered"] is False
    assert message.redelivered is False
    message.requeue()
    assert message.acknowledged is True
    again = queue.get()
    assert again is not None
    assert again.payload == {"hello": "world"}
    assert again.delivery_info["redelivered"] is True
    assert again.redelivered is True
    assert again.delivery_tag != message.delivery_tag


def test_requeued_message_goes_to_front(put, queue):
    put(1)
    put(2)
    first = queue.get()
    first.requeue()
    assert queue.get().payload == 1


def test_unacked_message_returns_on_close(message, conn):
    conn.close()
    again = Queue("msgs")(conn).get()
    assert again.payload == {"hello": "world"}
    assert again.redelivered is True


def test_ack_multiple(put, queue):
    for i in range(3):
        put(i)
    messages = [queue.get() for _ in range(3)]
    messages[-1].ack(multiple=True)
    queue.channel.close()
    assert Queue("msgs")(queue.channel.connection.channel()).get() is None


def test_ack_on_closed_channel_fails(message, conn):
    message.channel.close()
    with pytest.raises(conn.connection_errors + conn.channel_errors):
        message.ack()
    assert message.acknowledged is False


def test_message_without_channel_cannot_be_acked():
    message = Message(body=b"{}", content_type="application/json")
    for verb in ("ack", "reject", "requeue"):
        with pytest.raises(MessageStateError, match="channel"):
            getattr(message, verb)()
    assert message.acknowledged is False


def test_ack_log_error_logs_instead_of_raising(caplog):
    message = Message(body=b"{}", delivery_tag=7)
    logger = logging.getLogger("test_message.ack_log_error")
    with caplog.at_level(logging.CRITICAL, logger=logger.name):
        message.ack_log_error(logger, (MessageStateError,))
    assert any("Couldn't ack" in record.getMessage() and record.levelno == logging.CRITICAL
               for record in caplog.records)


def test_ack_log_error_acks_normally(message, queue, caplog):
    message.ack_log_error(logging.getLogger("test_message"), (MessageStateError,))
    assert message.acknowledged
    assert not caplog.records


def test_ack_log_error_only_catches_given_errors():
    message = Message(body=b"{}")
    with pytest.raises(MessageStateError):
        message.ack_log_error(logging.getLogger("test_message"), (PreconditionFailed,))


def test_reject_log_error_logs(caplog):
    message = Message(body=b"{}", delivery_tag=3)
    logger = logging.getLogger("test_message.reject_log_error")
    with caplog.at_level(logging.CRITICAL, logger=logger.name):
        message.reject_log_error(logger, (MessageStateError,))
    assert any("Couldn't reject" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ payload


def test_payload_and_attributes(message):
    assert message.payload == {"hello": "world"}
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert isinstance(message.body, bytes)
    assert message.delivery_tag is not None
    assert message.delivery_info["exchange"] == ""
    assert message.delivery_info["routing_key"] == "msgs"


def test_decode_caches_result(message):
    first = message.decode()
    assert message.decode() is first
    assert message.payload is first


def test_decode_does_not_settle(message):
    message.decode()
    assert message.acknowledged is False


def test_raw_bytes_message(put, queue):
    put(b"\x00\x01binary")
    message = queue.get()
    assert message.content_type == "application/data"
    assert message.content_encoding == "binary"
    assert message.payload == b"\x00\x01binary"


def test_text_message(put, queue):
    put("héllo")
    message = queue.get()
    assert message.content_type == "text/plain"
    assert message.payload == "héllo"


def test_standalone_message_decodes():
    message = Message(body=b'{"a": [1, 2]}', content_type="application/json",
                      content_encoding="utf-8")
    assert message.payload == {"a": [1, 2]}
    assert message.headers == {} and message.properties == {} and message.delivery_info == {}


def test_standalone_compressed_message_is_decompressed():
    message = Message(body=zlib.compress(b'{"a": 1}'), content_type="application/json",
                      content_encoding="utf-8", headers={"compression": "application/x-gzip"})
    assert message.body == b'{"a": 1}'
    assert message.payload == {"a": 1}


def test_accept_refuses_content_type():
    message = Message(body=b'{"a": 1}', content_type="application/json", accept=["yaml"])
    with pytest.raises(ContentDisallowed, match="application/json"):
        message.decode()


def test_pickle_refused_by_default(put, queue):
    put({"a": 1}, serializer="pickle")
    message = queue.get()
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        message.decode()
    assert message.acknowledged is False


def test_malformed_json_raises_decode_error(put, queue):
    put(b"{not json", content_type="application/json")
    message = queue.get()
    with pytest.raises(DecodeError):
        message.decode()
    assert message.acknowledged is False
    message.reject()
    assert queue.get() is None


def test_corrupt_compressed_body_raises_on_decode(put, queue):
    put(b"definitely not zlib", content_type="application/json",
        headers={"compression": "application/x-gzip"})
    message = queue.get()  # receiving does not raise
    assert message is not None
    with pytest.raises(DecodeError):
        message.decode()
    with pytest.raises(DecodeError):
        _ = message.payload
    assert message.acknowledged is False
    message.requeue()
    assert queue.get().redelivered is True


def test_decode_error_message_says_which_message(put, queue):
    put(b"{not json", content_type="application/json")
    message = queue.get()
    with pytest.raises(DecodeError, match="msgs"):
        message.decode()


def test_headers_and_properties(put, queue):
    put({"x": 1}, headers={"trace": "abc"}, priority=3, correlation_id="cid-1",
        reply_to="replies")
    message = queue.get()
    assert message.headers == {"trace": "abc"}
    assert message.properties["priority"] == 3
    assert message.properties["correlation_id"] == "cid-1"
    assert message.properties["reply_to"] == "replies"


def test_repr_mentions_state(message):
    assert "RECEIVED" in repr(message)
    message.ack()
    assert "ACK" in repr(message)
