#!/usr/bin/env bash
# Test-only dependencies that pip's `.[dev]` cannot provide, installed only when missing:
#   * a headless Chromium (Debian package chromium-headless-shell), for the report page test.
# (Ray, for the Ray executor test, comes pinned with the dev extra: flwr[simulation] requires it.)
# Quiet and idempotent; never fails the build: a test whose dependency could not be installed is
# skipped with the reason. Usage: tools/install_test_deps.sh [PYTHON]
set -u
python="${1:-python3}"

have_browser() {
    for name in chromium-headless-shell chromium chromium-browser google-chrome; do
        command -v "$name" >/dev/null 2>&1 && return 0
    done
    [ -x /usr/lib/chromium/chrome-headless-shell ] || [ -x /usr/lib/chromium/chromium ]
}

if ! have_browser; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
        echo "install_test_deps: installing chromium-headless-shell (apt)" >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium-headless-shell >/dev/null 2>&1 \
            || echo "install_test_deps: could not install chromium; the browser test will be skipped" >&2
    else
        echo "install_test_deps: no apt-get; the browser test will be skipped unless Chromium is installed" >&2
    fi
fi

exit 0
