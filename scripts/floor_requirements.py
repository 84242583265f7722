"""Print the lower bounds stated in pyproject.toml as exact pins, one a line.

``scripts/test.sh --floor`` installs these to test that the bounds the
project states still work. It reads the ``dependencies`` and the ``test``
extra (following ``kombu_green[...]`` references to other extras) and skips
the pinned checkers, which only the newest Python needs. Runs on Python 3.9,
which has no tomllib: the few lines it needs are read with a pattern.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List

CHECKERS = {"mypy", "ruff", "types-pyyaml"}
_ENTRY = re.compile(r'"([^"]+)"')


def _lists(text: str) -> Dict[str, List[str]]:
    """``name = ["a", "b"]`` lists (one line, or one entry a line), by name."""
    found: Dict[str, List[str]] = {}
    name, entries = None, []
    for line in text.splitlines():
        start = re.match(r"([\w-]+)\s*=\s*\[(.*)$", line)
        if name is None and start:
            if start.group(2).rstrip().endswith("]"):
                found.setdefault(start.group(1), _ENTRY.findall(start.group(2)))
            else:
                name, entries = start.group(1), _ENTRY.findall(start.group(2))
        elif name is not None:
            if line.startswith("]"):
                found.setdefault(name, entries)
                name = None
            else:
                entries.extend(_ENTRY.findall(line.split("#")[0]))
    return found


def pins(pyproject: Path) -> List[str]:
    lists = _lists(pyproject.read_text())
    wanted, seen, result = ["dependencies", "test"], set(), []
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        for entry in lists.get(name, []):
            extras = re.fullmatch(r"kombu_green\[(.*)\]", entry)
            if extras:
                wanted.extend(part.strip() for part in extras.group(1).split(","))
                continue
            package, _, bound = entry.partition(">=")
            if package.lower() in CHECKERS or not bound:
                continue
            result.append(f"{package}=={bound.split(',')[0]}")
    return sorted(set(result), key=str.lower)


if __name__ == "__main__":
    print("\n".join(pins(Path(__file__).resolve().parent.parent / "pyproject.toml")))
    sys.exit(0)
