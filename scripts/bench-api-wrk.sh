#!/usr/bin/env bash
# `facepay-bench api` with wrk (Debian's package: apt-get install wrk) as the load generator,
# in a process of its own: facepay seeds a fresh PostgreSQL database with 1 000 000 orders,
# serves the API with authentication on, and wrk sends order lookups, then history pages,
# each request with a random client's merchant key. Prints one JSON object.
#
#   scripts/bench-api-wrk.sh [facepay-bench api options, e.g. --orders 1000000]
#   env: PHASE_SECONDS (10), CONNECTIONS (32), THREADS (1: wrk's own threads)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-api-wrk.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
PHASE_SECONDS="${PHASE_SECONDS:-10}"; CONNECTIONS="${CONNECTIONS:-32}"; THREADS="${THREADS:-1}"
dir="$(mktemp -d)"
bench="${FACEPAY_BENCH_BIN:-target/release/facepay-bench}"
"$bench" api --json --connections "$CONNECTIONS" --external "$dir" "$@" >"$dir/server.json" 2>"$dir/server.log" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' EXIT
until [ -f "$dir/base" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "bench-api-wrk.sh: facepay-bench exited; its log:" >&2; tail "$dir/server.log" >&2; exit 1; }
    sleep 1
done
base="$(cat "$dir/base")"
run() {
    FACEPAY_WRK_CLIENTS="$dir/clients.lua" FACEPAY_WRK_ROUTE="$1" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${PHASE_SECONDS}s" -s scripts/wrk/orders.lua "$base" | tail -n 1
}
orders="$(run orders)"
history="$(run history)"
kill -INT "$pid"
wait "$pid"
trap - EXIT
python3 - "$dir/server.json" "$orders" "$history" "$THREADS" <<'PY'
import json, sys
server = json.load(open(sys.argv[1]))
server["order_lookup"] = json.loads(sys.argv[2])
server["history_page"] = json.loads(sys.argv[3])
server["load_generator"] = f"wrk, a separate process, {sys.argv[4]} thread(s)"
print(json.dumps(server))
PY
