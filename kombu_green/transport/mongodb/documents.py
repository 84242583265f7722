"""How a message is kept in MongoDB: one document per queued copy.

::

    {_id: ObjectId,        # arrival order (FIFO within a priority)
     q: "queue",           # the queue it waits in
     p: 0-9,               # AMQP priority, higher first
     lease: null | ObjectId,  # null = ready; else the token of the consumer holding it
     lt: date,             # when the lease was taken (only while leased)
     r: true,              # redelivered (set when a lease returns)
     x: date,              # the message's expiry (only with expiration/x-message-ttl)
     fan: "id:queue",      # fanout copies only: one copy per queue, ever
     done: date,           # fanout copies only: acked then (kept a while, see fanout.py)
     m: BinData}           # the payload (JSON, body as base64)

The index ``(q, lease, p desc, _id)`` serves the one hot query, "next
ready message of these queues by priority, then arrival".
"""
from __future__ import annotations

import datetime
import time
from typing import Any, Dict, List, Optional, Tuple

from bson import Binary, ObjectId

from ..virtual import payload as payloads

__all__ = ["NEXT", "from_document", "is_fanout_copy", "lease_of", "to_document"]

#: Sort order of "the next message": priority high to low, then oldest first.
NEXT: List[Tuple[str, int]] = [("p", -1), ("_id", 1)]
#: The payload's key carrying (document id, lease token) while delivered.
_LEASE = "_mongodb_lease"
#: The payload's key marking a fanout copy (its ack leaves a tombstone).
_FAN = "_mongodb_fan"


def utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)


def to_document(queue: str, payload: payloads.Payload, priority: int,
                message_ttl: Optional[float] = None, fan: Optional[str] = None,
                raw: Optional[bytes] = None) -> Dict[str, Any]:
    """A ready document for ``queue``; ``message_ttl`` (seconds) is the queue's
    x-message-ttl, which shortens the message's own expiration if sooner."""
    document: Dict[str, Any] = {"q": queue, "lease": None, "p": priority}
    expires_at = payload.get("expires_at")
    if message_ttl is not None:
        deadline = time.time() + message_ttl
        expires_at = deadline if expires_at is None else min(expires_at, deadline)
        if expires_at != payload.get("expires_at"):
            payload = dict(payload, expires_at=expires_at)
            raw = None
    if expires_at is not None:
        document["x"] = utc(expires_at)
    if fan is not None:
        document["fan"] = fan
    document["m"] = Binary(raw if raw is not None else payloads.dumps(_without_lease(payload)))
    return document


def _without_lease(payload: payloads.Payload) -> payloads.Payload:
    if _LEASE in payload or _FAN in payload:
        payload = {key: value for key, value in payload.items() if key not in (_LEASE, _FAN)}
    return payload


def from_document(document: Dict[str, Any]) -> payloads.Payload:
    """The payload of a leased document, remembering which lease it is."""
    payload = payloads.loads(bytes(document["m"]))
    if document.get("r"):
        payload["redelivered"] = True
    payload[_LEASE] = (document["_id"], document.get("lease"))
    if document.get("fan"):
        payload[_FAN] = True
    return payload


def lease_of(payload: payloads.Payload) -> Tuple[Optional[ObjectId], Optional[ObjectId]]:
    """(document id, lease token) of a delivered payload; (None, None) if it has none."""
    return payload.get(_LEASE) or (None, None)


def is_fanout_copy(payload: payloads.Payload) -> bool:
    return bool(payload.get(_FAN))
