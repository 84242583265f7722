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
from ...options import Option, flag, number, optional, text, whole
from .. import base
from ..virtual import Transport as VirtualTransport
from .client import CONNECTION_ERRORS, DRIVER_ERRORS, Names, new_client, translate
from .store import MongoStore
from .uri import mongo_uri, parse_mongo_url

__all__ = ["Transport"]

DEFAULT_DATABASE = "kombu_default"


class Transport(VirtualTransport):
    """MongoDB collections as queues, with AMQP routing, prefetch and acks on top."""

    default_port = 27017
    driver_type = driver_name = "mongodb"
    connection_errors = CONNECTION_ERRORS
    capabilities = base.Capabilities(
        durable_fanout=False,
        notes=("fanout exchanges deliver through a capped collection: only queues being "
               "consumed when a message is published receive it",
               "per-message expiration, x-message-ttl and x-expires are honoured; "
               "x-max-length and dead-lettering are not"),
    )

    option_label = "MongoDB transport option"
    option_table = {
        "visibility_timeout": Option(number(), 3600.0, "seconds before an unacked message goes back"),
        "restore_interval": Option(optional(number()), None, "seconds between looks for expired leases"),
        "polling_interval": Option(number(), 1.0, "longest pause between polls of empty queues"),
        "ttl": Option(flag, False, "let TTL indexes delete expired messages and queues"),
        "collection_prefix": Option(text, "kombu_green", "the collections' names begin with it"),
        "broadcast_size": Option(whole(4096, 2 ** 40, "bytes"), 16 * 1024 * 1024, "size of the fanout collection"),
        "max_threads": Option(whole(1, 1000, "threads"), 4, "native threads for pymongo's calls, unpatched"),
    }

    def __init__(self, client: Any, **kwargs: Any) -> None:
        # Our options may be in the URL's query: take them out before checking.
        given = mongo_uri(client.hostname, client.port, client.userid, client.password, client.virtual_host)
        self.url = parse_mongo_url(given, tuple(self.option_table))
        #: The URL pymongo gets: ours taken out of the query, the rest as written.
        self.uri = self.url.uri
        super().__init__(client, **kwargs)

    def given_options(self) -> Dict[str, Any]:
        """Ours from the URL's query, overridden by ``transport_options``."""
        return {**self.url.ours, **self.client.transport_options}

    def driver_version(self) -> str:
        return pymongo.version

    def create_store(self) -> MongoStore:
        options = self.options
        where = ",".join(self.url.hosts)
        offload = green.Offload(options["max_threads"])
        mongo = None
        try:
            mongo = offload.call(new_client, self.uri, self.client.connect_timeout, {})
            offload.call(mongo.admin.command, "ping")
        except DRIVER_ERRORS as exc:
            if mongo is not None:
                offload.call(mongo.close)
            offload.close()
            raise translate(exc, where) from exc
        names = Names(options["collection_prefix"] or "kombu_green")
        try:
            return MongoStore(mongo[self.url.database or DEFAULT_DATABASE], names, where, offload,
                              polling_interval=options["polling_interval"],
                              visibility_timeout=options["visibility_timeout"],
                              restore_interval=options["restore_interval"], ttl=options["ttl"],
                              broadcast_size=options["broadcast_size"])
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
