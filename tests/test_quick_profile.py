"""The product's own gate: the quick profile over every installed adapter runs clean - each cell
passes, is unsupported, or is an expected divergence with its clause. A new finding fails CI here,
with the finding's summary line; a framework upgrade that fixes a divergence fails the divergence
meta-test instead. It runs natively, and again for the float16/bfloat16 cells with the ISA capped to AVX2
(NUM.N10: XLA, oneDNN and ATen then play an older CPU, and low-precision results may change with it).
NORMCONF_SKIP_SUITE=1 skips it for a fast local loop."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from normconf.adapters import _cpu
from normconf.reports import results

# how each run differs from the plain quick profile (the first runs under whatever caps this process has)
RUNS = {"all-dtypes": [], "half-precision-avx2": ["--max-isa", "avx2", "--", "--dtypes", "float16,bfloat16"]}


@pytest.mark.clause("NUM.N7", "NUM.N10")
@pytest.mark.skipif(bool(os.environ.get("NORMCONF_SKIP_SUITE")), reason="NORMCONF_SKIP_SUITE is set")
@pytest.mark.parametrize("run", RUNS)
def test_quick_profile_over_every_installed_adapter_is_clean(run, tmp_path):
    if "avx2" in run and "avx2" not in _cpu.features():
        pytest.skip("this CPU has no AVX2 to cap at")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "normconf.cli",
            "run",
            "--profile",
            "quick",
            "--results",
            str(tmp_path),
            "--report",
            str(tmp_path / "index.html"),
            "--no-hazards",
            *RUNS[run],
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    runs = results.load(sorted(tmp_path.glob("worker-*.jsonl")))
    unsettled = [
        f"{r['adapter']} {r['norm']} {r['dtype']} {r['property']}: {r.get('clause')} {r.get('what', '')} "
        f"{r.get('message', '')[:300]}"
        for run in runs
        for r in run.results
        if r["verdict"] in results.PROBLEMS
    ]
    assert runs and all(run.complete for run in runs), "a worker did not finish its results file"
    assert not unsettled, "\n".join(unsettled)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (tmp_path / "index.html").stat().st_size > 0
    capped = {"xla": "AVX2", "onednn": "AVX2", "aten": "AVX2"} if "avx2" in run else _cpu.caps()
    assert all(env["cpu"]["caps"] == capped for r in runs for env in r.environments.values())
