"""``beanstalk://``: beanstalkd as a message broker, over greenstalk.

URL: ``beanstalk://host[:port]`` (port 11300 by default). beanstalkd has no
users and no databases: a virtual host in the URL is an error.

A queue is a tube (the same name when beanstalkd allows it, see
:mod:`.config`); a message is a job whose body is kombu_green's JSON
envelope. Jobs put by other beanstalk clients are delivered too, as raw
bytes (``application/data``).

Settling, in beanstalk terms:

* ``ack()`` deletes the job, at the next turn of the hub: the acks of that
  moment leave in one write (closing the connection sends them first).
* ``reject(requeue=True)`` / ``requeue()``, ``recover()`` and closing a
  channel with unacked messages *release* the job: ready again at once,
  ahead of later jobs of its priority, delivered with ``redelivered``.
* ``reject(requeue=False)`` *buries* the job: it stays on the server, out
  of the way, until someone kicks it back (``kick`` or ``kick-job`` with any
  beanstalk client) or deletes the queue. Expired messages
  (``expiration``) are deleted, not buried.
* A consumer that dies loses nothing: beanstalkd releases every job of a
  closed connection; one that hangs gets its jobs taken back after ``ttr``.
  A job reserved before (``stats-job`` counts its reserves) is delivered
  with ``redelivered`` set.

Priorities 0-9 map to beanstalk priorities (9 first, FIFO within one).
Exchanges, bindings and direct/topic/fanout/headers routing are the
virtual framework's; beanstalkd cannot store them, so they live *in this
process*, shared by its Connections to the same ``host:port``. A process
that publishes through an exchange must declare the exchange, the queue
and the binding too (``producer.publish(..., declare=[queue])`` or
``queue(channel).declare()``); the default exchange (routing key = queue
name) reaches a queue declared in this process, or whose tube exists on
the server (declared by a Connection still open, or holding jobs) -- one
``stats-tube`` round trip per message unless this process declared it.

Transport options (``transport_options={...}`` or the URL query):

* ``ttr`` (3600 s) -- time-to-run of every job: a consumer may hold a
  message unacked this long before beanstalkd gives it to another one
  (marked redelivered). A consumer that dies or disconnects releases its
  jobs at once, so this only bounds how long a *hung* consumer keeps them;
  make it longer than your longest task (as Redis's ``visibility_timeout``).
  beanstalkd 1.12 can miss the deadline of a connection that stays silent,
  so a connection holding jobs sends a harmless command every ``ttr``/4
  seconds (0.5 to 60): a job comes back at most that much late, unless
  the holding process is frozen altogether.
* ``max_connections`` (4) -- command connections (publishing, statistics)
  per Connection; a greenlet waits for a free one. Consumers use reserving
  connections of their own, usually two: one takes ready jobs and holds
  them until they are settled, the other waits in a blocking reserve while
  the queues are empty (only the connection that reserved a job may
  release or bury it, and one blocked in ``reserve`` can do nothing else).
* ``max_batch`` (32) -- most jobs reserved in one round trip (never more
  than the consumers' free prefetch).
* ``socket_connect_timeout`` (the Connection's ``connect_timeout``) --
  seconds to wait for the TCP connection.
"""
from __future__ import annotations

from typing import Any, Tuple

import greenstalk

from ...exceptions import ConfigurationError
from .. import base
from ..virtual import Transport as VirtualTransport
from .client import GreenClient, connect
from .config import LABEL, OPTION_TABLE, Options, parse_options
from .errors import CONNECTION_ERRORS
from .store import BeanstalkStore

__all__ = ["Transport"]


class Transport(VirtualTransport):
    """beanstalkd tubes as queues, with AMQP routing, prefetch and acks on top."""

    default_port = 11300
    driver_type = driver_name = "beanstalk"
    connection_errors = CONNECTION_ERRORS
    capabilities = base.Capabilities(
        notes=("exchanges and bindings live in the declaring process (beanstalkd cannot store "
               "them); the default exchange works across processes",
               "reject(requeue=False) buries the job; expired messages are deleted",
               "per-message expiration is honoured; x-message-ttl, x-expires, x-max-length and "
               "dead-lettering are not"),
    )

    option_label = LABEL
    option_table = OPTION_TABLE

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.settings: Options = parse_options(self.options, client.connect_timeout)
        self.max_batch = self.settings.max_batch

    def driver_version(self) -> str:
        return greenstalk.__version__

    def _server(self) -> Tuple[str, int]:
        vhost = (self.client.virtual_host or "/").strip("/")
        if vhost:
            raise ConfigurationError(
                f"beanstalkd has no virtual hosts: use beanstalk://host:{self.default_port}, "
                f"not .../{vhost}")
        return self.client.hostname or "localhost", int(self.client.port or self.default_port)

    def create_store(self) -> BeanstalkStore:
        host, port = self._server()
        where = f"{host}:{port}"
        timeout = self.settings.socket_connect_timeout

        def open_client() -> GreenClient:
            return connect(host, port, timeout)

        store = BeanstalkStore(where, open_client, self.settings)
        try:
            store.check()
        except BaseException:
            store.close()
            raise
        return store
