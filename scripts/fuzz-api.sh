#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI description (api/openapi.json) with schemathesis
# (PyPI), as a finance key (reads everything) and as an admin key, with every check
# (`--checks all`: no 5xx, every status, body, header and content type as documented,
# schema-invalid input refused, schema-valid input accepted but for the rules listed in
# scripts/schemathesis.toml, authentication never ignored); fails on any finding.
#
#   scripts/fuzz-api.sh            builds facepay, runs a small demo with the API up, fuzzes it
#
# Needs python3 (schemathesis is installed into a virtualenv under $RUN_DIR the first time).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN_DIR="${FACEPAY_FUZZ_DIR:-${TMPDIR:-/tmp}/facepay-fuzz}"
ADDR="${FACEPAY_FUZZ_ADDR:-127.0.0.1:18080}"
mkdir -p "$RUN_DIR"
if [ ! -x "$RUN_DIR/venv/bin/schemathesis" ]; then
    python3 -m venv "$RUN_DIR/venv"
    "$RUN_DIR/venv/bin/pip" install --quiet schemathesis
fi
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p facepay
FACEPAY="$ROOT/target/release/facepay"
export FACEPAY_DATA_DIR="$RUN_DIR/data" FACEPAY_HTTP_ADDR="$ADDR"
rm -rf "$FACEPAY_DATA_DIR"
# The demo's database is the data directory's (facepay.db): the keys are made in it too.
unset FACEPAY_DATABASE_URL
"$FACEPAY" demo --payments 500 --payers 100 --serve > "$RUN_DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    grep -q "listening" "$RUN_DIR/serve.log" && break
    sleep 0.5
done
token() { "$FACEPAY" keys create --role "$1" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
for role in finance admin; do
    TOKEN="$(token "$role")"
    "$RUN_DIR/venv/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "$ROOT/api/openapi.json" \
        --url "http://$ADDR" \
        --header "Authorization: Bearer $TOKEN" \
        --checks all \
        --max-examples "${FACEPAY_FUZZ_EXAMPLES:-50}"
done
