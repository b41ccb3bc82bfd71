#!/usr/bin/env bash
# Create .venv and install normconf with every framework family and the test tools, pinned by the lock.
# Idempotent and quiet: a checkout already set up from the same lock and pyproject.toml (a stamp in .venv
# records their hash) only checks that normconf imports - seconds, no output.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/lock-linux-cpu-py311.txt
PYTHON=${PYTHON:-python3}
STAMP=.venv/.normconf-setup
want=$(cat "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
  && .venv/bin/python -c 'import normconf.cli' 2>/dev/null; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log=$(mktemp)
# pip's and setuptools' own chatter goes to a log that is shown only when the install fails
if ! { .venv/bin/python -m pip install --quiet --upgrade pip \
  && .venv/bin/python -m pip install --quiet -c "$LOCK" -e '.[all,test,examples]'; } >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
# The report's browser test drives headless Chromium: install it where apt-get can (root or passwordless sudo).
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium + chromium-driver; the report's browser test will skip" >&2
fi
echo "$want" > "$STAMP"
