"""Fixtures for unit tests, which all run on memory:// brokers of their own."""
from __future__ import annotations

from typing import Iterator

import pytest

from kombu_green import Connection


@pytest.fixture
def conn(memory_url: str) -> Iterator[Connection]:
    """A Connection to a fresh memory broker, closed after the test."""
    connection = Connection(memory_url)
    yield connection
    connection.close()
