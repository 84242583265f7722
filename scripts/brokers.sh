#!/usr/bin/env bash
# Install (when missing), start, check and stop the message brokers the
# test-suite needs. Everything listens on 127.0.0.1 only, runs without
# systemd, and keeps its state under <repo root>/.brokers/.
#
# This is the driver. Each broker is one file scripts/brokers/NAME.sh, found
# at run time: adding a broker means adding its file. scripts/brokers/lib.sh
# holds the helpers they share and says what a broker file defines.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKERS_DIR=$ROOT/scripts/brokers
# shellcheck source-path=SCRIPTDIR source=brokers/lib.sh
. "$BROKERS_DIR/lib.sh"
for file in "$BROKERS_DIR"/*.sh; do
    [ "$file" != "$BROKERS_DIR/lib.sh" ] || continue
    # shellcheck source=/dev/null  # the broker files, checked on their own
    . "$file"
done

# Every broker in POSITION order, and those started when no name is given.
BROKERS=()
DEFAULT_BROKERS=()
while read -r _ name group; do
    for fn in install start ready stop status env; do
        declare -F "${fn}_$name" >/dev/null || die "$BROKERS_DIR/$name.sh defines no ${fn}_$name"
    done
    BROKERS+=("$name")
    if [ "$group" = default ]; then DEFAULT_BROKERS+=("$name"); fi
done < <(printf '%s\n' "${BROKER_ENTRIES[@]}" | sort -n)

usage() {
    local defaults=all
    [ "${DEFAULT_BROKERS[*]}" = "${BROKERS[*]}" ] || defaults=${DEFAULT_BROKERS[*]}
    cat >&2 <<EOF
usage: ${0##*/} start|stop|status [NAME ...]
       ${0##*/} restart [--down SECONDS] [--kill] [NAME ...]
                 (stop, stay down SECONDS (default 0), start again; RabbitMQ,
                  Redis and beanstalkd keep their queues and messages across it;
                  --kill: SIGKILL RabbitMQ instead of stopping it cleanly)
       ${0##*/} env [NAME ...]     (shell export lines for the tests)
Brokers: ${BROKERS[*]} (default: $defaults). State lives in $STATE.
EOF
    exit 2
}

# Stop a broker, leave it down for a while, start it again with its data:
# what the resilience tests put clients through. Each broker file tells what
# survives its restart.
# shellcheck disable=SC2034  # KEEP_STATE is read by the broker files
restart_one() {   # NAME DOWN_SECONDS KILL(0|1)
    KEEP_STATE=1
    if declare -F "before_restart_$1" >/dev/null; then "before_restart_$1"; fi
    if [ "$3" = 1 ]; then "kill_$1"; fi
    "stop_$1"
    sleep "$2"
    "start_$1"
    KEEP_STATE=0
}

# The brokers that `restart --kill` may crash: those with a kill_NAME hook.
killable() {
    local name out=()
    for name in "${BROKERS[@]}"; do
        if declare -F "kill_$name" >/dev/null; then out+=("$name"); fi
    done
    echo "${out[*]}"
}

# --- dispatch -------------------------------------------------------------

[ $# -ge 1 ] || usage
cmd=$1
shift
down=0
kill=0
case $cmd in
    start | stop | status | env) ;;
    restart)
        while [ $# -ge 1 ]; do
            case $1 in
                --down) [ $# -ge 2 ] || usage; down=$2; shift 2 ;;
                --kill) kill=1; shift ;;
                *) break ;;
            esac
        done
        if [ "$kill" = 1 ]; then
            [ $# -ge 1 ] || die "--kill is only for $(killable)"
            for name in "$@"; do
                declare -F "kill_$name" >/dev/null || die "--kill is only for $(killable)"
            done
        fi
        ;;
    -h | --help | help) usage ;;
    *) say "unknown command: $cmd"; usage ;;
esac
[ $# -ge 1 ] || set -- "${DEFAULT_BROKERS[@]}"
for name in "$@"; do
    [[ " ${BROKERS[*]} " == *" $name "* ]] || die "unknown broker: $name (known: ${BROKERS[*]})"
done

# Only status collects failures: start and stop must keep `set -e` active
# inside the broker functions, which a `|| ...` around the call would turn off.
rc=0
for name in "$@"; do
    if [ "$cmd" = status ]; then
        "status_$name" || rc=1
    elif [ "$cmd" = restart ]; then
        restart_one "$name" "$down" "$kill"
    else
        "${cmd}_$name"
    fi
done
exit "$rc"
