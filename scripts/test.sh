#!/usr/bin/env bash
# facepay's test command (README, .ci/run). Runs every embedded test, and says plainly which
# suites that need outside services it ran or skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL: the store suite (ledger/tests/ledger/store.rs) runs every test against SQLite and
# against PostgreSQL, each PostgreSQL test on a database of its own, created on the server
# of FACEPAY_TEST_DATABASE_URL and dropped afterwards. CI requires it.
pg_url="${FACEPAY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_hostport="${pg_url#*://}"; pg_hostport="${pg_hostport#*@}"; pg_hostport="${pg_hostport%%/*}"; pg_hostport="${pg_hostport%%\?*}"
pg_host="${pg_hostport%:*}"; pg_port="${pg_hostport##*:}"
[ "$pg_port" = "$pg_hostport" ] && pg_port=5432
if [ "${CI:-}" = "true" ]; then
    export FACEPAY_REQUIRE_POSTGRES=1 FACEPAY_REQUIRE_KAFKA=1 FACEPAY_REQUIRE_BROWSER=1
fi

echo "test.sh: embedded suites: all (SQLite, in-process pipeline, HTTP on port 0)"
if timeout 3 bash -c "</dev/tcp/$pg_host/$pg_port" 2>/dev/null; then
    echo "test.sh: PostgreSQL suite: runs (store tests against PostgreSQL at $pg_host:$pg_port, a fresh database per test)"
elif [ "${FACEPAY_REQUIRE_POSTGRES:-}" = "1" ]; then
    echo "test.sh: PostgreSQL suite: REQUIRED (FACEPAY_REQUIRE_POSTGRES=1) but nothing answers at $pg_host:$pg_port; its tests will fail"
else
    echo "test.sh: PostgreSQL suite: SKIPPED (nothing answers at $pg_host:$pg_port)."
    echo "test.sh:   to run it: start PostgreSQL, or set FACEPAY_TEST_DATABASE_URL=postgres://user@host:port/db (a role that may CREATE DATABASE)"
fi
# Kafka: the transport suites need a Kafka-API broker at FACEPAY_TEST_KAFKA_BROKERS (default
# 127.0.0.1:9092); scripts/kafka.sh installs and starts tansu there. Each test run uses
# topics and groups of its own. facepay/tests/facepay/e2e/: kafka_pipeline.rs (transport, poison
# messages); with PostgreSQL too, one at a time: end_to_end.rs (Kafka equals embedded), scale_out.rs (two
# processes), crash.rs (kill -9 six times under load), restarts.rs (PostgreSQL restarted
# mid-run; needs pg_ctlcluster), broker_restart.rs (a tansu of its own on port 19092 with
# sqlite storage, restarted mid-run; needs tansu installed), gather_failover.rs (a sharded
# gather's process killed), chaos.rs (three processes killed in turn, then its own tansu on
# port 19093 restarted).
kafka="${FACEPAY_TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
kafka_first="${kafka%%,*}"
if timeout 3 bash -c "</dev/tcp/${kafka_first%:*}/${kafka_first##*:}" 2>/dev/null; then
    echo "test.sh: Kafka suite: runs (broker at $kafka): transport, poison, end-to-end, scale-out, crash (kill -9), gather failover, chaos, PostgreSQL and broker restarts"
elif [ "${FACEPAY_REQUIRE_KAFKA:-}" = "1" ]; then
    echo "test.sh: Kafka suite: REQUIRED (FACEPAY_REQUIRE_KAFKA=1) but no broker answers at $kafka; its tests will fail"
else
    echo "test.sh: Kafka suite: SKIPPED (no broker answers at $kafka)."
    echo "test.sh:   to run it: scripts/kafka.sh start   (installs tansu from crates.io the first time, ~15 min)"
fi

# The console in a real browser (console-tests/): Chromium from Debian's packages and
# Playwright from npm, installed by scripts/browser.sh install. CI requires them.
browser_ready=0
if scripts/browser.sh status >/dev/null 2>&1; then
    browser_ready=1
    echo "test.sh: browser suite: runs (Chromium + Playwright against facepay demo --serve: sign-in, pages, axe-core)"
elif [ "${FACEPAY_REQUIRE_BROWSER:-}" = "1" ]; then
    echo "test.sh: browser suite: REQUIRED (FACEPAY_REQUIRE_BROWSER=1) but Chromium or Playwright is missing; it will fail"
else
    echo "test.sh: browser suite: SKIPPED (Chromium or Playwright not installed)."
    echo "test.sh:   to run it: scripts/browser.sh install   (Debian's chromium, npm packages from console-tests/package-lock.json)"
fi

cargo test --workspace --all-targets --locked
if [ "$browser_ready" = 1 ] || [ "${FACEPAY_REQUIRE_BROWSER:-}" = "1" ]; then
    scripts/browser.sh test
fi
