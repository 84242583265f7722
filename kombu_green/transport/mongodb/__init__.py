"""MongoDB transport (``mongodb://``, ``mongodb+srv://``); see :mod:`.transport`."""
from .transport import Transport

__all__ = ["Transport"]
