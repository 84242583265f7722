#!/usr/bin/env python
"""beanstalkd side by side: kombu_green and raw greenstalk (kombu has no beanstalk transport).

What is measured, and how to read it: bench/README.rst.
"""
import harness  # first: it settles monkey-patching before socket is imported

# isort: split
import json
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List
from urllib.parse import urlsplit

import greenstalk
from flows import BrokerBench, Ends, Sink, json_bytes
from harness import BenchError

from kombu_green.transport.beanstalk.config import tube_name

#: Seconds a raw reserve waits (greenstalk takes whole seconds).
RESERVE_TIMEOUT = 10


class BeanstalkBench(BrokerBench):
    url_env, default_url = "KOMBU_GREEN_BEANSTALK_URL", "beanstalk://127.0.0.1:11300"
    titles = {"kombu_green": "kombu_green", "raw": "raw greenstalk"}

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        parts = urlsplit(args.url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 11300)
        self.display = "beanstalk://{}:{}".format(*self.address)

    def client(self) -> "greenstalk.Client[bytes]":
        """A plain greenstalk client: the raw column, and housekeeping."""
        return greenstalk.Client(self.address, encoding=None)

    def open(self) -> Dict[str, Any]:
        with self.client() as client:
            return {**harness.versions("greenstalk"), "beanstalkd": client.stats().get("version", "?")}

    def settle(self, lib: str, names: List[str], n: int) -> None:
        """Every put was answered: the ready count is exact at once."""
        count = 0
        with self.client() as client:
            for name in names:
                try:
                    count += client.stats_tube(tube_name(name))["current-jobs-ready"]
                except greenstalk.NotFoundError:
                    pass  # no job, no tube
        if count != n:
            raise BenchError(f"the tubes hold {count} ready jobs after publishing {n}")

    def sweep(self, names: List[str]) -> int:
        """Delete the jobs left in the bench's tubes; the server's other tubes are not touched."""
        leftover = 0
        with self.client() as client:
            for name in names:
                client.use(tube_name(name))
                found = False
                for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                    while True:
                        try:
                            client.delete(peek())
                        except greenstalk.NotFoundError:
                            break
                        found = True
                leftover += found
        return leftover

    @contextmanager
    def raw_ends(self, names: List[str], sink: Sink) -> Iterator[Ends]:
        """put on one connection; reserve, decode, delete (two round trips) on the other."""
        tubes = [tube_name(name) for name in names]
        with self.client() as pclient, self.client() as cclient:
            using = [""]

            def send(i: int) -> None:
                tube = tubes[i % len(tubes)]
                if tube != using[0]:  # one more round trip, only when several tubes take turns
                    pclient.use(tube)
                    using[0] = tube
                pclient.put(json_bytes(i))

            def subscribe() -> None:
                for tube in tubes:
                    cclient.watch(tube)
                cclient.ignore("default")

            def drain(timeout: float) -> None:
                try:
                    job = cclient.reserve(timeout=RESERVE_TIMEOUT)
                except greenstalk.TimedOutError:
                    raise TimeoutError from None
                sink(json.loads(job.body)["id"])
                cclient.delete(job)

            yield Ends(lambda: send, subscribe, drain)


if __name__ == "__main__":
    sys.exit(harness.main(BeanstalkBench))
