#!/usr/bin/env bash
# Install what the tests need and run the whole suite twice: as is, and
# again under gevent.monkey.patch_all(). Arguments are passed to pytest.
# Exit status: the first failing run's pytest status (5 = no tests ran).
set -uo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PYTHON=${PYTHON:-python3}

"$PYTHON" -m pip install -q -e '.[test]' || exit 1

status=0
echo "== test suite (plain) =="
"$PYTHON" -m pytest "$@" || status=$?
echo "== test suite (gevent.monkey.patch_all) =="
"$PYTHON" scripts/pytest_patched.py "$@" || { rc=$?; [ "$status" -eq 0 ] && status=$rc; }
exit "$status"
