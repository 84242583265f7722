"""Restarting a real broker under a test, and what the resilience tests report.

The broker is stopped and started again by ``scripts/brokers.sh restart``,
which keeps its data (RabbitMQ's durable queues, a Redis snapshot), so a
message the broker confirmed before going down must still be there after.
The script runs as a cooperative subprocess: the greenlets under test keep
running -- and retrying -- while it works.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping

import gevent
import gevent.subprocess
import pytest

from kombu_green import Connection, Consumer

from ..conftest import IN_CI
from .amqp_support import AMQP_URL
from .redis_support import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "brokers.sh"

#: Broker name for brokers.sh, URL, and transport options, per transport under test.
BROKERS: Dict[str, Dict[str, Any]] = {
    "amqp": {"script": "rabbitmq", "url": AMQP_URL, "options": {"confirm_publish": True}},
    "redis": {"script": "redis", "url": REDIS_URL, "options": {}},
}

#: What the resilience tests measured, printed at the end of the run.
REPORT: List[str] = []


def require_restartable(transport: str) -> Dict[str, Any]:
    """The broker's settings, if this project's script runs it (else skip; fail in CI)."""
    broker = BROKERS[transport]
    require_script(broker["script"])
    return broker


def require_script(script: str) -> None:
    """Skip (fail in CI) unless ``scripts/brokers.sh`` runs ``script``, so a test may restart it."""
    status = gevent.subprocess.run([str(SCRIPT), "status", script],
                                   stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.STDOUT)
    if status.returncode != 0:
        message = (f"{script} is not running under scripts/brokers.sh, so the test "
                   f"cannot restart it: scripts/brokers.sh start {script}")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def drain_all(broker: Mapping[str, Any], queue: Any, until: int) -> List[int]:
    """Consume ``queue`` at ``broker["url"]`` until ``until`` distinct ids came and
    it stays quiet; return every id seen (duplicates included)."""
    seen: List[int] = []
    with Connection(broker["url"], transport_options=dict(broker["options"])) as conn:
        def on_message(body: Any, message: Any) -> None:
            seen.append(body["id"])
            message.ack()

        with Consumer(conn, [queue], callbacks=[on_message], prefetch_count=100):
            while True:
                try:
                    conn.drain_events(timeout=2 if len(set(seen)) >= until else 10)
                except socket.timeout:
                    break
    return seen


@dataclass
class Restart:
    """A restart running in the background; ``seconds`` is how long it took."""

    broker: str
    down: float
    kill: bool = False
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def run(self) -> None:
        done = gevent.subprocess.run([str(SCRIPT), "restart", "--down", str(self.down),
                                      *(["--kill"] if self.kill else []), self.broker],
                                     stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.STDOUT,
                                     env=dict(os.environ), timeout=120)
        self.seconds = time.monotonic() - self.started
        if done.returncode != 0:
            raise RuntimeError(f"restarting {self.broker} failed:\n{done.stdout.decode(errors='replace')}")


def restart_in_background(broker: str, down: float = 1.0,
                          kill: bool = False) -> "tuple[Restart, gevent.Greenlet]":
    """Restart ``broker`` (``kill``: SIGKILL it first, RabbitMQ only) while the caller goes on."""
    restart = Restart(broker, down, kill)
    return restart, gevent.spawn(restart.run)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def duplicates(ids: Iterable[int]) -> int:
    """How many deliveries were repeats of an id already seen."""
    return sum(count - 1 for count in Counter(ids).values())
