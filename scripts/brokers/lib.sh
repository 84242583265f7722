# shellcheck shell=bash
# Helpers shared by the broker files; scripts/brokers.sh sources this file
# first (with ROOT set to the repository root), then every other *.sh here.
#
# A broker NAME is one file, scripts/brokers/NAME.sh, that calls
#     register_broker NAME POSITION default|optional
# (POSITION orders the brokers in the usage text, in a run over all of them
# and in `env`; "default": started when no name is given) and defines:
#     install_NAME  install the server when it is missing
#     start_NAME    start it unless it runs, then wait until it answers;
#                   from an empty broker, or with its data if KEEP_STATE=1
#     ready_NAME    true if it answers on every port
#     stop_NAME     stop what this script started, by its recorded pid
#     status_NAME   print "NAME: ..."; fail unless running and answering
#     env_NAME      print the export lines the tests read
# and, when it needs them, the hooks of `restart`:
#     before_restart_NAME  runs first (Redis saves its data there)
#     kill_NAME            crashes it instead of a clean stop (restart
#                          --kill, refused for brokers without one)
# They all run under `set -euo pipefail` (see the dispatch loop).

STATE=$ROOT/.brokers
TLS_DIR=$STATE/tls
READY_TIMEOUT=60   # seconds to wait for a broker to answer
# shellcheck disable=SC2034  # read by the broker files
KEEP_STATE=0       # 1 during `restart`: start again with the data the broker had
STOP_TIMEOUT=15    # seconds to wait after SIGTERM before SIGKILL

# "POSITION NAME default|optional", one per broker file, in loading order.
BROKER_ENTRIES=()
register_broker() {   # NAME POSITION default|optional
    case $3 in default | optional) ;; *) die "register_broker $1: '$3' is not default or optional" ;; esac
    BROKER_ENTRIES+=("$2 $1 $3")
}

say() { echo "brokers: $*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

apt_install() {
    say "installing Debian packages: $*"
    as_root apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}

# --- processes --------------------------------------------------------------

# A dead daemon that nobody has reaped yet lingers as a zombie, and kill -0
# still succeeds on a zombie: read the state field of /proc/PID/stat instead.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }              # skip "pid (comm)": comm may hold spaces
    case ${stat%% *} in Z|X) return 1 ;; esac
}

# Print the recorded pid of broker NAME if that process is alive and its
# command line mentions PATTERN (default NAME): a stale pid file must not
# adopt an unrelated process that reused the pid.
running_pid() {   # NAME [PATTERN]
    local pid cmdline
    pid=$(cat "$STATE/$1/pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"${2:-$1}"* ]] && echo "$pid"
}

wait_gone() {   # PID SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    ! alive "$1"
}

# Stop a daemon by its recorded pid (see running_pid): SIGTERM, then SIGKILL
# after STOP_TIMEOUT seconds.
stop_daemon() {   # NAME PATTERN LABEL
    local pid
    if pid=$(running_pid "$1" "$2"); then
        say "stopping $3 (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
            say "$3 still alive after ${STOP_TIMEOUT}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || die "could not kill $3 (pid $pid)"
        fi
        say "$3 stopped"
    else
        say "$3 not running"
    fi
    rm -f "$STATE/$1/pid"
}

# The status line of a broker run as one daemon (see running_pid), asking
# ready_NAME whether it answers.
status_daemon() {   # NAME PATTERN PORTS ("port 11300")
    local pid
    if ! pid=$(running_pid "$1" "$2"); then
        echo "$1: stopped"
        return 1
    fi
    if "ready_$1"; then
        echo "$1: running (pid $pid, $3)"
    else
        echo "$1: not answering (pid $pid)"
        return 1
    fi
}

# --- ports and readiness ------------------------------------------------------

# True if something accepts connections on 127.0.0.1:PORT (listening there
# or on the wildcard address). Spawns no process: polling with python3
# alone would steal CPU from a booting broker.
tcp_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A leftover node still holding the ports would make a new node crash at
# boot while our readiness probe happily talks to the old one: refuse.
refuse_busy_ports() {
    local port busy=0
    for port in "$@"; do
        if tcp_open "$port"; then
            say "port 127.0.0.1:$port is already in use by a process this script did not start"
            busy=1
        fi
    done
    if [ "$busy" -ne 0 ]; then
        if command -v ss >/dev/null; then
            ss -ltnp | grep -E ":($(IFS='|'; echo "$*"))\b" >&2 || true
        fi
        die "stop that process (e.g. a system service) and try again"
    fi
}

show_logs() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        say "last 40 lines of $f:"
        tail -n 40 "$f" >&2
    done
}

# Wait until CHECK succeeds while PID stays alive; otherwise show LOGs and die.
await_ready() {   # NAME PID PAUSE CHECK WHERE LOG...
    local name=$1 pid=$2 pause=$3 check=$4 where=$5
    shift 5
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            show_logs "$@"
            die "$name exited during startup"
        fi
        if "$check"; then
            say "$name ready (pid $pid) on $where"
            return
        fi
        sleep "$pause"
    done
    show_logs "$@"
    die "$name not ready after ${READY_TIMEOUT}s (pid $pid still running)"
}

# --- TLS (RabbitMQ's and Redis's TLS ports) -----------------------------------

ensure_tls_cert() {
    [ -s "$TLS_DIR/cert.pem" ] && [ -s "$TLS_DIR/key.pem" ] && return
    command -v openssl >/dev/null || apt_install openssl
    mkdir -p "$TLS_DIR"
    say "generating a self-signed certificate in $TLS_DIR"
    local out
    out=$(openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>&1) ||
        { echo "$out" >&2; rm -f "$TLS_DIR"/*.pem; die "openssl failed"; }
    chmod 644 "$TLS_DIR/key.pem" "$TLS_DIR/cert.pem"   # any broker user may read it
}

# The CA file for the TLS ports, printed once however many brokers ask.
TLS_CA_SHOWN=
env_tls_ca() {
    [ -z "$TLS_CA_SHOWN" ] || return 0
    TLS_CA_SHOWN=1
    printf 'export KOMBU_GREEN_TLS_CA=%q\n' "$TLS_DIR/cert.pem"
}
