"""Fixtures shared by the integration tests."""
from __future__ import annotations

import urllib.parse
from typing import Iterator

import pytest

from .redis_keyspace import Keyspace
from .tcp_proxy import TcpProxy


@pytest.fixture
def space() -> Iterator[Keyspace]:
    """A Redis key prefix of this test's own, deleted afterwards."""
    keyspace = Keyspace()
    yield keyspace
    keyspace.delete_all()


@pytest.fixture
def proxy(space: Keyspace) -> Iterator[TcpProxy]:
    """A proxy in front of the test Redis (see :mod:`.tcp_proxy`)."""
    parsed = urllib.parse.urlsplit(space.url)
    made = TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    yield made
    made.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the broker-restart tests measured (duplicates, restart times)."""
    from .restarts import REPORT

    if REPORT:
        terminalreporter.section("broker restarts")
        for line in REPORT:
            terminalreporter.write_line(line)
