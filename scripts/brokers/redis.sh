# shellcheck shell=bash disable=SC2164  # cd: brokers.sh runs this under set -e
# Redis and Redis Sentinel (Debian's redis-server). One redis-server serves
# plain TCP on 127.0.0.1:6379 and, when built with TLS, TLS on :6380 (the
# certificate in .brokers/tls, clients not verified); a Sentinel on :26379
# monitors it as master "kombu_green". Both daemonize themselves and write
# their pid files once they listen. State in .brokers/redis/ (the
# Sentinel's in redis/sentinel/). No snapshots while running: `start`
# begins from an empty broker; `restart` saves a snapshot first (see
# before_restart_redis) and loads it again.

register_broker redis 20 default

REDIS_DIR=$STATE/redis
REDIS_MASTER=kombu_green

install_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server redis-tools
    fi
}

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

ready_redis() {
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
        if ready_redis; then
            say "redis already running (pid $pid, sentinel pid $spid)"
            return
        fi
        say "redis (pid $pid, sentinel pid $spid) is running but not answering yet"
    else
        if running_pid redis redis-server >/dev/null || running_pid redis/sentinel sentinel >/dev/null; then
            say "redis is only partly running: stopping what is left first"
            stop_redis
        fi
        install_redis
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
            spid=$(running_pid redis/sentinel sentinel) && ready_redis; then
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

# restart, before stop_redis: SHUTDOWN SAVE writes the snapshot and exits in
# one step: nothing acknowledged between a SAVE and a SIGTERM can be lost.
before_restart_redis() {
    local pid
    if pid=$(running_pid redis redis-server); then
        redis_cli -p 6379 shutdown save >/dev/null 2>&1 || true
        wait_gone "$pid" "$STOP_TIMEOUT" || say "redis: SHUTDOWN SAVE did not stop it; stopping it plainly"
    fi
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
    if ready_redis; then
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
