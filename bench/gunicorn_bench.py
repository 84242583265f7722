#!/usr/bin/env python
"""gunicorn -k gevent publishing one message per request: kombu_green, kombu and raw py-amqp.

For each client in turn it starts ``gunicorn -k gevent`` serving that
client's variant of the app (bench/gunicorn_variants.py), fires --warmup
unrecorded requests then -n recorded ones from -c concurrent keep-alive
HTTP clients, and reports requests/s and request latency. Afterwards the
queue must hold every request id exactly once. More in bench/README.rst.
"""
import harness  # first: it settles monkey-patching before socket is imported

# isort: split
import json
import os
import signal
import sys
import tempfile
from time import perf_counter
from typing import Any, Dict, List, Set, Tuple

import gevent
import gevent.socket
import gevent.subprocess
from amqp_bench import broker_params, delete_queues, raw_connect
from harness import BenchError, Figures, Metric, Run, check_ids, percentile

HERE = os.path.dirname(os.path.abspath(__file__))


class Client:
    """One keep-alive HTTP/1.1 connection over a gevent socket."""

    def __init__(self, port: int) -> None:
        self.sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def get(self, target: str) -> Tuple[int, bytes]:
        """One request, (status, body): enough HTTP for gunicorn's replies."""
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head.split(b" ", 2)[1]), body

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed a keep-alive connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    """A port for gunicorn to bind, so that runs in parallel do not collide."""
    probe = gevent.socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


class Server:
    """gunicorn -k gevent serving one variant; ready once every worker answered."""

    def __init__(self, variant: str, env: Dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.proc = gevent.subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
             "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10", "--log-level", "warning",
             "--chdir", HERE, "gunicorn_variants:app"],
            env={**os.environ, **env, "KOMBU_GREEN_BENCH_VARIANT": variant},
            stdout=self.log, stderr=self.log)
        pids: Set[bytes] = set()
        with gevent.Timeout(60, BenchError("gunicorn did not start")):
            while len(pids) < workers:
                try:
                    client = Client(self.port)
                    pids.add(client.get("/health")[1])
                    client.close()
                except OSError:
                    if self.proc.poll() is not None:
                        self.log.seek(0)
                        raise BenchError("gunicorn exited: " + self.log.read().decode()[-2000:]) from None
                    gevent.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (the workers finish their requests), SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except gevent.subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def fire(port: int, ids: range, clients: int) -> Tuple[float, List[float]]:
    """GET /publish?id=... for every id from ``clients`` connections: (seconds, latencies)."""
    latencies: List[float] = []
    todo = iter(ids)

    def client() -> None:
        conn = Client(port)
        try:
            for n in todo:
                start = perf_counter()
                status, body = conn.get(f"/publish?id={n}")
                latencies.append(perf_counter() - start)
                if status != 200:
                    raise BenchError(f"request {n}: {status} {body.decode(errors='replace').strip()}")
        finally:
            conn.close()

    start = perf_counter()
    gevent.joinall([gevent.spawn(client) for _ in range(clients)], raise_error=True)
    return perf_counter() - start, latencies


class GunicornBench(harness.Bench):
    url_env, default_url = "KOMBU_GREEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"
    titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw py-amqp"}
    defaults = {"messages": 2000, "warmup": 200}  # the warm-up opens every pooled connection
    shown = ("messages", "concurrency", "workers", "repeat", "warmup")

    @classmethod
    def options(cls, parser: Any) -> None:
        parser.add_argument("-c", "--concurrency", type=int, default=50, help="concurrent HTTP clients")
        parser.add_argument("-w", "--workers", type=int, default=2, help="gunicorn worker processes")

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.params = broker_params(args.url)
        self.display = self.params["display"]
        self.queues: List[str] = []

    def open(self) -> Dict[str, Any]:
        raw_connect(self.params).close()
        return {**harness.versions("gunicorn", "kombu", "amqp"), "cpus": os.cpu_count()}

    def metrics(self) -> List[Metric]:
        return [Metric("rps", "requests/s"), Metric("p50", "latency p50 ms", False, ".2f"),
                Metric("p99", "latency p99 ms", False, ".2f")]

    def round(self, lib: str, rnd: int) -> Figures:
        """A fresh gunicorn and queue per client and round: nothing carries over."""
        queue = f"bench.gunicorn.{lib}.{os.getpid()}.r{rnd}"
        self.queues.append(queue)
        raw = {k: self.params[k] for k in ("host", "userid", "password", "virtual_host")}
        server = Server(lib, {"KOMBU_GREEN_URL": self.params["kombu_url" if lib == "kombu" else "kombu_green_url"],
                              "KOMBU_GREEN_QUEUE": queue, "KOMBU_GREEN_BENCH_AMQP": json.dumps(raw)},
                        self.args.workers)
        warmup, n = self.args.warmup, self.args.messages
        try:
            fire(server.port, range(warmup), self.args.concurrency)
            elapsed, latencies = fire(server.port, range(warmup, warmup + n), self.args.concurrency)
        finally:
            server.stop()
        self.read_back(queue, warmup + n)
        return {"rps": n / elapsed, "p50": percentile(latencies, 50) * 1e3,
                "p99": percentile(latencies, 99) * 1e3, "seconds": elapsed, "requests": n}

    def read_back(self, queue: str, n: int) -> None:
        """The queue must hold the ids 0..n-1, each once; it is deleted after."""
        conn = raw_connect(self.params)
        try:
            channel = conn.channel()
            ids: List[int] = []
            while True:
                message = channel.basic_get(queue, no_ack=True)
                if message is None:
                    break
                ids.append(int(json.loads(message.body)["id"]))
            channel.queue_delete(queue)
        finally:
            conn.close()
        check_ids(ids, n)

    def close(self, run: Run) -> List[str]:
        """Queues a failed round left (read_back deletes the others)."""
        leftover = delete_queues(self.params, self.queues)
        return [f"{leftover} queue(s) were left behind; deleted"] if leftover else []


if __name__ == "__main__":
    sys.exit(harness.main(GunicornBench))
