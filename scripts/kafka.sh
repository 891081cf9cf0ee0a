#!/usr/bin/env bash
# A Kafka-API broker for development and tests: tansu (crates.io), on 127.0.0.1:9092.
#
#   scripts/kafka.sh install          install tansu if missing (~15 min on 2 cores, once;
#                                     then cached in ~/.cargo/bin)
#   scripts/kafka.sh start [STORAGE]  start it and wait until it answers; STORAGE defaults to
#                                     memory://tansu/ (fast tests); use sqlite://FILE when the
#                                     broker must keep its data across a restart (FILE is
#                                     relative to the run dir, FACEPAY_KAFKA_RUN_DIR)
#   scripts/kafka.sh stop             stop it
#   scripts/kafka.sh status           exit 0 when a broker answers on the port
#
# facepay itself speaks the Kafka protocol through rdkafka and works against any broker
# (Apache Kafka, Redpanda, tansu); nothing in facepay depends on tansu.
set -euo pipefail

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
HOST=127.0.0.1
PORT="${FACEPAY_KAFKA_PORT:-9092}"
RUN_DIR="${FACEPAY_KAFKA_RUN_DIR:-${TMPDIR:-/tmp}/facepay-kafka}"
PID_FILE="$RUN_DIR/tansu.pid"
LOG_FILE="$RUN_DIR/tansu.log"
TANSU="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"

answers() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

install() {
    if [ -x "$TANSU" ]; then return 0; fi
    echo "kafka.sh: installing tansu $TANSU_VERSION from crates.io (about 15 minutes the first time)" >&2
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
}

# tansu 0.6's sqlite storage creates its record-header table without an index and reads it
# once per record it serves: a fetch from the start of a log whose records carry headers
# (facepay's outcomes carry one) scans the whole table per record, outlasts the client's
# socket timeout and is asked again, so a fresh reader gets nothing (seen as "no record
# after a restart"). The index makes such a read take seconds; tansu creates the table at
# start-up, and the index stays in the file across restarts.
index_headers() {
    local file="$1"
    case "$file" in /*) ;; *) file="$RUN_DIR/$file" ;; esac
    python3 - "$file" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=60)
for _ in range(100):
    try:
        db.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
        db.commit()
        break
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        time.sleep(0.1)
else:
    sys.exit("kafka.sh: tansu never created its header table in " + sys.argv[1])
PY
}

start() {
    local storage="${1:-memory://tansu/}"
    if answers; then echo "kafka.sh: a broker already answers on $HOST:$PORT" >&2; return 0; fi
    install
    mkdir -p "$RUN_DIR"
    # tansu resolves sqlite://FILE against its working directory: the run dir.
    (cd "$RUN_DIR" && exec "$TANSU" broker \
        --listener-url "tcp://$HOST:$PORT" \
        --advertised-listener-url "tcp://$HOST:$PORT" \
        --storage-engine "$storage") >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 100); do
        if answers; then
            case "$storage" in sqlite://*) index_headers "${storage#sqlite://}" ;; esac
            echo "kafka.sh: tansu answers on $HOST:$PORT (storage $storage)" >&2
            return 0
        fi
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then break; fi
        sleep 0.2
    done
    echo "kafka.sh: tansu did not start; its log:" >&2
    tail -n 30 "$LOG_FILE" >&2 || true
    return 1
}

stop() {
    if [ -f "$PID_FILE" ]; then
        local pid
        pid="$(cat "$PID_FILE")"
        kill "$pid" 2>/dev/null || true
        # Wait until it is gone, so a start right after finds the port free.
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$PID_FILE"
    fi
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 install|start [STORAGE]|stop|status" >&2; exit 2 ;;
esac
