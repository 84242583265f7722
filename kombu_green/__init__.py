"""kombu_green: kombu's messaging API, native to gevent.

Every consumer can be a greenlet, one ``Connection.drain_events()`` waits on
all of a connection's channels at once through the gevent hub, and no
transport blocks the hub. Move an application over by changing imports::

    from kombu_green import Connection, Exchange, Queue, Producer, Consumer
"""
from __future__ import annotations

from .common import eventloop, uuid
from .connection import BrokerConnection, Connection
from .entity import Exchange, Queue, binding
from .exceptions import KombuError
from .message import Message
from .messaging import Consumer, Producer
from .pools import connections, producers
from .serialization import (
    disable_insecure_serializers,
    enable_insecure_serializers,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerConnection",
    "Connection",
    "Consumer",
    "Exchange",
    "KombuError",
    "Message",
    "Producer",
    "Queue",
    "binding",
    "connections",
    "disable_insecure_serializers",
    "enable_insecure_serializers",
    "eventloop",
    "producers",
    "uuid",
]
