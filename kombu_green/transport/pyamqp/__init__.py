"""Native AMQP 0-9-1 (RabbitMQ) over py-amqp, cooperative through gevent.

``transport.py`` is the entry point; ``connection.py`` owns the socket
(one reader greenlet, one heartbeat greenlet); ``channel.py`` adapts
py-amqp's channel; ``wire.py`` gives py-amqp gevent sockets; ``errors.py``
translates errors at the boundary.
"""
from .transport import SSLTransport, Transport

__all__ = ["SSLTransport", "Transport"]
