"""The cooperative contract: nothing kombu_green does may block the hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import gevent
import pytest

from kombu_green import Connection, Consumer, Producer, Queue, green
from kombu_green.exceptions import KombuError, NotCooperative

#: Runs in a fresh interpreter, because gevent's monitor thread must be
#: configured before the hub exists. Prints a JSON report on its last line.
BLOCKING_PROBE = textwrap.dedent('''
    import json, sys, time
    import gevent, gevent.events
    if "--patched" in sys.argv:
        from gevent import monkey; monkey.patch_all()
    from kombu_green import Connection, Consumer, Producer, Queue

    blocked = []
    gevent.events.subscribers.append(
        lambda event: blocked.append(event.blocking_time)
        if isinstance(event, gevent.events.EventLoopBlocked) else None)

    def control():
        # Deliberately hog the CPU: proves the monitor is watching.
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass

    URL = "memory://blocking-probe"
    TOTAL, WORKERS = 20000, 4
    done = []

    def consumer(n):
        with Connection(URL) as conn:
            Consumer(conn.channel(), [Queue(f"q{n}")],
                     callbacks=[lambda body, m: (done.append(1), m.ack())]).consume()
            while len(done) < TOTAL:
                try:
                    conn.drain_events(timeout=1)
                except OSError:
                    pass

    def producer():
        with Connection(URL) as conn:
            p = Producer(conn)
            for i in range(TOTAL):
                p.publish({"i": i, "pad": "x" * 200}, routing_key=f"q{i % WORKERS}")

    if "--control" in sys.argv:
        gevent.spawn(control).join()
    else:
        with Connection(URL) as conn:
            for n in range(WORKERS):
                Queue(f"q{n}")(conn.channel()).declare()
        workers = [gevent.spawn(consumer, n) for n in range(WORKERS)]
        gevent.sleep(0.05)
        producer_greenlet = gevent.spawn(producer)
        gevent.joinall(workers + [producer_greenlet], raise_error=True)
        gevent.sleep(0.5)  # give the monitor time to report the last stretch
    print(json.dumps({"blocked": blocked, "consumed": len(done)}))
''')


def run_probe(*args: str) -> dict:
    env = dict(os.environ, GEVENT_MONITOR_THREAD_ENABLE="true", GEVENT_MAX_BLOCKING_TIME="0.1")
    out = subprocess.run([sys.executable, "-c", BLOCKING_PROBE, *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_monitor_detects_a_blocked_hub() -> None:
    """Negative control: the probe's monitor does see a hogging greenlet."""
    assert run_probe("--control")["blocked"]


@pytest.mark.parametrize("mode", ["plain", "--patched"])
def test_busy_consume_loop_never_blocks_the_hub(mode: str) -> None:
    report = run_probe(mode)
    assert report["consumed"] == 20000
    assert report["blocked"] == [], f"hub blocked for {report['blocked']} s"


def test_busy_consumers_interleave_with_a_ticker(memory_url: str) -> None:
    """While messages are always ready, a ticker still gets to run in between."""
    total, consumed, ticks_during = 5000, [], []
    with Connection(memory_url) as conn:
        Queue("busy")(conn.channel()).declare()
        producer = Producer(conn)
        for n in range(total):
            producer.publish(n, routing_key="busy")

    def consume() -> None:
        with Connection(memory_url) as conn:
            Consumer(conn.channel(), [Queue("busy")],
                     callbacks=[lambda b, m: (consumed.append(b), m.ack())]).consume()
            while len(consumed) < total:
                conn.drain_events(timeout=1)

    def ticker() -> None:
        while len(consumed) < total:
            if 0 < len(consumed):
                ticks_during.append(len(consumed))
            gevent.sleep(0)

    workers = [gevent.spawn(consume) for _ in range(3)]
    tick = gevent.spawn(ticker)
    gevent.joinall(workers, timeout=30, raise_error=True)
    tick.join(timeout=5)
    assert len(consumed) == total
    assert any(0 < n < total for n in ticks_during), "the ticker never ran while consumers were busy"


def test_bell_wakes_every_waiter_and_times_out() -> None:
    bell, woken = green.Bell(), []
    waiters = [gevent.spawn(lambda: woken.append(bell.wait(timeout=5))) for _ in range(3)]
    gevent.sleep(0)
    bell.ring()
    gevent.joinall(waiters, timeout=5)
    assert woken == [True, True, True]
    assert bell.wait(timeout=0.01) is False


def test_wait_any_detaches_after_waking() -> None:
    first, second = green.Bell(), green.Bell()
    waiter = gevent.spawn(green.wait_any, [first, second], 5)
    gevent.sleep(0)
    second.ring()
    assert waiter.get(timeout=5) is True
    assert not first._waiters and not second._waiters


def test_socket_patch_detection_matches_gevent() -> None:
    from gevent import monkey
    assert green.is_socket_patched() == bool(monkey.is_module_patched("socket"))


def test_unpatched_blocking_driver_is_refused_with_a_fix() -> None:
    script = textwrap.dedent('''
        from kombu_green import green
        from kombu_green.exceptions import NotCooperative
        try:
            green.require_cooperative_sockets("example-driver")
        except NotCooperative as exc:
            print("REFUSED:", exc)
        green.require_cooperative_sockets("gevent-native", uses_gevent_sockets=True)
        from gevent import monkey; monkey.patch_all()
        green.require_cooperative_sockets("example-driver")
        print("PATCHED-OK")
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "REFUSED:" in out.stdout and "monkey.patch_all()" in out.stdout
    assert "PATCHED-OK" in out.stdout
    assert issubclass(NotCooperative, KombuError)


def test_offload_runs_blocking_calls_while_the_hub_keeps_running() -> None:
    import time
    offload = green.Offload(2)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
    try:
        # time.sleep stands for a blocking driver call; unpatched it runs in a thread.
        assert offload.call(lambda: time.sleep(0.3) or "done") == "done"
        assert offload.inline or len(ticks) >= 5
    finally:
        ticker.kill()
        offload.close()


def test_offload_reraises_in_the_caller() -> None:
    offload = green.Offload(1)
    with pytest.raises(ZeroDivisionError):
        offload.call(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        offload.spawn(lambda: 1 / 0).get()
    offload.close()


def test_offload_result_survives_an_interrupted_waiter() -> None:
    import time
    offload = green.Offload(1)
    kept = []

    def work() -> int:
        (gevent.sleep if offload.inline else time.sleep)(0.05)
        return 7

    pending = offload.spawn(work)
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.001):
            pending.get()
    pending.when_done(kept.append)
    gevent.sleep(0.2)
    assert kept == [7]
    offload.close()
