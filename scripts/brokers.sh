#!/usr/bin/env bash
# Install (when missing), start, check and stop the message brokers the
# test-suite needs. Everything listens on 127.0.0.1 only, runs without
# systemd, and keeps its state under <repo root>/.brokers/.
#
# Each broker is a start_<name> / stop_<name> / status_<name> trio; adding
# one means writing the trio and listing its name in BROKERS.
#
# The trios are only called through "${cmd}_$name", which shellcheck cannot
# follow: it would report them and every helper as unreachable.
# shellcheck disable=SC2317
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/.brokers
TLS_DIR=$STATE/tls
BROKERS=(rabbitmq redis beanstalkd mongodb)
READY_TIMEOUT=60   # seconds to wait for a broker to answer
KEEP_STATE=0       # 1 during `restart`: start again with the data the broker had
STOP_TIMEOUT=15    # seconds to wait after SIGTERM before SIGKILL

say() { echo "brokers: $*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    cat >&2 <<EOF
usage: ${0##*/} start|stop|status [NAME ...]
       ${0##*/} restart [--down SECONDS] [--kill] [NAME ...]
                 (stop, stay down SECONDS (default 0), start again; RabbitMQ,
                  Redis and beanstalkd keep their queues and messages across it;
                  --kill: SIGKILL RabbitMQ instead of stopping it cleanly)
       ${0##*/} env [NAME ...]     (shell export lines for the tests)
Brokers: ${BROKERS[*]} (default: all). State lives in $STATE.
EOF
    exit 2
}

# --- helpers --------------------------------------------------------------

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

# True if an AMQP 0-9-1 server on 127.0.0.1:PORT answers the protocol
# header with a method frame (Connection.Start, first byte 0x01). With a
# CA file, talk TLS and verify the certificate for host "localhost".
amqp_answers() {   # PORT [CAFILE]
    python3 - "$@" <<'EOF' 2>/dev/null
import socket, ssl, sys
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=2)
if len(sys.argv) > 2:
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    s = ctx.wrap_socket(s, server_hostname="localhost")
s.sendall(b"AMQP\x00\x00\x09\x01")
sys.exit(0 if s.recv(1) == b"\x01" else 1)
EOF
}

show_logs() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        say "last 40 lines of $f:"
        tail -n 40 "$f" >&2
    done
}

# The CA file for the TLS ports, printed once however many brokers ask.
TLS_CA_SHOWN=
env_tls_ca() {
    [ -z "$TLS_CA_SHOWN" ] || return 0
    TLS_CA_SHOWN=1
    printf 'export KOMBU_GREEN_TLS_CA=%q\n' "$TLS_DIR/cert.pem"
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

# --- RabbitMQ -------------------------------------------------------------

RABBIT_DIR=$STATE/rabbitmq
# The /usr/sbin wrappers switch to the rabbitmq user and its cookie; run
# the real script so the node uses our HOME (and cookie) instead.
RABBIT_BIN=/usr/lib/rabbitmq/bin/rabbitmq-server
RABBIT_PORTS=(5672 5671 25672)   # AMQP, AMQPS, Erlang distribution

rabbitmq_ready() {
    tcp_open 5672 && tcp_open 5671 &&
        amqp_answers 5672 && amqp_answers 5671 "$TLS_DIR/cert.pem"
}

start_rabbitmq() {
    local pid i d=$RABBIT_DIR
    if pid=$(running_pid rabbitmq); then
        if rabbitmq_ready; then
            say "rabbitmq already running (pid $pid)"
            return
        fi
        say "rabbitmq (pid $pid) is running but not answering yet"
    else
        [ -x "$RABBIT_BIN" ] || apt_install rabbitmq-server
        ensure_tls_cert
        refuse_busy_ports "${RABBIT_PORTS[@]}"

        if [ "$KEEP_STATE" != 1 ]; then
            rm -rf "$d/mnesia" "$d/log"   # every start begins from an empty broker
        fi
        mkdir -p "$d/mnesia" "$d/log" "$d/home"
        echo '[].' >"$d/enabled_plugins"
        : >"$d/rabbitmq-env.conf"   # keeps /etc/rabbitmq/rabbitmq-env.conf out
        cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:5672
listeners.ssl.local = 127.0.0.1:5671
ssl_options.cacertfile = $TLS_DIR/cert.pem
ssl_options.certfile = $TLS_DIR/cert.pem
ssl_options.keyfile = $TLS_DIR/key.pem
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
        say "starting rabbitmq"
        (
            export HOME=$d/home   # the Erlang cookie lives here
            export RABBITMQ_NODENAME=rabbit@localhost   # no need for the hostname to resolve
            export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672
            export RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS=127.0.0.1
            export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
            export RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf
            export RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf
            export RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
            export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
            export RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log
            export ERL_CRASH_DUMP=$d/log/erl_crash.dump
            cd "$d"
            # Background jobs of a script do not lead a process group, so
            # setsid runs in place: $! is the node's pid and the leader of
            # a new session and process group, detached from any terminal.
            exec setsid "$RABBIT_BIN" </dev/null >"$d/server.log" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$d/pid"
    fi

    # Poll the AMQP handshake rather than `rabbitmqctl await_startup`, which
    # exits 69 at once when called before the node has registered.
    await_ready rabbitmq "$pid" 0.2 rabbitmq_ready "127.0.0.1:5672 (amqp), :5671 (amqps)" \
        "$d/server.log" "$d/log/rabbit@localhost.log"
}

stop_rabbitmq() {
    local pid
    if pid=$(running_pid rabbitmq); then
        say "stopping rabbitmq (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true   # the node shuts down cleanly
        if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
            say "rabbitmq still alive after ${STOP_TIMEOUT}s: killing its process group"
            kill -KILL -- "-$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || die "could not kill rabbitmq (pid $pid)"
        fi
        say "rabbitmq stopped"
    else
        say "rabbitmq not running"
    fi
    rm -f "$RABBIT_DIR/pid"
    stop_epmd
}

# epmd (the Erlang port mapper, port 4369) outlives the node. `epmd -kill`
# is refused while any node is still registered, so other Erlang nodes on
# this machine are left alone. Wait for it to exit, or the next start
# could register with the dying one.
stop_epmd() {
    local f pid pids=()
    command -v epmd >/dev/null || return 0
    for f in /proc/[0-9]*/comm; do
        if [ "$(cat "$f" 2>/dev/null)" = epmd ]; then
            pid=${f#/proc/}
            pids+=("${pid%/comm}")
        fi
    done
    epmd -kill >/dev/null 2>&1 || return 0
    for pid in "${pids[@]}"; do
        wait_gone "$pid" 5 || say "epmd (pid $pid) still running"
    done
}

status_rabbitmq() {
    local pid
    if ! pid=$(running_pid rabbitmq); then
        echo "rabbitmq: stopped"
        return 1
    fi
    if rabbitmq_ready; then
        echo "rabbitmq: running (pid $pid, ports ${RABBIT_PORTS[*]})"
    else
        echo "rabbitmq: not answering (pid $pid)"
        return 1
    fi
}

env_rabbitmq() {
    echo "export KOMBU_GREEN_AMQP_URL=amqp://guest:guest@127.0.0.1:5672//"
    echo "export KOMBU_GREEN_AMQPS_URL=amqps://guest:guest@127.0.0.1:5671//"
    env_tls_ca
}

# --- Redis and Redis Sentinel --------------------------------------------

# One redis-server serves plain TCP and, when built with TLS, TLS too; a
# Sentinel monitors it as master "kombu_green". Both daemonize themselves
# and write their pid files once they listen.
REDIS_DIR=$STATE/redis
REDIS_MASTER=kombu_green

# Debian builds redis-server with TLS; a build without it rejects the
# tls-* options. The bad port makes the probe exit at once either way.
REDIS_TLS=
redis_tls() {
    if [ -z "$REDIS_TLS" ]; then
        command -v redis-server >/dev/null || return 1
        local out
        out=$(redis-server --tls-port 0 --port x 2>&1) || true
        if [[ $out == *"Bad directive"* ]]; then REDIS_TLS=no; else REDIS_TLS=yes; fi
    fi
    [ "$REDIS_TLS" = yes ]
}

redis_ports() {
    if redis_tls; then echo 6379 6380 26379; else echo 6379 26379; fi
}

redis_cli() {
    timeout 5 redis-cli -h 127.0.0.1 "$@" 2>/dev/null
}

redis_ready() {
    [ "$(redis_cli -p 6379 ping)" = PONG ] || return 1
    if redis_tls; then
        [ "$(redis_cli --tls --cacert "$TLS_DIR/cert.pem" -p 6380 ping)" = PONG ] || return 1
    fi
    [ "$(redis_cli -p 26379 sentinel get-master-addr-by-name "$REDIS_MASTER")" = $'127.0.0.1\n6379' ]
}

# A pid file whose process is gone means the daemon died after listening.
redis_crashed() {
    local f pid
    for f in "$REDIS_DIR/pid" "$REDIS_DIR/sentinel/pid"; do
        pid=$(cat "$f" 2>/dev/null) || continue
        [ -z "$pid" ] || alive "$pid" || return 0
    done
    return 1
}

start_redis() {
    local pid spid i d=$REDIS_DIR tls=() ports
    if pid=$(running_pid redis redis-server) && spid=$(running_pid redis/sentinel sentinel); then
        if redis_ready; then
            say "redis already running (pid $pid, sentinel pid $spid)"
            return
        fi
        say "redis (pid $pid, sentinel pid $spid) is running but not answering yet"
    else
        if running_pid redis redis-server >/dev/null || running_pid redis/sentinel sentinel >/dev/null; then
            say "redis is only partly running: stopping what is left first"
            stop_redis
        fi
        if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
            apt_install redis-server redis-tools
        fi
        if redis_tls; then
            ensure_tls_cert
            tls=(--tls-port 6380 --tls-cert-file "$TLS_DIR/cert.pem"
                --tls-key-file "$TLS_DIR/key.pem" --tls-ca-cert-file "$TLS_DIR/cert.pem"
                --tls-auth-clients no)
        else
            say "redis-server is built without TLS: no rediss port"
        fi
        # shellcheck disable=SC2207  # the port numbers are plain words
        ports=($(redis_ports))
        refuse_busy_ports "${ports[@]}"

        if [ "$KEEP_STATE" = 1 ]; then
            rm -f "$d/pid" "$d/sentinel/pid"   # dump.rdb, saved by restart, is loaded
        else
            rm -rf "$d"   # every start begins from an empty broker
        fi
        mkdir -p "$d/sentinel"
        say "starting redis"
        # What goes wrong before a daemon detaches (a bad option) is printed
        # on its standard output, hence the start.log files.
        redis-server --bind 127.0.0.1 --port 6379 "${tls[@]}" \
            --save '' --appendonly no --daemonize yes \
            --dir "$d" --pidfile "$d/pid" --logfile "$d/server.log" \
            </dev/null >"$d/start.log" 2>&1 ||
            { show_logs "$d/start.log"; die "redis-server failed to start"; }
        # Sentinel rewrites its configuration file, so it lives with the state.
        cat >"$d/sentinel/sentinel.conf" <<EOF
bind 127.0.0.1
port 26379
daemonize yes
dir "$d/sentinel"
pidfile "$d/sentinel/pid"
logfile "$d/sentinel/sentinel.log"
sentinel monitor $REDIS_MASTER 127.0.0.1 6379 1
sentinel down-after-milliseconds $REDIS_MASTER 2000
sentinel failover-timeout $REDIS_MASTER 10000
EOF
        redis-server "$d/sentinel/sentinel.conf" --sentinel \
            </dev/null >"$d/sentinel/start.log" 2>&1 ||
            { show_logs "$d/sentinel/start.log"; die "redis sentinel failed to start"; }
    fi

    # A daemon that dies before writing its pid file is only noticed here
    # by the timeout; its log then tells why.
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        if redis_crashed; then
            show_logs "$d/start.log" "$d/server.log" "$d/sentinel/start.log" "$d/sentinel/sentinel.log"
            die "redis exited during startup"
        fi
        if pid=$(running_pid redis redis-server) &&
            spid=$(running_pid redis/sentinel sentinel) && redis_ready; then
            if redis_tls; then
                say "redis ready (pid $pid) on 127.0.0.1:6379 (redis), :6380 (rediss); sentinel (pid $spid) on :26379"
            else
                say "redis ready (pid $pid) on 127.0.0.1:6379 (redis); sentinel (pid $spid) on :26379"
            fi
            return
        fi
        sleep 0.2
    done
    show_logs "$d/start.log" "$d/server.log" "$d/sentinel/start.log" "$d/sentinel/sentinel.log"
    die "redis not ready after ${READY_TIMEOUT}s (see $d)"
}

stop_redis() {
    stop_daemon redis/sentinel sentinel "redis sentinel"
    stop_daemon redis redis-server redis
}

status_redis() {
    local pid spid
    if ! pid=$(running_pid redis redis-server); then
        if spid=$(running_pid redis/sentinel sentinel); then
            echo "redis: server stopped, sentinel still running (pid $spid)"
        else
            echo "redis: stopped"
        fi
        return 1
    fi
    if ! spid=$(running_pid redis/sentinel sentinel); then
        echo "redis: sentinel stopped, server still running (pid $pid)"
        return 1
    fi
    if redis_ready; then
        echo "redis: running (pid $pid, sentinel pid $spid, ports $(redis_ports))"
    else
        echo "redis: not answering (pid $pid, sentinel pid $spid)"
        return 1
    fi
}

env_redis() {
    echo "export KOMBU_GREEN_REDIS_URL=redis://127.0.0.1:6379/0"
    if redis_tls; then
        echo "export KOMBU_GREEN_REDISS_URL=rediss://127.0.0.1:6380/0"
        env_tls_ca
    fi
    echo "export KOMBU_GREEN_SENTINEL_URL=sentinel://127.0.0.1:26379/0"
    echo "export KOMBU_GREEN_SENTINEL_MASTER=$REDIS_MASTER"
}

# --- beanstalkd -----------------------------------------------------------

# In memory only (no binlog): every start begins from an empty broker.
BEANSTALK_DIR=$STATE/beanstalkd
BEANSTALK_PORT=11300

# True if beanstalkd answers the stats command with "OK <bytes>". The
# statistics that follow are read too: closing with unread data resets the
# connection, which beanstalkd would log.
beanstalkd_ready() {
    tcp_open "$BEANSTALK_PORT" || return 1
    (
        exec 3<>"/dev/tcp/127.0.0.1/$BEANSTALK_PORT"
        printf 'stats\r\n' >&3
        IFS= read -r -t 2 line <&3
        line=${line%$'\r'}
        [[ $line =~ ^OK\ ([0-9]+)$ ]] || exit 1
        read -r -t 2 -N "$((BASH_REMATCH[1] + 2))" _ <&3 || true
    ) 2>/dev/null
}

start_beanstalkd() {
    local pid i d=$BEANSTALK_DIR
    if pid=$(running_pid beanstalkd); then
        if beanstalkd_ready; then
            say "beanstalkd already running (pid $pid)"
            return
        fi
        say "beanstalkd (pid $pid) is running but not answering yet"
    else
        command -v beanstalkd >/dev/null || apt_install beanstalkd
        refuse_busy_ports "$BEANSTALK_PORT"

        if [ "$KEEP_STATE" != 1 ]; then rm -rf "$d"; fi
        mkdir -p "$d/binlog"
        say "starting beanstalkd"
        (
            cd "$d"
            exec setsid beanstalkd -l 127.0.0.1 -p "$BEANSTALK_PORT" -b "$d/binlog" \
                </dev/null >>"$d/server.log" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$d/pid"
    fi

    await_ready beanstalkd "$pid" 0.05 beanstalkd_ready "127.0.0.1:$BEANSTALK_PORT" "$d/server.log"
}

stop_beanstalkd() {
    stop_daemon beanstalkd beanstalkd beanstalkd
}

status_beanstalkd() {
    local pid
    if ! pid=$(running_pid beanstalkd); then
        echo "beanstalkd: stopped"
        return 1
    fi
    if beanstalkd_ready; then
        echo "beanstalkd: running (pid $pid, port $BEANSTALK_PORT)"
    else
        echo "beanstalkd: not answering (pid $pid)"
        return 1
    fi
}

env_beanstalkd() {
    echo "export KOMBU_GREEN_BEANSTALK_URL=beanstalk://127.0.0.1:$BEANSTALK_PORT"
}

# --- MongoDB (SecantusDB) -------------------------------------------------

# No mongod here: SecantusDB, a MongoDB wire-protocol server written in
# Python, stands in for it. It is installed with pip into a virtual
# environment of its own under .brokers/ (kept between runs, so its
# dependencies never mix with the ones under test), and keeps its data in a
# temporary directory (":memory:") that it removes on shutdown.
# --standalone: by default it poses as a one-node replica set and keeps an
# oplog, and every write then gets slower as the oplog grows (1 ms per
# insert at first, 20 ms after ~10,000 writes, measured); the transport
# needs neither change streams nor transactions.
MONGO_DIR=$STATE/mongodb
MONGO_VENV=$STATE/venvs/secantusdb
MONGO_PORT=27017
MONGO_SERVER=secantusd-py
MONGO_PACKAGES=('secantusdb==0.7.0b3' 'pymongo')   # pymongo: for the readiness ping

mongodb_ready() {
    tcp_open "$MONGO_PORT" || return 1
    timeout 10 "$MONGO_VENV/bin/python" -c "
from pymongo import MongoClient
MongoClient('mongodb://127.0.0.1:$MONGO_PORT/', serverSelectionTimeoutMS=1000).admin.command('ping')
" >/dev/null 2>&1
}

install_mongodb() {
    [ -x "$MONGO_VENV/bin/$MONGO_SERVER" ] && return
    say "installing ${MONGO_PACKAGES[*]} into $MONGO_VENV"
    rm -rf "$MONGO_VENV"
    python3 -m venv "$MONGO_VENV" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$MONGO_VENV/bin/python" -m pip install -q "${MONGO_PACKAGES[@]}" >&2
}

start_mongodb() {
    local pid i d=$MONGO_DIR
    if pid=$(running_pid mongodb "$MONGO_SERVER"); then
        if mongodb_ready; then
            say "mongodb already running (pid $pid)"
            return
        fi
        say "mongodb (pid $pid) is running but not answering yet"
    else
        install_mongodb
        refuse_busy_ports "$MONGO_PORT"

        rm -rf "$d"   # also what a killed server left in tmp/
        mkdir -p "$d/tmp"
        : >"$d/secantusd.toml"   # keeps any other secantusd.toml out
        say "starting mongodb ($MONGO_SERVER)"
        (
            export TMPDIR=$d/tmp   # where ":memory:" puts its data
            cd "$d"
            exec setsid "$MONGO_VENV/bin/$MONGO_SERVER" --config "$d/secantusd.toml" \
                --host 127.0.0.1 --port "$MONGO_PORT" \
                --storage-path :memory: --log-level WARNING --standalone \
                </dev/null >"$d/server.log" 2>&1
        ) &
        pid=$!
        echo "$pid" >"$d/pid"
    fi

    # The ping runs a Python process: only try it once the port is open.
    await_ready mongodb "$pid" 0.1 mongodb_ready "127.0.0.1:$MONGO_PORT" "$d/server.log"
}

stop_mongodb() {
    stop_daemon mongodb "$MONGO_SERVER" mongodb
}

status_mongodb() {
    local pid
    if ! pid=$(running_pid mongodb "$MONGO_SERVER"); then
        echo "mongodb: stopped"
        return 1
    fi
    if mongodb_ready; then
        echo "mongodb: running (pid $pid, port $MONGO_PORT)"
    else
        echo "mongodb: not answering (pid $pid)"
        return 1
    fi
}

env_mongodb() {
    echo "export KOMBU_GREEN_MONGODB_URL=mongodb://127.0.0.1:$MONGO_PORT/kombu_green"
}

# --- restart ----------------------------------------------------------------

# Stop a broker, leave it down for a while, start it again with its data:
# what the resilience tests put clients through. RabbitMQ keeps its mnesia
# directory (durable queues, persistent messages); Redis saves a snapshot
# first and loads it again; beanstalkd replays its binlog (jobs reserved
# when it stopped come back ready). SecantusDB keeps its data in memory, so
# a restart would empty it: the MongoDB outage tests cut its connections
# through a proxy instead.
restart_one() {   # NAME DOWN_SECONDS KILL(0|1)
    local pid
    KEEP_STATE=1
    if [ "$1" = redis ] && pid=$(running_pid redis redis-server); then
        # SHUTDOWN SAVE writes the snapshot and exits in one step: nothing
        # acknowledged between a SAVE and a SIGTERM can be lost.
        redis_cli -p 6379 shutdown save >/dev/null 2>&1 || true
        wait_gone "$pid" "$STOP_TIMEOUT" || say "redis: SHUTDOWN SAVE did not stop it; stopping it plainly"
    fi
    if [ "$3" = 1 ] && pid=$(running_pid rabbitmq); then
        # A crash: no clean shutdown. Only RabbitMQ is offered this, as only
        # its data (fsynced before each publisher confirm) survives it.
        say "killing rabbitmq (pid $pid and its process group)"
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "could not kill rabbitmq (pid $pid)"
    fi
    "stop_$1"
    sleep "$2"
    "start_$1"
    KEEP_STATE=0
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
        [ "$kill" = 0 ] || [ "$*" = rabbitmq ] || die "--kill is only for rabbitmq"
        ;;
    -h | --help | help) usage ;;
    *) say "unknown command: $cmd"; usage ;;
esac
[ $# -ge 1 ] || set -- "${BROKERS[@]}"
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
