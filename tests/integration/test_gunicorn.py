"""examples/gunicorn_app.py under ``gunicorn -k gevent``, consumed by examples/worker_pool.py.

500 requests from 50 concurrent clients must each get a 200, and the queue
must then hold every request id exactly once: the worker pool handles each
of them once, and nothing is left behind. With the broker restarted a third
of the way through 3,000 requests from 100 clients, every request must still
get its 200 and every id answered so must be in the queue (duplicates --
a publish whose confirm the restart cut off, sent again -- are counted).
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import gevent
import gevent.event
import gevent.socket
import gevent.subprocess
import pytest

from kombu_green import Connection, Queue

from .amqp_support import AMQP_URL, require_rabbitmq
from .redis_support import redis_url
from .restarts import REPORT, drain_all, duplicates, require_script, restart_in_background

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WORKERS = 2
CLIENTS = 50
EACH = 10
BUDGET = 180  # seconds for a whole test: bounds a hang, claims no speed


def _amqp() -> str:
    require_rabbitmq()
    return AMQP_URL


def free_port() -> int:
    probe = gevent.socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def http_get(port: int, target: str) -> Tuple[int, str]:
    """One HTTP/1.1 GET on a connection of its own, over a gevent socket."""
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


class Gunicorn:
    """``gunicorn -k gevent -w 2`` serving the example app, stopped by its PID
    (SIGTERM, then SIGKILL if it has not exited in time)."""

    def __init__(self, tmp_path: Path, env: Dict[str, str]) -> None:
        self.port = free_port()
        self.log = open(tmp_path / "gunicorn.log", "w+")
        self.proc = gevent.subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(WORKERS),
             "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10",
             "--chdir", str(EXAMPLES), "gunicorn_app:app"],
            env={**os.environ, **env}, stdout=self.log, stderr=gevent.subprocess.STDOUT)
        # Ready once every worker has answered: a worker sent SIGTERM while
        # still booting would miss it and hold the shutdown up.
        answered: Set[str] = set()
        with gevent.Timeout(30, AssertionError(f"gunicorn workers never all answered: {self.output()}")):
            while len(answered) < WORKERS:
                try:
                    status, text = http_get(self.port, "/health")
                    assert status == 200, text
                    answered.add(text)
                except OSError:
                    assert self.proc.poll() is None, f"gunicorn exited: {self.output()}"
                    gevent.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except gevent.subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(params=[pytest.param(_amqp, id="amqp", marks=pytest.mark.amqp),
                        pytest.param(redis_url, id="redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest) -> str:
    return request.param()


@pytest.fixture
def queue(url: str) -> Iterator[Queue]:
    made = Queue(f"test.gunicorn.{uuid.uuid4().hex[:10]}", durable=True, auto_delete=False)
    yield made
    with Connection(url) as conn:
        made(conn.channel()).delete()


def run_worker_pool(url: str, queue: Queue, count: int) -> List[str]:
    """examples/worker_pool.py as a script; the ids it says it handled."""
    proc = gevent.subprocess.Popen(
        [sys.executable, str(EXAMPLES / "worker_pool.py"), "--url", url, "--queue", queue.name,
         "--workers", "8", "--count", str(count), "--idle", "10"],
        stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == f"handled {count} messages with 8 workers", out[-500:]
    return [line.split("id=")[1].split()[0] for line in out.splitlines() if "id=" in line]


def test_every_request_is_published_once(url: str, queue: Queue, tmp_path: Path) -> None:
    with gevent.Timeout(BUDGET):
        server = Gunicorn(tmp_path, {"KOMBU_GREEN_URL": url, "KOMBU_GREEN_QUEUE": queue.name})
        try:
            statuses: Dict[int, Any] = {}

            def client(c: int) -> None:
                for i in range(EACH):
                    n = c * EACH + i
                    statuses[n] = http_get(server.port, f"/publish?id={n}")

            gevent.joinall([gevent.spawn(client, c) for c in range(CLIENTS)], raise_error=True)
        finally:
            server.stop()
        total = CLIENTS * EACH
        assert statuses == {n: (200, f"published {n}\n") for n in range(total)}, server.output()
        handled = run_worker_pool(url, queue, total)
    assert sorted(map(int, handled)) == list(range(total))
    with Connection(url) as conn:  # nothing more than that was published
        assert queue(conn.channel()).queue_declare(passive=True).message_count == 0


def test_a_broker_restart_fails_no_request_and_loses_no_message(url: str, queue: Queue, tmp_path: Path) -> None:
    script = "rabbitmq" if url.startswith("amqp") else "redis"
    require_script(script)
    clients, each = 100, 30
    total, statuses = clients * each, {}
    answered = gevent.event.Event()
    with gevent.Timeout(BUDGET):
        server = Gunicorn(tmp_path, {"KOMBU_GREEN_URL": url, "KOMBU_GREEN_QUEUE": queue.name})
        try:
            def client(c: int) -> None:
                for i in range(each):
                    n = c * each + i
                    statuses[n] = http_get(server.port, f"/publish?id={n}")
                    if len(statuses) >= total // 3:
                        answered.set()

            started = time.monotonic()
            clients_running = [gevent.spawn(client, c) for c in range(clients)]
            answered.wait()
            restart, restarting = restart_in_background(script, down=1.0)
            gevent.joinall(clients_running + [restarting], raise_error=True)
            seconds = time.monotonic() - started
        finally:
            server.stop()
    failed = {n: answer for n, answer in statuses.items() if answer != (200, f"published {n}\n")}
    seen = [int(n) for n in drain_all({"url": url, "options": {}}, queue, until=total)]
    lost = sorted(set(range(total)) - set(seen))
    REPORT.append(f"{script}: gunicorn -k gevent -w {WORKERS}, {total} requests from {clients} clients, broker "
                  f"restarted after {total // 3} (restart {restart.seconds:.1f} s): "
                  f"{total - len(failed)} answered 200, {len(lost)} lost, {duplicates(seen)} duplicates, "
                  f"{seconds:.1f} s in all")
    assert not failed, f"{len(failed)} requests failed, e.g. {list(failed.items())[:3]}\n{server.output()[-2000:]}"
    assert not lost


@pytest.mark.amqp
def test_an_unreachable_broker_gets_a_503(tmp_path: Path) -> None:
    """No RabbitMQ needed: nothing listens where this app points (and the app is
    told not to retry, so the answer comes at once)."""
    with gevent.Timeout(BUDGET):
        nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
        server = Gunicorn(tmp_path, {"KOMBU_GREEN_URL": nowhere, "KOMBU_GREEN_QUEUE": "unused",
                                     "KOMBU_GREEN_PUBLISH_RETRIES": "0"})
        try:
            status, text = http_get(server.port, "/publish?id=1")
        finally:
            server.stop()
    assert status == 503
    assert "message broker unreachable" in text and "guest:guest" not in text
