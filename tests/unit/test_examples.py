"""Every example runs as it is, on the embedded memory:// broker."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECTED = {
    "quickstart.py": "all 12 tasks processed by 3 greenlets",
    "overview.py": "done: 3 media messages processed",
    "bound_entities.py": "NotBoundError: Can't call delete on Exchange not bound to a channel",
    "feed_importer.py": "Got feed import message for: http://example.com/feed.atom",
}

#: Examples that need a broker shared between processes (gunicorn's workers
#: and a consumer): tests/unit/test_pools.py calls them in-process on
#: memory://, tests/integration/test_gunicorn.py runs them for real.
NEEDS_BROKER = {"gunicorn_app.py", "worker_pool.py"}


def test_every_example_is_checked() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED) | NEEDS_BROKER


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KOMBU_GREEN_URL"}
    out = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=EXAMPLES, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert EXPECTED[script] in out.stdout


def test_examples_take_the_url_from_argv() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "memory://elsewhere"],
                         cwd=EXAMPLES, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "memory://elsewhere" in out.stdout
