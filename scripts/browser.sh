#!/usr/bin/env bash
# The console's browser tests: Playwright (playwright-core, from npm) driving Debian's
# Chromium, axe-core for accessibility. `install` puts them on the machine (Chromium from
# Debian's packages, the npm packages into console-tests/node_modules from its lock file);
# `status` says whether they are there; `test` runs console-tests/console.test.mjs against a
# `facepay demo --serve` of its own on port 0 (FACEPAY_BIN: the binary, default the debug build's);
# screenshots go to CONSOLE_SCREENSHOTS (default target/console-screenshots).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_bin() { command -v chromium || command -v chromium-browser || true; }

case "${1:-status}" in
install)
    if [ -z "$(chromium_bin)" ] || ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then
        echo "browser.sh: installing Debian's chromium and a Chinese font (the screenshots)"
        export DEBIAN_FRONTEND=noninteractive
        sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq || true
        $sudo_cmd apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
    fi
    (cd console-tests && npm ci --no-audit --no-fund --silent)
    "$0" status
    ;;
status)
    c="$(chromium_bin)"
    if [ -n "$c" ] && [ -d console-tests/node_modules/playwright-core ] && [ -d console-tests/node_modules/axe-core ]; then
        echo "browser.sh: ready ($("$c" --version 2>/dev/null | head -n 1), playwright-core and axe-core installed)"
    else
        echo "browser.sh: not installed (chromium: ${c:-missing}); run scripts/browser.sh install"
        exit 1
    fi
    ;;
test)
    export CHROMIUM_BIN="$(chromium_bin)"
    export FACEPAY_BIN="${FACEPAY_BIN:-${CARGO_TARGET_DIR:-target}/debug/facepay}"
    export CONSOLE_SCREENSHOTS="${CONSOLE_SCREENSHOTS:-${CARGO_TARGET_DIR:-target}/console-screenshots}"
    [ -x "$FACEPAY_BIN" ] || cargo build --locked --bin facepay
    timeout "${BROWSER_TEST_TIMEOUT_S:-600}" node --test --test-concurrency=1 console-tests/console.test.mjs
    ;;
*)
    echo "usage: scripts/browser.sh install|status|test" >&2
    exit 2
    ;;
esac
