#!/usr/bin/env bash
# The main job: set up, then run the conformance suite over every installed framework (quick profile:
# about 10 minutes on 2 cores; --profile default draws 5x the examples and takes about 100 minutes)
# and print the adapter x norm verdict matrix. Results: reports/out/results/ (one file per worker); the HTML report:
# reports/out/index.html. Extra arguments go to `normconf run` (e.g. --adapters torch.nn,flax.linen
# --profile thorough --seed 1 --no-hazards).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/normconf run --profile quick "$@"
