"""Transport registry: URL scheme (or name) -> transport class.

Transports are imported only when used, so optional drivers (py-amqp,
redis-py, pymongo, greenstalk) are needed only by those who use them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Type, Union

from ..exceptions import ConfigurationError, UnknownTransport

if TYPE_CHECKING:  # pragma: no cover
    from .base import Transport

__all__ = ["TRANSPORTS", "known_transports", "register_transport", "resolve_transport"]

#: scheme -> ("module:Class", the pip extra that installs its driver)
TRANSPORTS: Dict[str, Tuple[str, Optional[str]]] = {
    "memory": ("kombu_green.transport.memory:Transport", None),
    "amqp": ("kombu_green.transport.pyamqp:Transport", "amqp"),
    "pyamqp": ("kombu_green.transport.pyamqp:Transport", "amqp"),
    "amqps": ("kombu_green.transport.pyamqp:SSLTransport", "amqp"),
    "pyamqps": ("kombu_green.transport.pyamqp:SSLTransport", "amqp"),
    "redis": ("kombu_green.transport.redis:Transport", "redis"),
    "rediss": ("kombu_green.transport.redis:SSLTransport", "redis"),
    "sentinel": ("kombu_green.transport.redis:SentinelTransport", "redis"),
    "mongodb": ("kombu_green.transport.mongodb:Transport", "mongodb"),
    "mongodb+srv": ("kombu_green.transport.mongodb:Transport", "mongodb"),
    "beanstalk": ("kombu_green.transport.beanstalk:Transport", "beanstalk"),
}


def register_transport(scheme: str, target: str, extra: Optional[str] = None) -> None:
    """Make ``scheme://`` URLs use ``target`` ("package.module:Class")."""
    TRANSPORTS[scheme] = (target, extra)


def known_transports() -> List[str]:
    return sorted(TRANSPORTS)


def resolve_transport(transport: Union[str, type, None]) -> Type["Transport"]:
    """Return the transport class for a scheme, a "module:Class" path or a class."""
    if isinstance(transport, type):
        return transport
    name = transport or ""
    if name in TRANSPORTS:
        target, extra = TRANSPORTS[name]
    elif ":" in name:
        target, extra = name, None
    else:
        raise UnknownTransport(
            f"Unknown transport {name!r}. Known transports: {', '.join(known_transports())}."
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" Install it with: pip install 'kombu_green[{extra}]'." if extra else ""
        raise ConfigurationError(
            f"Transport {name!r} cannot be loaded: {exc}.{hint}"
        ) from exc
    try:
        found: Type[Transport] = getattr(module, class_name or "Transport")
    except AttributeError:
        raise UnknownTransport(f"Module {module_name!r} has no transport class {class_name!r}.") from None
    return found
