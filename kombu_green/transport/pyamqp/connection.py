"""A py-amqp connection whose socket is read by one greenlet.

Why one reader: a socket can only be waited on by one greenlet at a time
(gevent raises ``ConcurrentObjectUseError`` otherwise), yet many greenlets
want to use one connection at once: consumers waiting in ``drain_events``,
publishers waiting for confirms, anyone waiting for a ``queue_declare``
reply. So a single reader greenlet owns the read side and only *hands
over* what it reads:

* replies complete the waiting call's promise and ring its channel's bell;
* deliveries are queued in :attr:`GreenConnection.deliveries`, and the
  greenlets in ``drain_events`` run the consumer callbacks, never the
  reader, so a slow callback cannot stall replies, heartbeats or other
  consumers;
* a dead socket (or missed heartbeats) is recorded once in
  :attr:`GreenConnection.failure` and wakes every waiter, so nothing hangs.

Writes are serialized by :attr:`GreenConnection.write_lock`; a second
greenlet sends heartbeats, so a connection stays alive however long a
callback runs, as long as the callback itself yields to the hub.
"""
from __future__ import annotations

import socket
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Tuple

import amqp
from amqp import exceptions as amqp_errors

from ... import green
from ...exceptions import ConnectionClosed
from .channel import Channel
from .errors import translate
from .wire import GreenSSLTransport, GreenTCPTransport

if TYPE_CHECKING:  # pragma: no cover
    from ..base import Client

__all__ = ["GreenConnection"]

#: How long ``close()`` waits for the broker's Close-Ok before dropping the socket.
CLOSE_TIMEOUT = 5.0

#: (channel, channel generation, function, argument): work for ``drain_events``.
Delivery = Tuple[Channel, int, Any, Any]


class GreenConnection(amqp.Connection):  # type: ignore[misc]  # py-amqp is untyped: Any
    """py-amqp's connection, made safe to share between greenlets."""

    Channel = Channel

    def __init__(self, *args: Any, client: Optional["Client"] = None,
                 where: str = "", publisher_confirms: bool = False,
                 confirm_timeout: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The kombu_green Connection this belongs to.
        self.client = client
        #: "host:port", for error messages.
        self.where = where
        self.publisher_confirms = publisher_confirms
        self.confirm_timeout = confirm_timeout
        self.write_lock = green.Lock()
        #: Rung when a method for channel 0 arrives or the connection fails.
        self.arrived = green.Bell()
        #: Rung when a delivery is queued, a channel fails, or the connection fails.
        self.delivered = green.Bell()
        self.deliveries: Deque[Delivery] = deque()
        #: Channels holding an error nobody was waiting for (see Channel.fail).
        self.errored_channels: Deque[Channel] = deque()
        self.green_channels: "weakref.WeakSet[Channel]" = weakref.WeakSet()
        #: Why the connection died (the first error), or None while alive.
        self.failure: Optional[BaseException] = None
        #: Frames that need no reply (acks), written together; see send_soon().
        self._outbox = bytearray()
        self._flush_pending = False
        self._reader: Optional[green.Greenlet] = None
        self._beater: Optional[green.Greenlet] = None
        self._shutting_down = False

    def Transport(self, host: str, connect_timeout: Optional[float], ssl: Any = False,
                  read_timeout: Optional[float] = None, write_timeout: Optional[float] = None,
                  socket_settings: Optional[Dict[int, Any]] = None, **kwargs: Any) -> Any:
        # ``{}`` (TLS with default options) is falsy: test for "no TLS" explicitly.
        cls = GreenTCPTransport if ssl is None or ssl is False else GreenSSLTransport
        return cls(host, connect_timeout=connect_timeout, ssl=ssl, socket_settings=socket_settings)

    # -- lifecycle ---------------------------------------------------------

    def connect(self, callback: Any = None) -> Any:
        """Handshake in the calling greenlet, then hand the socket to the reader."""
        result = super().connect(callback)
        writer: Any = self._frame_writer
        lock, outbox = self.write_lock, self._outbox

        def write_frame(*args: Any) -> Any:
            with lock:
                if outbox:
                    self._write_outbox()
                return writer(*args)

        self.frame_writer = write_frame
        self._reader = green.spawn(self._read_forever)
        if self.heartbeat:
            self._beater = green.spawn(self._beat_forever)
        return result

    def close(self, reply_code: int = 0, reply_text: str = "", method_sig: Tuple[int, int] = (0, 0),
              argsig: str = "BsBB") -> None:
        """Close politely if the broker is there; never hang; wake every waiter."""
        self._shutting_down = True
        if self._beater is not None:
            self._beater.kill(block=False)
        try:
            if self.failure is None and self._transport is not None:
                with green.Timeout(CLOSE_TIMEOUT, False):
                    super().close(reply_code, reply_text, method_sig, argsig)
        except (amqp_errors.AMQPError, OSError):
            pass  # the broker is gone already; closing is all we wanted
        finally:
            if self._transport is not None:
                self.collect()
            self._fail(ConnectionClosed(f"Connection to {self.where} was closed"))
            if self._reader is not None and self._reader is not green.getcurrent():
                self._reader.kill(block=False)

    def send_soon(self, frame: bytes) -> None:
        """Queue a frame that needs no reply; it goes out at the next yield to the hub.

        Acks of a batch of deliveries then leave in one write instead of one
        each. Order is kept: any other frame flushes the queue first. Acks
        lost with a dying process only mean redelivery, never loss.
        """
        self._outbox += frame
        if not self._flush_pending:
            self._flush_pending = True
            green.spawn(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_pending = False
        if not self._outbox or self.failure is not None or self._transport is None:
            return
        try:
            with self.write_lock:
                self._write_outbox()
        except OSError as exc:
            self.abort(exc)

    def _write_outbox(self) -> None:
        data = bytes(self._outbox)
        self._outbox.clear()
        self._transport.write(data)
        self.bytes_sent += 1

    def abort(self, exc: BaseException) -> None:
        """Drop the socket at once (e.g. heartbeats missed); waiters get ``exc``."""
        self._fail(exc)
        if self._transport is not None:
            self._transport.close()

    # -- the reader and the heartbeat -----------------------------------------

    def _read_forever(self) -> None:
        try:
            while self._transport is not None:
                try:
                    self.blocking_read(None)
                except socket.timeout:
                    continue
                green.cooperate()
        except green.GreenletExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            self._fail(exc)

    def _beat_forever(self) -> None:
        interval = self.heartbeat / 4.0
        while self.failure is None:
            green.sleep(interval)
            try:
                self.heartbeat_tick(rate=2)
            except amqp_errors.ConnectionForced:
                self.abort(ConnectionClosed(
                    f"The AMQP broker at {self.where} sent no heartbeat for "
                    f"{2 * self.heartbeat:g} s; the connection is considered dead"))
                return
            except (amqp_errors.AMQPError, OSError) as exc:
                self.abort(exc)
                return

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.arrived.ring()
        self.delivered.ring()
        for channel in list(self.green_channels):
            channel.connection_failed(exc)

    # -- waiting (called by py-amqp and by our channels) -------------------

    def raise_failure(self) -> None:
        if self.failure is not None:
            if self._shutting_down and not isinstance(self.failure, ConnectionClosed):
                raise ConnectionClosed(f"Connection to {self.where} was closed")
            raise translate(self.failure, self.where) from self.failure

    def blocking_read(self, timeout: Optional[float] = None) -> Any:
        if timeout is None:  # the reader's case: skip py-amqp's timeout juggling
            return self.on_inbound_frame(self._transport.read_frame())
        return super().blocking_read(timeout)

    def wait_for(self, bell: green.Bell, timeout: Optional[float] = None) -> None:
        """Wait for ``bell`` (the reader reads meanwhile); the reader itself reads inline."""
        if self._reader is None or self._reader is green.getcurrent():
            super().drain_events(timeout)
            return
        self.raise_failure()
        if not bell.wait(timeout):
            raise socket.timeout("timed out")

    def drain_events(self, timeout: Optional[float] = None) -> None:
        """py-amqp's wait loop for channel 0 (connection-level replies)."""
        self.wait_for(self.arrived, timeout)

    def on_inbound_method(self, channel_id: int, method_sig: Any, payload: Any, content: Any) -> Any:
        if not channel_id:
            try:
                return super().on_inbound_method(channel_id, method_sig, payload, content)
            finally:
                self.arrived.ring()
        channel = self.channels.get(channel_id) if self.channels else None
        if channel is None:
            return None  # a late frame for a channel closed meanwhile
        try:
            return channel.dispatch_method(method_sig, payload, content)
        except (amqp_errors.ChannelError, amqp_errors.ConsumerCancelled) as exc:
            channel.fail(exc)
            return None
        finally:
            channel.replied.ring()

    def queue_delivery(self, item: Delivery) -> None:
        self.deliveries.append(item)
        self.delivered.ring()
