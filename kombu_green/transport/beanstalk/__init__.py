"""beanstalkd transport (``beanstalk://``); see :mod:`.transport`."""
from .transport import Transport

__all__ = ["Transport"]
