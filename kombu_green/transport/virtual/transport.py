"""The virtual transport: one connection's channels and its event loop.

:meth:`Transport.drain_events` waits for a message on every queue that any
channel of this connection consumes -- all at once, in one wait on the
store -- and delivers exactly one message per call. Consumers being added
or cancelled, and acks freeing prefetch slots, ring the transport's bell so
a waiting ``drain_events`` re-plans at once instead of polling.
"""
from __future__ import annotations

import socket
import time
from typing import Any, List, Optional, Set, Tuple

from ... import green
from ...exceptions import ConnectionClosed
from .. import base
from .channel import Channel as VirtualChannel
from .payload import Payload, expired, priority_of
from .storage import Empty, Storage

__all__ = ["Transport"]


class Transport(base.Transport):
    """Base for memory://, redis://, mongodb:// and beanstalk:// transports.

    Subclasses only provide :meth:`create_store`.
    """

    #: The channel class (stores may subclass the virtual one).
    Channel = VirtualChannel
    driver_type = "virtual"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.store: Optional[Storage] = None
        self.channels: List[VirtualChannel] = []
        #: Queues declared auto_delete through this connection.
        self.auto_delete_queues: Set[str] = set()
        self._bell = green.Bell()
        self._draining = green.Lock()
        self._connected = False
        self._rotation = 0
        #: Messages taken from the store that could not be given back because
        #: it became unreachable; returned as soon as a new connection is made.
        self.orphans: List[Tuple[str, Payload]] = []

    # -- connection --------------------------------------------------------

    def create_store(self) -> Storage:
        raise NotImplementedError

    def establish_connection(self) -> "Transport":
        if self.store is None:
            store = self.create_store()
            try:
                self._return_orphans(store)
            except BaseException:
                store.close()
                raise
            self.store = store
        self._connected = True
        return self

    def _return_orphans(self, store: Storage) -> None:
        """Give back what a lost connection could not (newest first, as on close)."""
        while self.orphans:
            queue, payload = self.orphans[0]
            payload["redelivered"] = True
            if store.has_queue(queue):
                store.requeue(queue, payload, priority_of(payload))
            self.orphans.pop(0)

    def close_connection(self, connection: Any) -> None:
        """Close every channel (returning unacked messages) and the store.

        If the store is unreachable, whatever could not be returned is kept
        in :attr:`orphans` for the next connection, and the first error is
        raised once everything is closed.
        """
        failure: Optional[BaseException] = None
        for channel in list(self.channels):
            try:
                channel.close()
            except Exception as exc:  # noqa: BLE001 - close the rest, then raise
                failure = failure or exc
        self._connected = False
        self._bell.ring()
        store, self.store = self.store, None
        if store is not None:
            try:
                store.close()
            finally:
                self.orphans.extend(store.unreturned())
        if failure is not None:
            raise failure

    def verify_connection(self, connection: Any) -> bool:
        return self._connected

    def create_channel(self, connection: Any) -> VirtualChannel:
        if not self._connected:
            raise ConnectionClosed("Connection is closed")
        channel = self.Channel(self)
        self.channels.append(channel)
        return channel

    def channel_closed(self, channel: VirtualChannel) -> None:
        if channel in self.channels:
            self.channels.remove(channel)
        self.wake()

    # -- bookkeeping used by channels --------------------------------------

    def wake(self) -> None:
        """Make a waiting ``drain_events`` re-check consumers and prefetch."""
        self._bell.ring()

    def consumer_count(self, queue: str) -> int:
        return sum(channel.consumer_count(queue) for channel in self.channels)

    def cancel_consumers_of(self, queue: str) -> None:
        for channel in list(self.channels):
            channel.cancel_by_queue(queue)

    def maybe_auto_delete(self, queue: str) -> None:
        """auto_delete queues go away with their last consumer (as in AMQP)."""
        if queue in self.auto_delete_queues and not self.consumer_count(queue) and self.store:
            self.auto_delete_queues.discard(queue)
            self.store.state.unbind_queue(queue)
            self.store.delete_queue(queue)

    # -- the event loop ----------------------------------------------------

    def drain_events(self, connection: Any, timeout: Optional[float] = None) -> None:
        """Deliver one message from any consuming channel of this connection.

        Blocks only the calling greenlet (the wait goes through the hub);
        raises :class:`socket.timeout` when ``timeout`` seconds pass with
        nothing delivered, and :class:`ConnectionClosed` if the connection
        is closed meanwhile.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Greenlets draining one connection take turns: a store waits on one
        # thing at a time, and each message must go to exactly one of them.
        if not self._draining.acquire(timeout=timeout):
            raise socket.timeout("timed out")
        try:
            self._drain(deadline)
        finally:
            self._draining.release()

    def _drain(self, deadline: Optional[float]) -> None:
        while True:
            if not self._connected or self.store is None:
                raise ConnectionClosed("Connection is closed; drain_events() needs an open connection")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            queues = self._plan()
            try:
                if queues:
                    queue, payload = self.store.get_any(queues, remaining, self._bell, self._capacity())
                else:
                    green.wait_any([self._bell], remaining)
                    raise Empty()
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise socket.timeout("timed out") from None
                continue
            except Exception as exc:
                if not self._connected:  # closed under us: that is the news, not how the wait broke
                    raise ConnectionClosed("Connection was closed while drain_events() waited") from exc
                raise
            if self._dispatch(queue, payload):
                return

    def _plan(self) -> List[str]:
        """Queues to wait on now, rotated each call so no queue starves."""
        queues: List[str] = []
        for channel in self.channels:
            for queue in channel.consuming_queues():
                if queue not in queues:
                    queues.append(queue)
        if len(queues) > 1:
            shift = self._rotation % len(queues)
            self._rotation += 1
            queues = queues[shift:] + queues[:shift]
        return queues

    #: Most messages a store may fetch ahead in one round trip.
    max_batch = 32

    def _capacity(self) -> int:
        """How many messages the consuming channels could take right now."""
        free = 0
        for channel in self.channels:
            if channel.consuming_queues():
                room = channel.qos.room()
                if room is None:
                    return self.max_batch
                free += room
        return max(1, min(free, self.max_batch))

    def _dispatch(self, queue: str, payload: Payload) -> bool:
        """Hand the message to a channel; False if none took it (or it expired)."""
        if expired(payload):
            if self.store is not None:
                self.store.ack(queue, payload)
            return False
        count = len(self.channels)
        start = self._rotation % count if count else 0
        for channel in self.channels[start:] + self.channels[:start]:
            if channel.deliver(queue, payload):
                return True
        # Nobody can take it any more (cancelled while we waited): put it back.
        if self.store is not None and self.store.has_queue(queue):
            self.store.requeue(queue, payload, priority_of(payload))
        return False
