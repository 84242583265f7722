# shellcheck shell=bash disable=SC2164  # cd: brokers.sh runs this under set -e
# beanstalkd (Debian's package) on 127.0.0.1:11300, writing every job to a
# binlog in .brokers/beanstalkd/binlog/. `start` removes the directory and
# so begins from an empty broker; `restart` keeps it and beanstalkd
# replays it (jobs reserved when it stopped come back ready).

register_broker beanstalkd 30 default

BEANSTALK_DIR=$STATE/beanstalkd
BEANSTALK_PORT=11300

install_beanstalkd() {
    command -v beanstalkd >/dev/null || apt_install beanstalkd
}

# True if beanstalkd answers the stats command with "OK <bytes>". The
# statistics that follow are read too: closing with unread data resets the
# connection, which beanstalkd would log.
ready_beanstalkd() {
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
    local pid d=$BEANSTALK_DIR
    if pid=$(running_pid beanstalkd); then
        if ready_beanstalkd; then
            say "beanstalkd already running (pid $pid)"
            return
        fi
        say "beanstalkd (pid $pid) is running but not answering yet"
    else
        install_beanstalkd
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

    await_ready beanstalkd "$pid" 0.05 ready_beanstalkd "127.0.0.1:$BEANSTALK_PORT" "$d/server.log"
}

stop_beanstalkd() {
    stop_daemon beanstalkd beanstalkd beanstalkd
}

status_beanstalkd() {
    status_daemon beanstalkd beanstalkd "port $BEANSTALK_PORT"
}

env_beanstalkd() {
    echo "export KOMBU_GREEN_BEANSTALK_URL=beanstalk://127.0.0.1:$BEANSTALK_PORT"
}
