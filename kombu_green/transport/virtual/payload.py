"""The message payload virtual stores keep: a plain, JSON-friendly dict.

Layout (kept close to kombu's so the field names are familiar)::

    {"body": bytes, "content-type": str, "content-encoding": str,
     "headers": {...}, "redelivered": bool, "expires_at": float (optional),
     "properties": {"delivery_mode": 2, "priority": 0,
                    "delivery_info": {"exchange": str, "routing_key": str},
                    ... correlation_id, reply_to, expiration, message_id ...}}

In process the body stays ``bytes``. Stores that write to the network use
:func:`dumps`/:func:`loads`, which carry the body as base64 text.
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any, Dict, Optional

__all__ = ["Payload", "clone", "dumps", "expired", "loads", "make", "priority_of", "stamp_expiry"]

Payload = Dict[str, Any]

MAX_PRIORITY = 9


def make(body: bytes, content_type: Optional[str], content_encoding: Optional[str],
         headers: Optional[Dict[str, Any]], properties: Optional[Dict[str, Any]]) -> Payload:
    return {
        "body": body,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "headers": dict(headers or {}),
        "properties": dict(properties or {}),
    }


def clone(payload: Payload) -> Payload:
    """A copy safe to store in a second queue (its own properties/headers)."""
    copy = dict(payload)
    copy["properties"] = dict(payload["properties"])
    copy["headers"] = dict(payload["headers"])
    return copy


def priority_of(payload: Payload) -> int:
    """The message priority clamped to 0-9 (missing or junk -> 0)."""
    try:
        value = int(payload["properties"].get("priority") or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, min(MAX_PRIORITY, value))


def stamp_expiry(payload: Payload, now: Optional[float] = None) -> None:
    """Turn the AMQP ``expiration`` property (milliseconds, as text) into an
    absolute ``expires_at`` (epoch seconds) that any consumer can check.

    Raises ValueError for a value that is not a whole number of milliseconds,
    as an AMQP broker refuses it.
    """
    expiration = payload["properties"].get("expiration")
    if expiration is None or expiration == "":
        return
    milliseconds = int(str(expiration))
    if milliseconds < 0:
        raise ValueError(expiration)
    payload["expires_at"] = (time.time() if now is None else now) + milliseconds / 1000.0


def expired(payload: Payload, now: Optional[float] = None) -> bool:
    """True when the message outlived its ``expiration`` and must be dropped."""
    deadline = payload.get("expires_at")
    return deadline is not None and (time.time() if now is None else now) >= deadline


def dumps(payload: Payload) -> bytes:
    """Serialize for a network store (body as base64)."""
    data = dict(payload)
    data["body"] = base64.b64encode(payload["body"] or b"").decode("ascii")
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def loads(raw: bytes) -> Payload:
    data: Payload = json.loads(raw)
    data["body"] = base64.b64decode(data["body"])
    return data
