#!/usr/bin/env bash
# Create .venv and install normconf with every framework family and the test tools, pinned by the lock.
# Idempotent: a second run only checks that the pins are satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/lock-linux-cpu-py311.txt
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extra=()
[ -d /opt/wheels ] && extra+=(--find-links /opt/wheels)   # where this machine keeps the CPU torch wheel
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${extra[@]}" -c "$LOCK" -e '.[all,test,examples]'
# The report's browser test drives headless Chromium: install it where apt-get can (root or passwordless sudo).
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium + chromium-driver; the report's browser test will skip" >&2
fi
