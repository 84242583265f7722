# shellcheck shell=bash disable=SC2164  # cd: brokers.sh runs this under set -e
# A MongoDB wire-protocol server on 127.0.0.1:27017. No mongod here:
# SecantusDB, a MongoDB wire-protocol server written in Python, stands in
# for it. It is installed with pip into a virtual environment of its own
# under .brokers/ (kept between runs, so its dependencies never mix with
# the ones under test), and keeps its data in a temporary directory
# (":memory:") that it removes on shutdown. Every start, `restart`
# included, therefore begins from an empty server: the MongoDB outage
# tests cut its connections through a proxy instead of restarting it.
# --standalone: by default it poses as a one-node replica set and keeps an
# oplog, and every write then gets slower as the oplog grows (1 ms per
# insert at first, 20 ms after ~10,000 writes, measured); the transport
# needs neither change streams nor transactions.

register_broker mongodb 40 default

MONGO_DIR=$STATE/mongodb
MONGO_VENV=$STATE/venvs/secantusdb
MONGO_PORT=27017
MONGO_SERVER=secantusd-py
MONGO_PACKAGES=('secantusdb==0.7.0b3' 'pymongo')   # pymongo: for the readiness ping

install_mongodb() {
    [ -x "$MONGO_VENV/bin/$MONGO_SERVER" ] && return
    say "installing ${MONGO_PACKAGES[*]} into $MONGO_VENV"
    rm -rf "$MONGO_VENV"
    python3 -m venv "$MONGO_VENV" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$MONGO_VENV/bin/python" -m pip install -q "${MONGO_PACKAGES[@]}" >&2
}

# The ping runs a Python process: only try it once the port is open.
ready_mongodb() {
    tcp_open "$MONGO_PORT" || return 1
    timeout 10 "$MONGO_VENV/bin/python" -c "
from pymongo import MongoClient
MongoClient('mongodb://127.0.0.1:$MONGO_PORT/', serverSelectionTimeoutMS=1000).admin.command('ping')
" >/dev/null 2>&1
}

start_mongodb() {
    local pid d=$MONGO_DIR
    if pid=$(running_pid mongodb "$MONGO_SERVER"); then
        if ready_mongodb; then
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

    await_ready mongodb "$pid" 0.1 ready_mongodb "127.0.0.1:$MONGO_PORT" "$d/server.log"
}

stop_mongodb() {
    stop_daemon mongodb "$MONGO_SERVER" mongodb
}

status_mongodb() {
    status_daemon mongodb "$MONGO_SERVER" "port $MONGO_PORT"
}

env_mongodb() {
    echo "export KOMBU_GREEN_MONGODB_URL=mongodb://127.0.0.1:$MONGO_PORT/kombu_green"
}
