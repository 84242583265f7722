"""Run pytest under gevent.monkey.patch_all(), as gunicorn's gevent worker runs apps.

Patching must happen before anything imports socket, ssl or threading, so
it is the first thing this script does; arguments go to pytest unchanged.
"""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import pytest  # noqa: E402

if __name__ == "__main__":
    sys.exit(pytest.main(sys.argv[1:]))
