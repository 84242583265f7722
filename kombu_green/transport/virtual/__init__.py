"""AMQP semantics for stores that are not AMQP brokers.

A store implements the small :class:`~.storage.Storage` contract; the
virtual :class:`~.channel.Channel` and :class:`~.transport.Transport` add
routing, consumer and delivery tags, prefetch, acks and redelivery on top.
"""
from .channel import Channel
from .exchange import EXCHANGE_TYPES, Binding, route
from .state import BrokerState
from .storage import Empty, Storage
from .transport import Transport

__all__ = ["Binding", "BrokerState", "Channel", "EXCHANGE_TYPES", "Empty", "Storage",
           "Transport", "route"]
