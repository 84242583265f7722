"""Fixtures for unit tests, which all run on memory:// brokers of their own."""
from __future__ import annotations

import uuid
from typing import Any, Iterator, Type

import pytest

from kombu_green import Connection
from kombu_green.exceptions import OperationalError
from kombu_green.transport import memory


@pytest.fixture
def conn(memory_url: str) -> Iterator[Connection]:
    """A Connection to a fresh memory broker, closed after the test."""
    connection = Connection(memory_url)
    yield connection
    connection.close()


class FlakyTransport(memory.Transport):
    """A memory transport whose next ``refusals`` connection attempts fail."""

    refusals = 0
    attempts = 0

    def establish_connection(self) -> Any:
        type(self).attempts += 1
        if type(self).refusals > 0:
            type(self).refusals -= 1
            raise OperationalError("broker refused the connection (test)")
        return super().establish_connection()


@pytest.fixture
def flaky() -> Iterator[Type[FlakyTransport]]:
    """A FlakyTransport class of this test's own (its counters start at 0)."""
    cls = type("Flaky", (FlakyTransport,), {"refusals": 0, "attempts": 0})
    yield cls


@pytest.fixture
def flaky_conn(flaky: Type[FlakyTransport]) -> Iterator[Connection]:
    """A Connection to a memory broker of its own that refuses as ``flaky`` says."""
    name = f"flaky-{uuid.uuid4().hex[:8]}"
    connection = Connection(hostname=name, transport=flaky)
    yield connection
    connection.release()
    memory.forget_broker(name)
