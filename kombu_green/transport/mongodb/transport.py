"""``mongodb://`` and ``mongodb+srv://``: MongoDB as a message broker.

URL: any MongoDB connection string -- ``mongodb://[user:password@]host[:port][,host...]/[database][?options]``
or ``mongodb+srv://...`` -- handed to pymongo as it is, with pymongo's own
options (``replicaSet``, ``authSource``, ``tls``, ...) in the query. The
database defaults to ``kombu_default``. ``Connection(hostname=..., port=...,
userid=..., password=..., virtual_host=database)`` works too.

Transport options (``transport_options={...}`` or, for the names below,
the URL query -- they are taken out before pymongo sees it):

* ``visibility_timeout`` (3600 s) -- a message leased this long without an
  ack goes back to its queue, marked redelivered. Make it longer than your
  longest task.
* ``restore_interval`` (a quarter of the visibility timeout, at most 60 s)
  -- how often each connection looks for expired leases.
* ``polling_interval`` (1 s) -- the longest pause between two polls while
  every consumed queue is empty (pauses start at 10 ms and double).
  Publishes from the same process wake the consumers at once.
* ``ttl`` (False) -- create TTL indexes so the server itself deletes
  messages past their ``expiration``/``x-message-ttl`` and queues past
  their ``x-expires``. Either way an expired message is never delivered
  and an expired queue is removed when next used.
* ``collection_prefix`` (``kombu_green``) -- the collections are
  ``<prefix>.messages``, ``.queues``, ``.exchanges``, ``.bindings``,
  ``.meta`` and the capped ``.broadcast``.
* ``broadcast_size`` (16 MiB) -- size of the capped fanout collection.
* ``max_threads`` (4) -- native threads that run pymongo's calls in an
  unpatched program (under ``monkey.patch_all()`` calls run in greenlets).

Server operations used (MongoDB >= 4.4, standalone or replica set):
``insert``, ``find``, ``findAndModify`` with a sort, ``update`` and
``delete`` (single and multi), ``count`` (``countDocuments``),
``createIndexes`` (compound, sparse unique, TTL), ``create`` of a capped
collection and tailable ``awaitData`` cursors. No transactions and no
change streams: both need a replica set.
"""
from __future__ import annotations

from typing import Any, Dict

import pymongo

from ... import green
from ...exceptions import ConfigurationError
from .. import base
from ..virtual import Transport as VirtualTransport
from .client import DRIVER_ERRORS, Names, describe, mongo_uri, new_client, split_uri, translate
from .store import MongoStore

__all__ = ["Transport"]

DEFAULT_DATABASE = "kombu_default"
#: Our options; any other query option is pymongo's.
OPTIONS = ("visibility_timeout", "restore_interval", "polling_interval", "ttl",
           "collection_prefix", "broadcast_size", "max_threads")


class Transport(VirtualTransport):
    """MongoDB collections as queues, with AMQP routing, prefetch and acks on top."""

    default_port = 27017
    driver_type = driver_name = "mongodb"
    connection_errors = DRIVER_ERRORS
    capabilities = base.Capabilities(
        durable_fanout=False,
        notes=("fanout exchanges deliver through a capped collection: only queues being "
               "consumed when a message is published receive it",
               "per-message expiration, x-message-ttl and x-expires are honoured; "
               "x-max-length and dead-lettering are not"),
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.uri, self.options = self._split_options()

    def driver_version(self) -> str:
        return pymongo.version

    def _split_options(self) -> "tuple[str, Dict[str, Any]]":
        """Take our options out of the URL's query; the rest stays for pymongo."""
        client = self.client
        uri = mongo_uri(client.hostname, client.port, client.userid, client.password,
                        client.virtual_host)
        options: Dict[str, Any] = dict(client.transport_options)
        base_uri, _, query = uri.partition("?")
        kept = []
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            if key in OPTIONS:
                options.setdefault(key, value)
            else:
                kept.append(item)
        return base_uri + ("?" + "&".join(kept) if kept else ""), options

    def _number(self, name: str, default: float) -> float:
        value = self.options.get(name, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"MongoDB transport option {name} must be a number, not {value!r}") from None
        if number <= 0:
            raise ConfigurationError(f"MongoDB transport option {name} must be above 0, not {value!r}")
        return number

    def create_store(self) -> MongoStore:
        database, _ = split_uri(self.uri)
        where = describe(self.uri)
        ttl = str(self.options.get("ttl", False)).lower() in ("1", "true", "yes", "on")
        polling = self._number("polling_interval", 1.0)
        visibility = self._number("visibility_timeout", 3600.0)
        restore = self.options.get("restore_interval")
        restore_interval = None if restore is None else self._number("restore_interval", 60.0)
        broadcast_size = int(self._number("broadcast_size", 16 * 1024 * 1024))
        offload = green.Offload(int(self._number("max_threads", 4)))
        mongo = None
        try:
            mongo = offload.call(new_client, self.uri, self.client.connect_timeout, {})
            offload.call(mongo.admin.command, "ping")
        except DRIVER_ERRORS as exc:
            if mongo is not None:
                offload.call(mongo.close)
            offload.close()
            raise translate(exc, where) from exc
        names = Names(str(self.options.get("collection_prefix") or "kombu_green"))
        try:
            return MongoStore(mongo[database or DEFAULT_DATABASE], names, where, offload,
                              polling_interval=polling, visibility_timeout=visibility,
                              restore_interval=restore_interval, ttl=ttl,
                              broadcast_size=broadcast_size)
        except BaseException:
            offload.call(mongo.close)
            offload.close()
            raise

    def close_connection(self, connection: Any) -> None:
        store = self.store
        super().close_connection(connection)
        if isinstance(store, MongoStore):
            try:
                store.offload.call(store.messages.database.client.close)
            finally:
                store.offload.close()
