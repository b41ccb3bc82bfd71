"""The product's own gate: the quick profile over every installed adapter runs clean - each cell
passes, is unsupported, or is an expected divergence with its clause. A new finding fails CI here,
with the finding's summary line; a framework upgrade that fixes a divergence fails the divergence
meta-test instead.

The native run is the CI workflow itself (.github/workflows/conformance.yml): every CPU matrix job's
`run:` commands, concurrently as the runners would, each in its own folder; their uploaded results are
laid out as the report job downloads them and merged by its command - so the workflow cannot rot.
The float16/bfloat16 cells run again with the ISA capped to AVX2 (NUM.N10: XLA, oneDNN and ATen then
play an older CPU, and low-precision results may change with it) - for the adapters a cap reaches
(`Adapter.isa_capped`); the others compute in a capped run exactly what the native run judged, and
on a CPU with nothing above AVX2 so does every adapter (the capped run is skipped there).
NORMCONF_SKIP_SUITE=1 skips both for a fast local loop."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from normconf import adapters
from normconf.reports import results
from normconf.vocabulary import cpu as _cpu

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
SETUP = ("scripts/setup.sh",)  # steps a checkout here has already run
# the main job's report stays small enough to mail and open: every repro one click away, long arrays as
# the seeded draw that regenerates them (adapters/_repro.py), example parameters abridged on the page
REPORT_BYTES = 5_000_000
SUITE = pytest.mark.skipif(bool(os.environ.get("NORMCONF_SKIP_SUITE")), reason="NORMCONF_SKIP_SUITE is set")


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _commands(job: dict, matrix: dict) -> list[str]:
    """The job's `run:` commands with the matrix values in, less the set-up this checkout has done."""

    def value(match):
        key = match.group(1).strip()
        assert key.startswith("matrix."), f"the gate cannot evaluate ${{{{ {key} }}}}"
        return str(matrix[key.removeprefix("matrix.")])

    return [
        re.sub(r"\$\{\{([^}]*)\}\}", value, step["run"])
        for step in job["steps"]
        if "run" in step and step["run"].strip() not in SETUP
    ]


def _uploads(job: dict, matrix: dict) -> list[tuple[str, str]]:
    """(artifact name, path glob) of the job's upload-artifact steps, matrix values in."""
    found = []
    for step in job["steps"]:
        if str(step.get("uses", "")).startswith("actions/upload-artifact"):
            name, path = (
                re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: str(matrix[m.group(1)]), step["with"][key])
                for key in ("name", "path")
            )
            found.append((name, path))
    return found


def _folder(path: Path) -> Path:
    """A stand-in for a runner's checkout: its own working directory, this checkout's .venv."""
    path.mkdir(parents=True)
    (path / ".venv").symlink_to(ROOT / ".venv")
    return path


def test_the_workflow_groups_every_built_in_adapter_once():
    groups = [
        entry["adapters"].split(",")
        for entry in _workflow()["jobs"]["suite"]["strategy"]["matrix"]["include"]
    ]
    listed = [name for group in groups for name in group]
    assert sorted(listed) == sorted(adapters.built_in()), "each built-in adapter belongs to one matrix group"


@pytest.mark.clause("NUM.N7")
@SUITE
def test_quick_profile_through_the_workflow_is_clean(tmp_path):
    workflow = _workflow()
    env = {**os.environ, **{k: str(v) for k, v in workflow["env"].items()}, "PROFILE": "quick"}
    env = {k: re.sub(r"\$\{\{.*\}\}", "quick", v) for k, v in env.items()}
    suite = workflow["jobs"]["suite"]
    entries = suite["strategy"]["matrix"]["include"]
    running = []
    for entry in entries:  # the matrix jobs run side by side, as on their runners
        folder = _folder(tmp_path / "runners" / entry["group"])
        script = "set -euo pipefail\n" + "\n".join(_commands(suite, entry))
        log = open(folder / "job.log", "w", encoding="utf-8")
        running.append(
            (
                entry,
                folder,
                log,
                subprocess.Popen(
                    ["bash", "-c", script], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
                ),
            )
        )
    for _, _, log, process in running:
        process.wait(timeout=3600)
        log.close()
    report = _folder(tmp_path / "report")
    for entry, folder, _, _ in running:  # download-artifact with a pattern: one folder per artifact
        for name, pattern in _uploads(suite, entry):
            (report / "results" / name).mkdir(parents=True)
            for path in glob.glob(str(folder / pattern)):
                shutil.copy(path, report / "results" / name)
    script = "set -euo pipefail\n" + "\n".join(_commands(workflow["jobs"]["report"], {}))
    merged = subprocess.run(
        ["bash", "-c", script], cwd=report, env=env, capture_output=True, text=True, timeout=1800
    )
    assert merged.returncode == 0, merged.stdout[-2000:] + merged.stderr[-2000:]
    runs = results.load(sorted(report.glob("results/*/worker-*.jsonl")))
    _assert_clean(runs, _cpu.caps())
    ran = {r["adapter"] for run in runs for r in run.results}
    installed = {name for name in adapters.built_in() if adapters.get(name).available()[0]}
    assert installed <= ran, f"no results for {sorted(installed - ran)}"
    page = (report / "report" / "index.html").read_text(encoding="utf-8")
    assert 'id="hazards"' in page and 'id="corpus"' in page  # the report job's --hazards and --corpus
    size = (report / "report" / "index.html").stat().st_size
    assert size <= REPORT_BYTES, f"the report is {size / 1e6:.1f} MB, over {REPORT_BYTES / 1e6:.0f} MB"
    for _, folder, _, process in running:
        assert process.returncode == 0, (folder / "job.log").read_text(encoding="utf-8")[-4000:]


@pytest.mark.clause("NUM.N7", "NUM.N10")
@SUITE
def test_quick_profile_half_precision_on_an_avx2_cpu_is_clean(tmp_path):
    if "avx2" not in _cpu.features():
        pytest.skip("this CPU has no AVX2 to cap at")
    if not _cpu.cap_takes_away("avx2"):  # the native gate already ran what a capped run computes
        pytest.skip(f"nothing above AVX2 here ({', '.join(sorted(_cpu.features()))}): capped = native")
    # the adapters a cap reaches: the others compute exactly what the native run judged
    capped = [name for name in adapters.built_in() if adapters.get(name).isa_capped]
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
            "--adapters",
            ",".join(capped),
            "--max-isa",
            "avx2",
            "--",
            "--dtypes",
            "float16,bfloat16",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    _assert_clean(
        results.load(sorted(tmp_path.glob("worker-*.jsonl"))),
        {"xla": "AVX2", "onednn": "AVX2", "aten": "AVX2"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (tmp_path / "index.html").stat().st_size > 0


def _assert_clean(runs, caps: dict) -> None:
    unsettled = [
        f"{r['adapter']} {r['norm']} {r['dtype']} {r['property']}: {r.get('clause')} {r.get('what', '')} "
        f"{r.get('message', '')[:300]}"
        for run in runs
        for r in run.results
        if r["verdict"] in results.PROBLEMS
    ]
    assert runs and all(run.complete for run in runs), "a worker did not finish its results file"
    assert not unsettled, "\n".join(unsettled)
    assert all(env["cpu"]["caps"] == caps for run in runs for env in run.environments.values())
