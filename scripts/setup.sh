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
.venv/bin/python -m pip install --quiet "${extra[@]}" -c "$LOCK" -e '.[all,test]'
