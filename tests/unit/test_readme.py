"""The README's code and commands stay true."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()


def python_blocks() -> list:
    blocks = []
    for match in re.finditer(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", README):
        lines = [line[4:] for line in match.group(1).splitlines()]
        blocks.append("\n".join(lines))
    return blocks


@pytest.mark.parametrize("code", python_blocks())
def test_python_block_runs(code: str, memory_url: str, capsys: pytest.CaptureFixture) -> None:
    exec(compile(code.replace('"memory://"', repr(memory_url)), "README.rst", "exec"), {})
    assert "lolcat1" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test.sh" in README
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "python examples/quickstart.py" in README
