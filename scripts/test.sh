#!/usr/bin/env bash
# Install what the tests need, start the brokers on 127.0.0.1 (installing
# them from Debian packages when missing), and run the whole suite twice:
# as is, and again under gevent.monkey.patch_all(). Arguments are passed to
# pytest. Brokers this script started are stopped again when it ends.
# Exit status: the first failing run's pytest status (5 = no tests ran).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PYTHON=${PYTHON:-python3}

"$PYTHON" -m pip install -q -e '.[test]' || exit 1

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

status=0
echo "== test suite (plain) =="
"$PYTHON" -m pytest "$@" || status=$?
echo "== test suite (gevent.monkey.patch_all) =="
"$PYTHON" scripts/pytest_patched.py "$@" || { rc=$?; [ "$status" -eq 0 ] && status=$rc; }
exit "$status"
