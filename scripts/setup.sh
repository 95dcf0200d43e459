#!/usr/bin/env bash
# Prepares a fresh machine for `make demo` / `make test`: system packages (as root on Debian),
# the .venv with the package and its dev tools, and npm packages for the browser tests.
# Under CI=true a dependency that cannot be installed is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
SYSTEM_PACKAGES=(${SYSTEM_PACKAGES:-redis-server ffmpeg chromium})

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    case "$pkg" in
        redis-server) command -v redis-server >/dev/null || missing+=("$pkg") ;;
        ffmpeg) command -v ffprobe >/dev/null || missing+=("$pkg") ;;
        chromium) command -v chromium >/dev/null || missing+=("$pkg") ;;
        *) dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    elif [ "${CI:-}" = "true" ]; then
        echo "setup: missing system packages and cannot install them: ${missing[*]}" >&2
        exit 1
    else
        echo "setup: warning: missing system packages: ${missing[*]} (tests needing them will fail)" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    command -v "$PYTHON" >/dev/null || PYTHON=python3
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[dev]'

# hls.js for the watch page, from npm, served locally by the gateway (never from a CDN)
if command -v npm >/dev/null; then
    (cd web && npm install --no-audit --no-fund --silent >/dev/null)
    cp web/node_modules/hls.js/dist/hls.min.js src/dapsdk/gateway/static/hls.min.js
elif [ "${CI:-}" = "true" ]; then
    echo "setup: npm is missing (needed for hls.js)" >&2
    exit 1
else
    echo "setup: warning: npm missing; the watch page will use native HLS or the low-latency mode" >&2
fi
