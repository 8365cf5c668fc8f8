#!/usr/bin/env bash
# Fresh-machine set-up + the whole test suite (README's test command; .ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/browser drive Debian's headless Chromium through its chromedriver: install them when missing
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev]"
export CI="${CI:-1}"  # the browser test fails (instead of skipping) when Chromium is missing
.venv/bin/python -m pytest "$@"
