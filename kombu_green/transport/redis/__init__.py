"""Redis transport (``redis://``, ``rediss://``, ``sentinel://``); see :mod:`.transport`."""
from .transport import SentinelTransport, SSLTransport, Transport

__all__ = ["SSLTransport", "SentinelTransport", "Transport"]
