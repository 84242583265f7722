"""Fixtures shared by the integration tests."""
from __future__ import annotations

from typing import Iterator

import pytest

from .redis_keyspace import Keyspace


@pytest.fixture
def space() -> Iterator[Keyspace]:
    """A Redis key prefix of this test's own, deleted afterwards."""
    keyspace = Keyspace()
    yield keyspace
    keyspace.delete_all()
