#!/usr/bin/env python
"""gunicorn -k gevent publishing one message per request: kombu_green, kombu and raw py-amqp.

Run as a script this is the driver: for each client in turn it starts
``gunicorn -k gevent`` with this very module as the app, fires N requests
(``-n``, default 2000) from C concurrent keep-alive HTTP clients (``-c``,
default 50), and reports request latency (p50, p99) and requests/s with
kombu_green's ratios to the other two. Afterwards the queue must hold
every request id exactly once (read back with plain py-amqp), or the run
is an error.

Imported by gunicorn (``--chdir bench gunicorn_bench:app``) it is the app,
in the variant named by ``$KOMBU_GREEN_BENCH_VARIANT``; each publishes the
same JSON body, persistent, with publisher confirms, to the same durable
queue, and answers 200 once the broker confirmed:

* ``kombu_green`` -- examples/gunicorn_app.py itself: a producer from
  ``kombu_green.pools.producers`` per request (ten connections per worker);
* ``kombu`` -- the same on kombu 5: ``kombu.pools.producers`` over
  ``pyamqp://`` with ``confirm_publish``;
* ``raw`` -- py-amqp with one connection and one channel per worker
  process, opened on the first request; requests take turns on it through
  a gevent lock, each waiting for its own confirm.
"""
import os
import sys

VARIANT = os.environ.get("KOMBU_GREEN_BENCH_VARIANT")
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")

if VARIANT is None and __name__ == "__main__":
    # The driver: decide on patching before anything imports socket.
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402
from urllib.parse import parse_qs, unquote, urlsplit  # noqa: E402

URL = os.environ.get("KOMBU_GREEN_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("KOMBU_GREEN_QUEUE", "bench.gunicorn")
ACQUIRE_TIMEOUT = 10.0


# -- the app variants (in the gunicorn workers) -----------------------------------------


def wsgi(publish: Callable[[str], None], errors: Tuple[type, ...]) -> Callable[..., Any]:
    """The example's HTTP surface around another ``publish(request_id)``."""
    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        status, text = "200 OK", f"ok (worker {os.getpid()})"
        if environ.get("PATH_INFO") == "/publish":
            request_id = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])[0]
            try:
                publish(request_id)
                text = f"published {request_id}"
            except errors as exc:
                status, text = "503 Service Unavailable", f"message broker unreachable: {exc}"
        body = (text + "\n").encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body]
    return app


def kombu_app() -> Callable[..., Any]:
    import kombu
    import kombu.pools
    from kombu.exceptions import OperationalError

    connection = kombu.Connection(URL, transport_options={"confirm_publish": True})
    queue = kombu.Queue(QUEUE, durable=True, auto_delete=False)

    def publish(request_id: str) -> None:
        with kombu.pools.producers[connection].acquire(block=True, timeout=ACQUIRE_TIMEOUT) as producer:
            producer.publish({"id": request_id, "pid": os.getpid()}, routing_key=queue.name,
                             declare=[queue], serializer="json", delivery_mode="persistent")

    return wsgi(publish, (OperationalError, OSError) + connection.connection_errors)


def raw_app() -> Callable[..., Any]:
    import amqp
    import gevent.lock

    parts = urlsplit(URL)
    lock = gevent.lock.Semaphore()
    link: Dict[str, Any] = {}

    def channel() -> Any:
        if "channel" not in link:
            conn = amqp.Connection(host=f"{parts.hostname}:{parts.port or 5672}",
                                   userid=unquote(parts.username or "guest"),
                                   password=unquote(parts.password or "guest"),
                                   virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
                                   confirm_publish=True)
            conn.connect()
            link["connection"], link["channel"] = conn, conn.channel()
            link["channel"].queue_declare(QUEUE, durable=True, auto_delete=False)
        return link["channel"]

    def publish(request_id: str) -> None:
        body = json.dumps({"id": request_id, "pid": os.getpid()}).encode()
        message = amqp.Message(body, content_type="application/json",
                               content_encoding="utf-8", delivery_mode=2)
        with lock:
            try:
                channel().basic_publish(message, exchange="", routing_key=QUEUE)
            except BaseException:
                conn = link.pop("connection", None)
                link.clear()
                if conn is not None:
                    conn.collect()  # reconnect on the next request
                raise

    return wsgi(publish, (amqp.exceptions.AMQPError, OSError))


def kombu_green_app() -> Callable[..., Any]:
    sys.path.insert(0, EXAMPLES)
    import gunicorn_app

    return gunicorn_app.app


if VARIANT is not None:
    app = {"kombu_green": kombu_green_app, "kombu": kombu_app, "raw": raw_app}[VARIANT]()


# -- the driver ---------------------------------------------------------------------------

if VARIANT is None:
    import argparse
    import importlib.util
    import platform
    import signal
    import tempfile
    from time import perf_counter

    import amqp
    import gevent
    import gevent.socket
    import gevent.subprocess
    from _common import (
        LIBS,
        BenchError,
        Unavailable,
        env_line,
        fmt,
        fmt_ratio,
        median,
        percentile,
        ratio,
        table,
        version,
    )
    from amqp_bench import broker_params, raw_connect

TITLES = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw py-amqp"}
WARMUP = 200  # requests before the timed ones: every pooled connection gets opened


class Client:
    """One keep-alive HTTP/1.1 connection over a gevent socket."""

    def __init__(self, port: int) -> None:
        self.sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def get(self, target: str) -> Tuple[int, bytes]:
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
    probe = gevent.socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


class Server:
    """gunicorn -k gevent serving one variant; ready once every worker answered."""

    def __init__(self, lib: str, url: str, queue: str, workers: int) -> None:
        self.port = free_port()
        env = {**os.environ, "KOMBU_GREEN_BENCH_VARIANT": lib, "KOMBU_GREEN_URL": url,
               "KOMBU_GREEN_QUEUE": queue}
        self.log = tempfile.TemporaryFile()
        self.proc = gevent.subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
             "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10", "--log-level", "warning",
             "--chdir", HERE, "gunicorn_bench:app"],
            env=env, stdout=self.log, stderr=self.log)
        pids = set()
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except gevent.subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def fire(port: int, ids: range, clients: int) -> Tuple[float, List[float]]:
    """GET /publish?id=... for every id from ``clients`` connections; (seconds, latencies)."""
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


def read_back(params: Dict[str, Any], queue: str, n: int) -> None:
    """The queue must hold the ids 0..n-1, each once; it is deleted afterwards."""
    conn = raw_connect(params)
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
    if sorted(ids) != list(range(n)):
        raise BenchError(f"the queue held {len(ids)} messages ({len(set(ids))} distinct ids) for {n} requests")


def one_round(lib: str, args: Any, params: Dict[str, Any], rnd: int) -> Dict[str, float]:
    if lib == "kombu" and importlib.util.find_spec("kombu") is None:
        raise Unavailable("kombu is not installed")
    queue = f"bench.gunicorn.{lib}.{os.getpid()}.r{rnd}"
    url = params["kombu_url" if lib == "kombu" else "kombu_green_url"]
    server = Server(lib, url, queue, args.workers)
    try:
        fire(server.port, range(WARMUP), args.concurrency)
        elapsed, latencies = fire(server.port, range(WARMUP, WARMUP + args.requests), args.concurrency)
    finally:
        server.stop()
    read_back(params, queue, WARMUP + args.requests)
    figures = {"rps": args.requests / elapsed, "p50": percentile(latencies, 50) * 1e3,
               "p99": percentile(latencies, 99) * 1e3}
    print(f"  round {rnd + 1} {TITLES[lib]:<12} {figures['rps']:>7,.0f} req/s  "
          f"p50 {figures['p50']:6.2f} ms  p99 {figures['p99']:6.2f} ms", file=sys.stderr, flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("KOMBU_GREEN_AMQP_URL",
                                                        "amqp://guest:guest@127.0.0.1:5672//"))
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-w", "--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(LIBS))
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    libs = [lib for lib in args.only.split(",") if lib]
    if not libs or set(libs) - set(LIBS):
        parser.error(f"--only takes a subset of {','.join(LIBS)}")
    params = broker_params(args.url)
    env = {"python": platform.python_version(), "gevent": version("gevent"),
           "gunicorn": version("gunicorn"), "kombu": version("kombu"), "amqp": version("amqp"),
           "kombu_green": version("kombu_green"), "requests": args.requests,
           "concurrency": args.concurrency, "workers": args.workers, "repeat": args.repeat,
           "cpus": os.cpu_count(), "broker": params["display"]}
    try:
        raw_connect(params).close()
    except (OSError, amqp.exceptions.AMQPError) as exc:
        print(f"cannot reach the broker at {params['display']}: {exc}", file=sys.stderr)
        return 2
    print(env_line(env), file=sys.stderr, flush=True)

    runs: Dict[str, List[Dict[str, float]]] = {lib: [] for lib in libs}
    errors: List[str] = []
    unavailable: Dict[str, str] = {}
    active = list(libs)
    for rnd in range(args.repeat):
        shift = rnd % len(libs)
        for lib in [lib for lib in libs[shift:] + libs[:shift] if lib in active]:
            try:
                runs[lib].append(one_round(lib, args, params, rnd))
            except Unavailable as exc:
                unavailable[lib] = str(exc)
                active.remove(lib)
            except Exception as exc:  # one broken client must not hide the others
                errors.append(f"{TITLES[lib]} round {rnd + 1}: {type(exc).__name__}: {exc}")
                print("  " + errors[-1], file=sys.stderr, flush=True)
                active.remove(lib)

    summary = {lib: {"rps": max(r["rps"] for r in got), "p50": median([r["p50"] for r in got]),
                     "p99": median([r["p99"] for r in got])}
               for lib, got in runs.items() if got}
    get = lambda lib, key: summary.get(lib, {}).get(key)  # noqa: E731
    rows, ratios = [], {}
    for key, label, spec in [("rps", "requests/s (higher is better)", ",.0f"),
                             ("p50", "latency p50 ms (lower is better)", ".2f"),
                             ("p99", "latency p99 ms (lower is better)", ".2f")]:
        vs = [ratio(get("kombu_green", key), get(other, key)) for other in ("kombu", "raw")]
        ratios[key] = {"kombu_green/kombu": vs[0], "kombu_green/raw": vs[1]}
        rows.append([label] + [("n/a" if lib in unavailable else fmt(get(lib, key), spec))
                               if lib in libs else "-" for lib in LIBS] + [fmt_ratio(v) for v in vs])
    print()
    print(env_line(env))
    print(table(["metric"] + [TITLES[lib] for lib in LIBS]
                + ["kombu_green/kombu", "kombu_green/raw"], rows))
    for lib, reason in unavailable.items():
        print(f"n/a: {TITLES[lib]}: {reason}")
    for err in errors:
        print("ERROR: " + err)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "runs": runs, "summary": summary, "ratios": ratios,
                       "errors": errors, "unavailable": unavailable}, fh, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
