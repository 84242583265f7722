"""The Redis store of the virtual framework: queues as Redis lists.

Where each message is, at any moment:

* *ready* -- in its queue's list (one list per priority step);
* *taken* -- moved by one atomic script from the list into the unacked
  record (:mod:`.leases`); possibly fetched ahead of its delivery (up to
  the consumers' free prefetch) and then held in :attr:`RedisStore._ahead`;
* *delivered* -- handed to a consumer, still recorded until it is acked.

So a message is in Redis from the publish until the ack, and a process
that dies anywhere in between gets it back after the visibility timeout.
The one exception is the blocking pop (used only when every queue is
empty): Redis cannot record atomically what ``BRPOP`` returns, so the
record follows within one round trip.

Fanout exchanges deliver through PUB/SUB: a copy reaches each queue bound
to the exchange *and consumed when the message is published*, as with
kombu's Redis transport; those copies live only in the consuming process.
"""
from __future__ import annotations

import base64
import json
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, cast

import redis

from ... import green
from ...exceptions import InconsistencyError
from ..virtual import Empty, Storage
from ..virtual.payload import Payload
from .client import translated
from .keys import Keys
from .leases import Leases
from .scripts import DECLARE, PUBLISH, PURGE
from .state import RedisState
from .waiting import BlockingPop, Subscriber

__all__ = ["RedisStore"]

#: Internal fields a payload carries in process but never to Redis.
_LOCAL_FIELDS = ("redelivered", "lease")


def encode(payload: Payload) -> bytes:
    data = {key: value for key, value in payload.items() if key not in _LOCAL_FIELDS}
    data["body"] = base64.b64encode(payload["body"] or b"").decode("ascii")
    return json.dumps(data, separators=(",", ":")).encode()


def decode(raw: bytes, lease: Optional[str]) -> Payload:
    payload = json.loads(raw)
    payload["body"] = base64.b64decode(payload["body"])
    payload.setdefault("redelivered", False)
    payload["lease"] = lease
    return cast(Payload, payload)


#: Marks a message popped but never recorded (see RedisStore._record).
UNRECORDED = "kombu_green.unrecorded"


class RedisStore(Storage):
    """Queues, bindings and unacked records of one Redis database."""

    def __init__(self, client: redis.Redis, keys: Keys, where: str,
                 dedicated_connection: Callable[[], Any], leases: Leases) -> None:
        self.client = client
        self.keys = keys
        self.where = where
        self.state: RedisState = RedisState(client, keys, where)
        self.leases = leases
        self._publish = client.register_script(PUBLISH)
        self._declare = client.register_script(DECLARE)
        self._purge = client.register_script(PURGE)
        #: Taken and recorded, not yet delivered: (queue, payload).
        self._ahead: Deque[Tuple[str, Payload]] = deque()
        #: Fetched ahead but not given back because Redis went away (see unreturned()).
        self._unreturned: List[Tuple[str, Payload]] = []
        #: Fanout copies received through PUB/SUB, not yet delivered.
        self._fanned: Deque[Tuple[str, Payload]] = deque()
        self._arrived = green.Bell()
        self._failure: Optional[BaseException] = None
        self._resubscribe = False
        self._queue_of_list: Dict[str, str] = {}
        self._fanout_queues: Dict[str, Set[str]] = {}
        #: x-expires (ms) of queues declared or consumed here; the consumed
        #: ones are kept alive by a greenlet (a queue in use never expires).
        self._expires: Dict[str, int] = {}
        self._kept: Set[str] = set()
        self._keeper: Optional[green.Greenlet] = None
        self._closing = green.Bell()
        self.popper: BlockingPop[Tuple[str, Payload]] = BlockingPop(
            dedicated_connection, client.client_unblock, self._record, self._keep)
        self.subscriber = Subscriber(dedicated_connection, self._on_fanout, self._on_failure)
        leases.start()

    # -- queues -------------------------------------------------------------------

    @translated
    def new_queue(self, queue: str, arguments: Optional[Dict[str, Any]] = None) -> None:
        arguments = dict(arguments or {})
        expires = int(arguments.get("x-expires") or 0)
        self._declare(keys=[self.keys.meta(queue), *self.keys.lists(queue)],
                      args=[json.dumps(arguments, default=str), expires])
        if expires:
            self._expires[queue] = expires

    @translated
    def has_queue(self, queue: str) -> bool:
        return bool(self.client.exists(self.keys.meta(queue)))

    @translated
    def size(self, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.lists(queue):
            pipe.llen(key)
        return sum(pipe.execute())

    @translated
    def purge(self, queue: str) -> int:
        return int(self._purge(keys=self.keys.lists(queue)))

    @translated
    def delete_queue(self, queue: str) -> None:
        self.client.delete(self.keys.meta(queue), *self.keys.lists(queue))
        self._expires.pop(queue, None)
        self._kept.discard(queue)
        self._release_ahead(lambda q: q == queue)

    # -- publishing ---------------------------------------------------------------

    @translated
    def put(self, queue: str, payload: Payload, priority: int = 0) -> None:
        self._push([queue], encode(payload), priority, version="")

    @translated
    def publish(self, exchange: str, routing_key: str, payload: Payload, priority: int = 0) -> int:
        """Route and store in one atomic script (see :mod:`.state` for the version check)."""
        raw = encode(payload)
        if not exchange:
            return self._push([routing_key], raw, priority, version="")
        state = self.state
        for _ in range(10):
            if state.version is None:
                state.refresh()
            if state.exchange(exchange).type == "fanout":
                self.client.publish(self.keys.fanout_channel(exchange), raw)
                return len(state.bindings.get(exchange, ()))
            queues = state.route(exchange, routing_key, payload.get("headers"))
            taken = self._push(queues, raw, priority, version=state.version or "0")
            if taken >= 0:
                return taken
            state.refresh()  # the tables changed since we routed: route again
        raise InconsistencyError(f"Bindings at {self.where} kept changing while publishing to {exchange!r}")

    def _push(self, queues: Sequence[str], raw: bytes, priority: int, version: str) -> int:
        step = self.keys.step_of(priority)
        keys = [self.keys.version]
        for queue in queues:
            keys += [self.keys.meta(queue), self.keys.list(queue, step)]
        return int(self._publish(keys=keys, args=[version, raw]))

    # -- consuming ----------------------------------------------------------------

    @translated
    def watch(self, queue: str) -> None:
        """Subscribe to the fanout exchanges ``queue`` is bound to; note its expiry."""
        raw = self.client.get(self.keys.meta(queue))
        expires = int(json.loads(raw).get("x-expires") or 0) if raw else 0
        if expires:
            self._expires[queue] = expires
            self._kept.add(queue)
            if self._keeper is None:
                self._keeper = green.spawn(self._keep_alive)
        for exchange in self.state.fanout_exchanges_of(queue):
            queues = self._fanout_queues.setdefault(exchange, set())
            if not queues:
                self.subscriber.subscribe(self.keys.fanout_channel(exchange))
            queues.add(queue)

    @translated
    def unwatch(self, queue: str) -> None:
        self._kept.discard(queue)
        for exchange, queues in list(self._fanout_queues.items()):
            if queue in queues:
                queues.discard(queue)
                if not queues:
                    del self._fanout_queues[exchange]
                    self.subscriber.unsubscribe(self.keys.fanout_channel(exchange))
        self._fanned = deque(item for item in self._fanned if item[0] != queue)
        self._release_ahead(lambda q: q == queue)

    def _on_fanout(self, channel: str, raw: bytes) -> None:
        queues = self._fanout_queues.get(self.keys.exchange_of_channel(channel), ())
        for queue in queues:
            self._fanned.append((queue, decode(raw, None)))
        if queues:
            self._arrived.ring()

    def _on_failure(self, exc: BaseException) -> None:
        self._failure = exc
        self._arrived.ring()

    def _check_subscriptions(self) -> None:
        """Report a lost PUB/SUB connection once, then subscribe again.

        Fanout messages published in between are gone (PUB/SUB keeps
        nothing), so the caller hears of the gap before anything else.
        """
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self.subscriber.close()
            self._resubscribe = True
            raise failure
        if self._resubscribe:
            for exchange in list(self._fanout_queues):
                self.subscriber.subscribe(self.keys.fanout_channel(exchange))
            self._resubscribe = False

    @translated
    def get(self, queue: str) -> Payload:
        item = self._next_local({queue})
        if item is not None:
            return item[1]
        if queue in self._expires:
            self._touch([queue])
        taken = self._take(*self._lists_of([queue]), 1)
        if not taken:
            raise Empty()
        return taken[0][1]

    @translated
    def get_any(self, queues: Sequence[str], timeout: Optional[float],
                interrupt: Optional[green.Bell] = None, batch: int = 1) -> Tuple[str, Payload]:
        """Serve what is here already, else take a batch, else block on all queues at once."""
        self._check_subscriptions()
        wanted = set(queues)
        item = self._next_local(wanted)
        if item is not None:
            return item
        lists, metas = self._lists_of(queues)
        taken = self._take(lists, metas, max(1, batch))
        self._ahead.extend(taken)
        # The first taken -- or a fanout message that arrived during the round
        # trip, whose ring nobody was waiting for yet.
        item = self._next_local(wanted)
        if item is not None:
            return item
        if timeout is not None and timeout <= 0:
            raise Empty()
        popped = self.popper.pop(lists, timeout, [interrupt, self._arrived] if interrupt else [self._arrived])
        if popped is not None:
            if popped[0] in wanted:
                return popped
            self.leases.requeue([popped[1]["lease"]])
        item = self._next_local(wanted)
        if item is not None:
            return item
        raise Empty()

    def _take(self, lists: List[str], metas: List[str], count: int) -> List[Tuple[str, Payload]]:
        """Take and record up to ``count`` messages, shielded from interruption.

        The round trip runs in a greenlet of its own: if the caller is
        interrupted (``gevent.Timeout``) meanwhile, the messages it took are
        kept for the next delivery instead of vanishing with the reply.
        """
        pending = green.shield(self._take_now, lists, metas, count)
        try:
            pending.wait()
        except BaseException:
            pending.when_done(self._ahead.extend)
            raise
        return pending.get()

    def _take_now(self, lists: List[str], metas: List[str], count: int) -> List[Tuple[str, Payload]]:
        return [(self._queue_of_list.get(key, key), decode(raw, tag))
                for key, tag, raw in self.leases.take(lists, metas, count)]

    def _keep(self, popped: Tuple[str, Payload]) -> None:
        """A message popped for a caller that was interrupted: deliver it next."""
        self._ahead.appendleft(popped)
        self._arrived.ring()

    def _record(self, list_key: str, raw: bytes) -> Tuple[str, Payload]:
        """Record what a blocking pop took (runs in the pop's greenlet, at once)."""
        tag = self.leases.new_tag()
        queue = self._queue_of_list.get(list_key, list_key)
        try:
            self.leases.record(tag, list_key, self.keys.meta(queue), raw)
        except (redis.RedisError, OSError):
            # Popped but not recorded: Redis went away in between. Only this
            # process holds the message now, so it is put back, unleased, on
            # the next connection (see unreturned()).
            payload = decode(raw, tag)
            payload.pop("lease", None)
            payload[UNRECORDED] = True
            self._unreturned.append((queue, payload))
            raise
        return queue, decode(raw, tag)

    def _lists_of(self, queues: Sequence[str]) -> Tuple[List[str], List[str]]:
        lists: List[str] = []
        metas: List[str] = []
        for queue in queues:
            meta = self.keys.meta(queue)
            for key in self.keys.lists(queue):
                self._queue_of_list[key] = queue
                lists.append(key)
                metas.append(meta)
        return lists, metas

    def _next_local(self, wanted: Set[str]) -> Optional[Tuple[str, Payload]]:
        """A fanout copy or a message fetched ahead, for a queue in ``wanted``."""
        for buffer in (self._fanned, self._ahead):
            for index, (queue, payload) in enumerate(buffer):
                if queue in wanted:
                    del buffer[index]
                    return queue, payload
        return None

    def _release_ahead(self, which: Callable[[str], bool]) -> None:
        """Send messages fetched ahead for ``which`` queues back to Redis."""
        keep: Deque[Tuple[str, Payload]] = deque()
        back: List[str] = []
        for queue, payload in self._ahead:
            if which(queue):
                back.append(payload["lease"])
            else:
                keep.append((queue, payload))
        self._ahead = keep
        self.leases.requeue(back[::-1])

    def _touch(self, queues: Sequence[str]) -> None:
        """Restart the expiry clock of these x-expires queues."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in [self.keys.meta(queue), *self.keys.lists(queue)]:
                pipe.pexpire(key, self._expires[queue])
        pipe.execute()

    def _keep_alive(self) -> None:
        """Touch the consumed x-expires queues a few times per expiry period,
        whatever the consumers are doing."""
        try:
            while self._kept:
                self._touch(sorted(self._kept))
                pause = min(self._expires[queue] for queue in self._kept) / 3000.0
                if green.wait_any([self._closing], pause):
                    return
        except (redis.RedisError, OSError):
            pass  # the connection is failing: drain_events reports it
        finally:
            self._keeper = None

    # -- settling -----------------------------------------------------------------

    def ack(self, queue: str, payload: Payload) -> None:
        lease = payload.get("lease")
        if lease:
            self.leases.ack(lease)

    @translated
    def requeue(self, queue: str, payload: Payload, priority: int = 0) -> None:
        lease = payload.get("lease")
        if lease:
            self.leases.requeue([lease])
        elif payload.pop(UNRECORDED, False):
            self.put(queue, payload, priority)
        elif any(queue in queues for queues in self._fanout_queues.values()):
            payload["redelivered"] = True
            self._fanned.appendleft((queue, payload))
            self._arrived.ring()

    def unreturned(self) -> List[Tuple[str, Payload]]:
        return list(self._unreturned)

    def close(self) -> None:
        """Return everything taken but not delivered, and let go of Redis."""
        self.leases.stop()
        self._kept.clear()
        self._closing.ring()
        try:
            leftover = self.popper.leftover()
            if leftover is not None:
                self._ahead.append(leftover)
            self.leases.finish()
            self._release_ahead(lambda queue: True)
        except (redis.RedisError, OSError):
            # Redis is gone: the transport hands these back on its next
            # connection (their lease records keep them safe meanwhile).
            self._unreturned += [(queue, payload) for queue, payload in reversed(self._ahead)
                                 if payload.get("lease")]
            self._ahead.clear()
        finally:
            self.popper.close()
            self.subscriber.close()
            self.client.connection_pool.disconnect()
