"""Translate py-amqp and socket errors into kombu_green's, at the boundary.

Every public channel verb and every connection step goes through
:func:`translate`, so users only ever catch :mod:`kombu_green.exceptions`.
Messages name the broker as ``host:port`` (never the password) and the
AMQP reply code, and the original error stays attached as ``__cause__``.
"""
from __future__ import annotations

import socket
import ssl
from typing import Dict, Tuple, Type

from amqp import exceptions as amqp_errors

from ... import exceptions as errors
from ..base import error_boundary

__all__ = ["CONNECTION_ERRORS", "CHANNEL_ERRORS", "translate", "translated"]

#: Broker reply codes -> our exception types (AMQP 0-9-1 constants).
_BY_CODE: Dict[int, Type[errors.KombuError]] = {
    403: errors.AccessRefused,
    404: errors.NotFound,
    405: errors.ResourceLocked,
    406: errors.PreconditionFailed,
    320: errors.ConnectionClosed,   # CONNECTION_FORCED: broker shutting down
}

#: What ``ensure`` should retry: losing the connection, in any form.
CONNECTION_ERRORS: Tuple[Type[BaseException], ...] = (
    errors.OperationalError, amqp_errors.ConnectionError, amqp_errors.RecoverableConnectionError,
    OSError, socket.timeout, ssl.SSLError,
)
#: What a single channel operation can fail with.
CHANNEL_ERRORS: Tuple[Type[BaseException], ...] = (errors.ChannelError, amqp_errors.ChannelError)


def translate(exc: BaseException, where: str) -> BaseException:
    """Return the kombu_green error for ``exc`` (``exc`` itself if already ours)."""
    if isinstance(exc, errors.KombuError):
        return exc
    if isinstance(exc, amqp_errors.MessageNacked):
        return errors.MessageNacked(f"The broker at {where} refused a published message (nack)")
    if isinstance(exc, amqp_errors.ConsumerCancelled):
        return errors.ConsumerCancelled(
            f"The broker at {where} cancelled consumer {exc.args[0] if exc.args else '?'!r} "
            "(was its queue deleted?)")
    if isinstance(exc, amqp_errors.AMQPError):
        return _from_amqp(exc, where)
    if isinstance(exc, socket.timeout):
        return errors.OperationalError(f"Timed out talking to the AMQP broker at {where}")
    if isinstance(exc, ssl.SSLError):
        return errors.OperationalError(f"TLS failed with the AMQP broker at {where}: {exc}")
    if isinstance(exc, OSError):
        return errors.OperationalError(
            f"Cannot reach the AMQP broker at {where}: {exc.strerror or exc}. "
            "Is it running, and is the host and port right?")
    return exc


def _from_amqp(exc: amqp_errors.AMQPError, where: str) -> BaseException:
    code = getattr(exc, "reply_code", None) or getattr(exc, "code", None)
    text = getattr(exc, "reply_text", None) or str(exc)
    kind = _BY_CODE.get(code or 0)
    if kind is None:
        if isinstance(exc, (amqp_errors.ConnectionError, amqp_errors.RecoverableConnectionError)):
            kind = errors.ConnectionClosed
        else:
            kind = errors.ChannelError
    result = kind(f"AMQP broker at {where} replied {code}: {text}")
    result.reply_code = code  # type: ignore[attr-defined]
    result.reply_text = text  # type: ignore[attr-defined]
    return result


#: Wrap a channel verb so only kombu_green errors escape it.
translated = error_boundary(translate, (amqp_errors.AMQPError, OSError, ssl.SSLError))
