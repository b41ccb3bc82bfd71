#!/usr/bin/env bash
# Type-check the modules pyproject.toml's [tool.mypy] names (the reference, the adapter protocol and its
# plan, the vocabulary's models and tolerances, the checks) with the lock's mypy, as CI does.
# The `normconf` namespace maps top-level folders onto subpackages (pyproject's package-dir), which a
# static checker cannot follow through the editable install: a tree of links under build/ spells it out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/normconf"
for f in normconf/*.py; do ln -s "$root/$f" "$tree/normconf/"; done
for d in spec reference vocabulary adapters conformance reports; do ln -s "$root/$d" "$tree/normconf/$d"; done
cd "$tree" && exec "$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" --python-executable "$root/.venv/bin/python" "$@"
