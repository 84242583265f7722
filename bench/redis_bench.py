#!/usr/bin/env python
"""Redis side by side: kombu_green, kombu and raw redis-py on one redis-server.

Below the table, what redis-benchmark gets from the same server. What is
measured, and how to read it: bench/README.rst.
"""
import harness  # first: it settles monkey-patching before socket is imported

# isort: split
import json
import re
import shutil
import subprocess
import sys
from contextlib import closing, contextmanager
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import unquote, urlsplit

import redis
from flows import BrokerBench, Ends, Sink, json_bytes
from harness import BenchError

from kombu_green.transport.redis.keys import Keys

#: redis-benchmark on the server itself: its default 50 connections, then
#: one connection (to hold a single client's column against).
SERVER_RUNS = [("50 connections", ["-n", "100000"]), ("1 connection", ["-n", "20000", "-c", "1"])]
#: The list redis-benchmark's lpush and rpop tests push to and pop from.
SERVER_BENCH_KEY = "mylist"
SERVER_LINE = re.compile(r"^(\w+): ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?")
#: A queue's lists (one per priority step) are named as kombu names them.
KEYS = Keys()


class RedisBench(BrokerBench):
    url_env, default_url = "KOMBU_GREEN_REDIS_URL", "redis://127.0.0.1:6379/0"
    titles = {"kombu_green": "kombu_green", "kombu": "kombu", "raw": "raw redis-py"}
    goals = [("consume", "kombu", 1.5)]

    @classmethod
    def options(cls, parser: Any) -> None:
        super().options(parser)
        parser.add_argument("--no-server-bench", action="store_true",
                            help="do not run redis-benchmark after the rounds")

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        parts = urlsplit(args.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.db, self.scheme = int(parts.path.strip("/") or 0), parts.scheme
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        who = self.username + "@" if self.username else ""
        self.display = f"{self.scheme}://{who}{self.host}:{self.port}/{self.db}"

    def client(self) -> redis.Redis:
        """A plain redis-py client: the raw column, and housekeeping."""
        return redis.Redis.from_url(self.args.url)

    def open(self) -> Dict[str, Any]:
        with closing(self.client()) as client:
            server = client.info("server").get("redis_version", "?")
        return {**harness.versions("kombu", "redis", "hiredis"), "redis-server": server}

    def settle(self, lib: str, names: List[str], n: int) -> None:
        """Every publish waited for its reply: the count is exact at once."""
        with closing(self.client()) as client:
            count = sum(client.llen(key) for name in names for key in KEYS.lists(name))
        if count != n:
            raise BenchError(f"the queues hold {count} messages after publishing {n}")

    def sweep(self, names: List[str]) -> int:
        """Only the keys of the bench's queues (their lists and kombu_green's
        declaration): the server may hold other data."""
        with closing(self.client()) as client:
            return sum(1 for name in names if client.delete(*KEYS.lists(name), KEYS.meta(name)))

    @contextmanager
    def raw_ends(self, names: List[str], sink: Sink) -> Iterator[Ends]:
        """LPUSH on one client; one BRPOP per message on the other, no ack, no prefetch."""
        with closing(self.client()) as pclient, closing(self.client()) as cclient:
            def send(i: int) -> None:
                pclient.lpush(names[i % len(names)], json_bytes(i))

            def drain(timeout: float) -> None:
                reply = cclient.brpop(names, timeout=timeout)
                if reply is None:
                    raise TimeoutError
                sink(json.loads(reply[1])["id"])

            yield Ends(lambda: send, lambda: None, drain)
            cclient.delete(*names)

    def notes(self) -> Tuple[List[str], Dict[str, Any]]:
        """redis-benchmark after the rounds, so that it cannot disturb them."""
        if self.args.no_server_bench:
            return [], {}
        harness.say("  redis-benchmark ...")
        return self.server_limit()

    def server_limit(self) -> Tuple[List[str], Dict[str, Any]]:
        """redis-benchmark's LPUSH and RPOP figures: lines to print, and the data."""
        exe = shutil.which("redis-benchmark")
        if exe is None:
            return ["server: redis-benchmark not found (Debian package redis-tools)"], {}
        if self.scheme != "redis":
            return [f"server: redis-benchmark is only run for redis:// URLs, not {self.scheme}://"], {}
        shown = ["redis-benchmark", "-h", self.host, "-p", str(self.port), "-q", "-t", "lpush,rpop",
                 "-d", "1000"] + (["--dbnum", str(self.db)] if self.db else []) \
            + (["--user", self.username] if self.username else [])
        secret = ["-a", self.password, "--no-auth-warning"] if self.password else []
        lines: List[str] = []
        data: Dict[str, Any] = {}
        with closing(self.client()) as client:
            if client.exists(SERVER_BENCH_KEY):
                return [f"server: redis-benchmark skipped: it would push to and pop from the "
                        f"existing key {SERVER_BENCH_KEY!r} of database {self.db}"], {}
            for label, extra in SERVER_RUNS:
                command = shown + extra
                try:
                    out = subprocess.run([exe] + command[1:] + secret, capture_output=True, text=True,
                                         timeout=300, check=True).stdout
                except (OSError, subprocess.SubprocessError) as exc:
                    lines.append(f"server ({label}): redis-benchmark failed: {exc}")
                    continue
                finally:
                    client.delete(SERVER_BENCH_KEY)  # it did not exist before
                figures = {}
                for line in re.split(r"[\r\n]", out):
                    match = SERVER_LINE.match(line.strip())
                    if match:
                        figures[match.group(1)] = {"rps": float(match.group(2)), "p50_us": float(
                            match.group(3)) * 1000 if match.group(3) else None}
                data[label] = {"command": " ".join(command), "figures": figures}
                shown_figures = "; ".join(
                    f"{test} {f['rps']:,.0f}/s" + (f" (p50 {f['p50_us']:,.0f}us)" if f["p50_us"] else "")
                    for test, f in figures.items()) or "no figures in its output"
                lines.append(f"server, {label} ({' '.join(command)}): {shown_figures}")
        return lines, {"server": data}


if __name__ == "__main__":
    sys.exit(harness.main(RedisBench))
