"""greenstalk's and the socket's errors, as kombu_green errors naming ``host:port``."""
from __future__ import annotations

import socket
from typing import Dict, Tuple, Type

import greenstalk

from ... import exceptions as errors
from ..base import error_boundary

__all__ = ["CONNECTION_ERRORS", "DRIVER_ERRORS", "translate", "translated"]

#: What a transport method may see go wrong below it.
DRIVER_ERRORS: Tuple[type, ...] = (greenstalk.Error, OSError)
#: What ``ensure`` should retry: losing the server, in any form.
CONNECTION_ERRORS: Tuple[Type[BaseException], ...] = (errors.OperationalError, OSError, socket.timeout)
_RESPONSE_NAMES: Dict[type, str] = {cls: status.decode() for status, cls in greenstalk.ERROR_RESPONSES.items()}


def translate(exc: BaseException, where: str) -> BaseException:
    """The kombu_green error for a greenstalk or socket error (names host:port)."""
    if isinstance(exc, errors.KombuError):
        return exc
    text = (str(exc).strip() or type(exc).__name__).rstrip(".")
    if isinstance(exc, greenstalk.JobTooBigError):
        return errors.ChannelError(
            f"beanstalkd at {where} refused a message larger than its maximum job size "
            "(beanstalkd -z, 65,535 bytes by default); send a smaller body or start beanstalkd "
            "with a larger -z")
    if isinstance(exc, greenstalk.DrainingError):
        return errors.OperationalError(
            f"beanstalkd at {where} is draining (shutting down) and takes no new messages")
    if isinstance(exc, greenstalk.UnknownResponseError):
        return errors.ChannelError(
            f"beanstalkd at {where} sent a reply this client does not understand: "
            f"{exc.status.decode('ascii', 'replace')}")
    if isinstance(exc, greenstalk.Error):
        name = _RESPONSE_NAMES.get(type(exc), type(exc).__name__)
        return errors.ChannelError(f"beanstalkd at {where} refused a command: {name}")
    if isinstance(exc, socket.timeout):
        return errors.OperationalError(f"Timed out talking to beanstalkd at {where}: {text}")
    if isinstance(exc, OSError):
        return errors.OperationalError(
            f"Cannot reach beanstalkd at {where}: {text}. Is it running, and are the host and port right?")
    return exc


#: Let only kombu_green errors out of a method of an object with ``where``.
translated = error_boundary(translate, DRIVER_ERRORS)
