"""Where the examples connect: argv[1], else $KOMBU_GREEN_URL, else memory://."""
import os
import sys


def broker_url() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get("KOMBU_GREEN_URL", "memory://")
