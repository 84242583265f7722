"""Shared fixtures: isolated memory brokers and broker availability.

Integration tests need a real server. Locally a missing server skips the
test with the command that starts it; under ``CI=true`` it fails instead,
so CI can never pass by skipping everything.
"""
from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Iterator, Optional

import pytest

from kombu_green.transport import memory

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A memory:// URL naming a broker of its own, dropped after the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    memory.forget_broker(name)


def require_server(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when ``host:port`` accepts no connection."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = (f"{name} is not reachable on {host}:{port} ({exc}); "
                   f"start it with: scripts/brokers.sh start {name}")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def error_chain(exc: Optional[BaseException]) -> Iterator[BaseException]:
    """``exc`` and every error it was raised from (to check none leaks a secret)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def ready(conn: Any, name: str) -> int:
    """Messages ready in queue ``name``, read on a channel of its own."""
    channel = conn.channel()
    try:
        return channel.queue_declare(name, passive=True).message_count
    finally:
        channel.close()
