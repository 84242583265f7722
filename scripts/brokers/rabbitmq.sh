# shellcheck shell=bash disable=SC2164  # cd: brokers.sh runs this under set -e
# RabbitMQ (Debian's rabbitmq-server), one node rabbit@localhost without
# plugins: AMQP 0-9-1 on 127.0.0.1:5672, AMQPS on :5671 (the certificate in
# .brokers/tls, clients not verified), Erlang distribution on :25672.
# State in .brokers/rabbitmq/. `start` begins from an empty broker;
# `restart` keeps the mnesia directory (durable queues, persistent
# messages) and takes 6 to 8 s here with --down 1; `restart --kill`
# crashes the node instead of stopping it cleanly (see kill_rabbitmq).

register_broker rabbitmq 10 default

RABBIT_DIR=$STATE/rabbitmq
# The /usr/sbin wrappers switch to the rabbitmq user and its cookie; run
# the real script so the node uses our HOME (and cookie) instead.
RABBIT_BIN=/usr/lib/rabbitmq/bin/rabbitmq-server
RABBIT_PORTS=(5672 5671 25672)   # AMQP, AMQPS, Erlang distribution

install_rabbitmq() {
    [ -x "$RABBIT_BIN" ] || apt_install rabbitmq-server
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

ready_rabbitmq() {
    tcp_open 5672 && tcp_open 5671 &&
        amqp_answers 5672 && amqp_answers 5671 "$TLS_DIR/cert.pem"
}

start_rabbitmq() {
    local pid d=$RABBIT_DIR
    if pid=$(running_pid rabbitmq); then
        if ready_rabbitmq; then
            say "rabbitmq already running (pid $pid)"
            return
        fi
        say "rabbitmq (pid $pid) is running but not answering yet"
    else
        install_rabbitmq
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
    await_ready rabbitmq "$pid" 0.2 ready_rabbitmq "127.0.0.1:5672 (amqp), :5671 (amqps)" \
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

# restart --kill, before stop_rabbitmq: a crash, no clean shutdown. Only
# RabbitMQ is offered this, as only its data (fsynced before each
# publisher confirm) survives it.
kill_rabbitmq() {
    local pid
    if pid=$(running_pid rabbitmq); then
        say "killing rabbitmq (pid $pid and its process group)"
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "could not kill rabbitmq (pid $pid)"
    fi
}

status_rabbitmq() {
    status_daemon rabbitmq rabbitmq "ports ${RABBIT_PORTS[*]}"
}

env_rabbitmq() {
    echo "export KOMBU_GREEN_AMQP_URL=amqp://guest:guest@127.0.0.1:5672//"
    echo "export KOMBU_GREEN_AMQPS_URL=amqps://guest:guest@127.0.0.1:5671//"
    env_tls_ca
}
