#!/usr/bin/env bash
# The test command. It installs the project with its test extras into a
# virtual environment of its own (.venv/, created when missing), upgraded to
# the newest releases the project's requirements allow -- what a new user's
# `pip install` gets today -- then checks the code (ruff, mypy), starts the
# brokers on 127.0.0.1 (installing them from Debian packages when missing)
# and runs the whole suite twice: as is, and again under
# gevent.monkey.patch_all(). Arguments are passed to pytest. Brokers this
# script started are stopped again when it ends.
#
#   --floor   test the lower bounds instead: a separate .venv-floor/ on the
#             oldest supported Python (PYTHON_FLOOR, default python3.9), with
#             every dependency at exactly the lower bound pyproject.toml
#             states (scripts/floor_requirements.py); the checkers are skipped.
#
# Exit status: the first failing step's status (pytest's 5 = no tests ran).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

floor=0
if [ "${1:-}" = "--floor" ]; then floor=1; shift; fi

if [ "$floor" -eq 1 ]; then
    VENV=${KOMBU_GREEN_VENV:-.venv-floor}
    BASE_PYTHON=${PYTHON_FLOOR:-python3.9}
else
    VENV=${KOMBU_GREEN_VENV:-.venv}
    BASE_PYTHON=${PYTHON:-python3}
fi
PY=$VENV/bin/python

if [ ! -x "$PY" ]; then
    echo "== creating $VENV with $BASE_PYTHON =="
    "$BASE_PYTHON" -m venv "$VENV" || exit 1
fi
"$PY" -m pip install -q --upgrade pip || exit 1
if [ "$floor" -eq 1 ]; then
    "$PY" scripts/floor_requirements.py >"$VENV/floor-requirements.txt" || exit 1
    "$PY" -m pip install -q -e . -r "$VENV/floor-requirements.txt" || exit 1
else
    "$PY" -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]' || exit 1
fi
echo "== $("$PY" --version) with =="
"$PY" -m pip freeze --exclude-editable | tr '\n' ' '
echo

status=0
record() { [ "$status" -eq 0 ] && status=$1; }

if [ "$floor" -eq 0 ]; then
    echo "== ruff (lint, import order) =="
    "$PY" -m ruff check . || record 1
    echo "== mypy (strict) =="
    "$PY" -m mypy || record 1
fi

started=()
# shellcheck disable=SC2317  # called by the EXIT trap
stop_started() {
    if [ "${#started[@]}" -gt 0 ]; then scripts/brokers.sh stop "${started[@]}"; fi
}
trap stop_started EXIT
for broker in rabbitmq redis beanstalkd mongodb; do
    if ! scripts/brokers.sh status "$broker" >/dev/null 2>&1; then
        scripts/brokers.sh start "$broker" || exit 1
        started+=("$broker")
    fi
done
eval "$(scripts/brokers.sh env)"

echo "== test suite (plain) =="
"$PY" -m pytest "$@" || record $?
echo "== test suite (gevent.monkey.patch_all) =="
"$PY" scripts/pytest_patched.py "$@" || record $?
exit "$status"
