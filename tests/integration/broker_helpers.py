"""The helpers every broker's integration tests share.

Publishing, consuming and waiting for silence on a connection; a ticker
greenlet and the process's CPU time, for the idle-CPU tests; and a Python
script run in a process of its own, read line by line and SIGKILLed at the
end, for the tests of a consumer that dies.
"""
from __future__ import annotations

import resource
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, List, Optional

import gevent
import gevent.subprocess
import pytest

from kombu_green import Connection, Consumer, Producer, Queue

from ..conformance import WAIT

# -- publishing and consuming -------------------------------------------------------------


def declare(conn: Connection, *names: str, **arguments: Any) -> None:
    channel = conn.channel()
    for name in names:
        Queue(name, **arguments)(channel).declare()


def publish(conn: Connection, name: str, bodies: Iterable[Any], **properties: Any) -> None:
    producer = Producer(conn.channel())
    for body in bodies:
        producer.publish(body, routing_key=name, **properties)


def consume(conn: Connection, name: str, ack: bool = True, queue: Optional[Queue] = None,
            **kwargs: Any) -> List[Any]:
    """Start a consumer on queue ``name`` (or ``queue``); return the list it fills."""
    received: List[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(message)
        if ack:
            message.ack()

    Consumer(conn.channel(), [queue or Queue(name)], callbacks=[on_message], **kwargs).consume()
    return received


def quiet(conn: Connection, seconds: float) -> None:
    """Nothing more is delivered for ``seconds``."""
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=seconds)


# -- idle waiting -------------------------------------------------------------------------

#: How long the idle-CPU tests wait.
IDLE_SECONDS = 3.0


class Ticker:
    """A greenlet that wakes every 10 ms and counts."""

    def __init__(self) -> None:
        self.ticks = 0
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.ticks += 1
            gevent.sleep(0.01)

    def stop(self) -> None:
        self.greenlet.kill()


def cpu_seconds() -> float:
    """CPU time (user and system, every thread) the process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- a process that dies ------------------------------------------------------------------


class ChildProcess:
    """A script in a process of its own, read line by line, SIGKILLed at the end.

    ``role`` names it in the script's file name and in failure messages.
    """

    def __init__(self, tmp_path: Path, script: str, *args: str, role: str = "child") -> None:
        path = tmp_path / f"{role}.py"
        path.write_text(textwrap.dedent(script))
        self.role = role
        self.errors = ""
        self.proc = gevent.subprocess.Popen(
            [sys.executable, str(path), *args],
            stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True)

    def says(self, expected: str) -> None:
        with gevent.Timeout(WAIT * 2, AssertionError(f"the {self.role} process never said {expected!r}")):
            line = self.proc.stdout.readline()
        if line.strip() != expected:
            self.kill()
            pytest.fail(f"the {self.role} process said {line!r}, not {expected!r}: {self.errors}")

    def kill(self) -> None:
        if self.proc.stdout.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.errors = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
