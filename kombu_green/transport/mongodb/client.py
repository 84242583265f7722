"""pymongo behind the hub, its URL and its errors.

pymongo opens blocking standard-library sockets and cannot be handed
gevent ones, so every call goes through a :class:`~kombu_green.green.Offload`:
a small native thread pool in an unpatched program, inline when the
application has monkey-patched (pymongo is cooperative then). Nothing here
patches anything.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type
from urllib.parse import urlsplit

import pymongo
from bson import errors as bson_errors
from pymongo import errors as mongo_errors

from ... import exceptions as errors
from ..base import error_boundary

__all__ = ["CONNECTION_ERRORS", "DRIVER_ERRORS", "Names", "new_client", "translate", "translated"]

#: pymongo's errors, and bson's for a document it cannot encode (DocumentTooLarge is one).
DRIVER_ERRORS: Tuple[Type[BaseException], ...] = (mongo_errors.PyMongoError, bson_errors.InvalidDocument, OSError)

#: What ``ensure`` retries: our OperationalError (what the boundary turns a lost
#: server into) and pymongo's own, for errors that reach it untranslated.
CONNECTION_ERRORS: Tuple[Type[BaseException], ...] = (errors.OperationalError, mongo_errors.ConnectionFailure,
                                                      OSError)

#: Server error codes meaning "who you are" or "what you may do" was refused.
_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed


class Names:
    """Collection names under one prefix (``kombu_green`` by default)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.messages = f"{prefix}.messages"
        self.queues = f"{prefix}.queues"
        self.exchanges = f"{prefix}.exchanges"
        self.bindings = f"{prefix}.bindings"
        self.meta = f"{prefix}.meta"
        self.broadcast = f"{prefix}.broadcast"


def translate(exc: BaseException, where: str) -> BaseException:
    """A pymongo (or socket) error as the kombu_green error a user can act on."""
    if isinstance(exc, errors.KombuError):
        return exc
    if isinstance(exc, mongo_errors.OperationFailure) and exc.code in _AUTH_CODES:
        return errors.AccessRefused(
            f"MongoDB at {where} refused the credentials or the operation: "
            f"{exc.details and exc.details.get('errmsg') or exc}. "
            "Check the user, password and authSource in the URL, and the user's roles")
    if isinstance(exc, (mongo_errors.ConfigurationError, mongo_errors.InvalidURI)):
        return errors.ConfigurationError(f"MongoDB configuration refused for {where}: {exc}")
    if isinstance(exc, mongo_errors.DocumentTooLarge):
        return errors.PreconditionFailed(
            f"The message is too large for MongoDB at {where} (16 MiB per document): {exc}")
    if isinstance(exc, bson_errors.InvalidDocument):
        return errors.ChannelError(f"The message cannot be stored in MongoDB at {where}: {exc}")
    if isinstance(exc, (mongo_errors.ConnectionFailure, OSError)):
        first_line = str(exc).split(", Timeout:")[0].split("\n")[0]
        for host in where.split(","):  # pymongo starts with "host:port: "
            first_line = first_line.replace(f"{host}: ", "", 1)
        return errors.OperationalError(
            f"Cannot reach MongoDB at {where}: {first_line}. Is the server running and "
            "reachable, and are the host, port and TLS settings right?")
    if isinstance(exc, mongo_errors.OperationFailure):
        return errors.ChannelError(f"MongoDB at {where} refused an operation: {exc}")
    return errors.OperationalError(f"MongoDB at {where}: {exc}")


#: Decorator for store and state methods: only kombu_green errors escape.
translated = error_boundary(translate, DRIVER_ERRORS)


def new_client(uri: str, connect_timeout: Optional[float],
               options: Dict[str, Any]) -> pymongo.MongoClient[Dict[str, Any]]:
    """A MongoClient that fails within ``connect_timeout`` when no server answers
    (None: pymongo's own limits, 20 s to connect and 30 s to find a server)."""
    defaults: Dict[str, Any] = {"appname": "kombu_green"}
    if connect_timeout is not None:
        milliseconds = max(1, int(connect_timeout * 1000))
        defaults.update(serverSelectionTimeoutMS=milliseconds, connectTimeoutMS=milliseconds)
    # pymongo lets keywords override the URI: only fill in what the URI leaves out.
    query = urlsplit(uri).query.lower()
    kwargs = {key: value for key, value in defaults.items() if f"{key.lower()}=" not in query}
    kwargs.update(options)
    kwargs["tz_aware"] = True  # the transport compares dates with aware ones
    return pymongo.MongoClient(uri, **kwargs)
