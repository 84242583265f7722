"""py-amqp's socket layer, rebuilt on gevent sockets.

py-amqp opens its sockets through the standard library, which blocks the
whole process unless ``gevent.monkey.patch_all()`` ran. These subclasses
open gevent sockets (and gevent TLS) instead, so the transport is
cooperative in every process, patched or not, and never patches anything.

They also read in large chunks: py-amqp asks the socket for exactly the
bytes of each frame part (two or three ``recv`` calls per frame); here one
``recv`` of up to :data:`READ_CHUNK` bytes usually serves dozens of frames.
"""
from __future__ import annotations

import socket
import ssl
import struct
from typing import Any, Optional, Tuple

from amqp import transport as amqp_transport
from amqp.exceptions import UnexpectedFrame

from ... import green
from ..tls import ssl_context

__all__ = ["GreenSSLTransport", "GreenTCPTransport", "ssl_context"]

#: Bytes asked of the socket per read.
READ_CHUNK = 65536
#: Drop consumed bytes from the read buffer once this many piled up.
COMPACT_AFTER = 262144

_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_END = 0xCE


class _GreenSocketMixin:
    """Connects with gevent sockets and frames reads out of one buffer."""

    sock: Any
    _quick_recv: Any

    def _connect(self, host: str, port: int, timeout: Optional[float]) -> None:
        gsocket = green.cooperative_socket
        entries = gsocket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                      socket.IPPROTO_TCP)
        error: Optional[OSError] = None
        for family, kind, proto, _, address in entries:
            sock = gsocket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            self.sock = sock
            return
        raise error or OSError(f"No address found for {host}:{port}")

    def _reset_buffer(self) -> None:
        self._rbuf = bytearray()
        self._rpos = 0

    def _read(self, n: int, initial: bool = False) -> bytes:
        """Return exactly ``n`` bytes, reading the socket only when the buffer runs dry."""
        rbuf = self._rbuf
        start = self._rpos
        while len(rbuf) - start < n:
            chunk = self._quick_recv(READ_CHUNK)
            if not chunk:
                raise OSError("Server unexpectedly closed connection")
            rbuf += chunk
        self._rpos = start + n
        return bytes(rbuf[start:start + n])

    def read_frame(self, unpack: Any = None) -> Tuple[int, int, bytes]:
        """Read one frame; on a timeout nothing is consumed (the frame is re-read)."""
        if self._rpos and (self._rpos == len(self._rbuf) or self._rpos > COMPACT_AFTER):
            del self._rbuf[:self._rpos]
            self._rpos = 0
        start = self._rpos
        try:
            frame_type, channel, size = _FRAME_HEADER.unpack(self._read(7))
            data = self._read(size + 1)
        except socket.timeout:
            self._rpos = start
            raise
        except (OSError, ssl.SSLError):
            self.connected = False
            raise
        if data[-1] != _FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {data[-1]:#04x} while expecting 0xce")
        return frame_type, channel, data[:-1]


class GreenTCPTransport(_GreenSocketMixin, amqp_transport.TCPTransport):  # type: ignore[misc]  # py-amqp is untyped: Any
    """Plain TCP through the gevent hub."""

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._reset_buffer()


class GreenSSLTransport(_GreenSocketMixin, amqp_transport.SSLTransport):  # type: ignore[misc]  # py-amqp is untyped: Any
    """TLS through the gevent hub (gevent's ssl module, never the stdlib's)."""

    def _setup_transport(self) -> None:
        context, server_hostname = ssl_context(self.sslopts, self.host)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname,
                                        do_handshake_on_connect=False)
        self.sock.settimeout(self.connect_timeout)
        self.sock.do_handshake()
        self.sock.settimeout(None)
        self._quick_recv = self.sock.recv
        self._write = self.sock.sendall
        self._reset_buffer()

    def _shutdown_transport(self) -> None:
        """Skip the TLS close handshake: it could wait on a dead peer."""
