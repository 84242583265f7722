"""The seed examples run unchanged against RabbitMQ (their URL from argv)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ..unit.test_examples import EXAMPLES, EXPECTED
from .amqp_support import AMQP_URL, require_rabbitmq

pytestmark = pytest.mark.amqp


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_on_rabbitmq(script: str) -> None:
    require_rabbitmq()
    out = subprocess.run([sys.executable, str(EXAMPLES / script), AMQP_URL], cwd=EXAMPLES,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert EXPECTED[script] in out.stdout
    assert "guest:guest" not in out.stdout  # the URL is shown masked, if at all
