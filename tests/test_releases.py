"""The version axis (`normconf run --versions`, normconf/envs.py): requests refused in one line before
anything runs, environments built once, reused, listed, removed and rebuilt when broken, two real
onnxruntime releases run end to end into one report whose version axis shows what changed between them
(LN.D4: one-pass LayerNorm before 1.27), and a known divergence's release range checked both ways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from normconf import envs

pytest.importorskip("onnxruntime")

OLD, NEW = "1.26.0", "1.32.0"  # LN.D4: onnxruntime's LayerNorm is one-pass up to 1.26, two-pass from 1.27


def _normconf(*args, env=None, timeout=1800):
    import os

    return subprocess.run(
        [sys.executable, "-m", "normconf.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh environment cache for this module (NORMCONF_ENVS)."""
    return tmp_path_factory.mktemp("envs")


@pytest.mark.parametrize(
    "request_, says",
    [
        ("tensorflowx=2.0", "unknown framework 'tensorflowx'"),
        ("onnxruntime=1.x", "'1.x' is not a release number"),
        ("onnxruntime", "write FRAMEWORK=VERSION"),
        ("onnxruntime=0.1.0", "no wheel for Python"),
    ],
)
def test_a_bad_request_is_refused_in_one_line_before_anything_runs(tmp_path, cache, request_, says):
    done = _normconf(
        "run", "--versions", request_, "--results", str(tmp_path / "results"), env={envs.CACHE: str(cache)}
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert not (tmp_path / "results").exists() and not any(cache.iterdir())


def test_two_onnxruntime_releases_run_into_one_report_with_a_version_axis(tmp_path, cache):
    out, page = tmp_path / "results", tmp_path / "report.html"
    done = _normconf(
        "run",
        "--versions",
        f"onnxruntime={OLD},{NEW}",
        "--adapters",
        "onnxruntime",
        "--profile",
        "quick",
        "--results",
        str(out),
        "--report",
        str(page),
        "--",
        "--dtypes",
        "float32",
        "--norms",
        "layer_norm,group_norm",
        env={envs.CACHE: str(cache)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for version in (OLD, NEW):
        records = [
            json.loads(line)
            for path in (out / f"onnxruntime-{version}").glob("worker-*.jsonl")
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        session = next(r for r in records if r["kind"] == "session")
        environment = next(r for r in records if r["kind"] == "environment")
        results = [r for r in records if r["kind"] == "result"]
        assert session["release"] == f"onnxruntime={version}" and environment["version"] == version
        assert results and all(r["release"] == f"onnxruntime={version}" for r in results)
    html = page.read_text(encoding="utf-8")
    assert 'id="releases"' in html and f"onnxruntime {OLD}" in html and f"onnxruntime {NEW}" in html
    from normconf.reports import results

    axis = results.release_axis(results.load(sorted(out.glob("*/worker-*.jsonl"))))
    (onnxruntime,) = axis
    assert onnxruntime["releases"] == [f"onnxruntime {OLD}", f"onnxruntime {NEW}"]
    row = next(d for d in onnxruntime["divergences"] if d["clause"] == "LN.D4" and d["norm"] == "layer_norm")
    assert row["states"] == [(f"onnxruntime {OLD}", True), (f"onnxruntime {NEW}", False)]
    assert row["declared"] == "<1.27" and row["flags"] and row["flags"][0].startswith("fixed upstream")
    # the environment was built once and is listed; a second request reuses it (no rebuild line)
    listed = _normconf("envs", env={envs.CACHE: str(cache)})
    assert f"onnxruntime={OLD}" in listed.stdout and "built" in listed.stdout
    assert f"onnxruntime={OLD}: environment built" in done.stdout


def test_a_broken_environment_is_rebuilt_and_envs_remove_deletes(cache, monkeypatch):
    monkeypatch.setenv(envs.CACHE, str(cache))
    release = envs.Release("onnxruntime", OLD)
    python = envs.ensure(release)  # built by the end-to-end test, or now
    assert envs.healthy(release, envs.path(release))
    (envs.path(release) / envs.MARKER).unlink()  # an interrupted build leaves no marker
    said = []
    assert envs.ensure(release, log=said.append) == python
    assert any("broken; rebuilding" in line for line in said) and envs.healthy(release, envs.path(release))
    refused = _normconf("envs", "remove", "onnxruntime=9.9.9", env={envs.CACHE: str(cache)})
    assert refused.returncode == 2 and envs.path(release).exists()  # nothing partial
    removed = _normconf("envs", "remove", f"onnxruntime={OLD}", env={envs.CACHE: str(cache)})
    assert removed.returncode == 0 and not envs.path(release).exists()


def test_a_release_that_cannot_install_is_one_line_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    from normconf import cli

    def refuse(release, log=print):
        raise envs.ReleaseError(f"{release.label}: pip cannot install it here (simulated)")

    monkeypatch.setattr(envs, "ensure", refuse)
    monkeypatch.setattr(envs, "check_wheels", lambda releases: None)
    out = tmp_path / "results"
    versions = f"onnxruntime={OLD},{envs.installed('onnxruntime')}"
    suite = ["--profile", "quick", "--results", str(out), "--report", ""]
    code = cli.main(
        ["run", "--versions", versions, "--adapters", "onnxruntime", *suite, "--", "--dtypes", "float32"]
        + ["--norms", "lp_normalize"]
    )
    said = capsys.readouterr()
    assert code == 1
    assert [ln for ln in said.err.splitlines() if "simulated" in ln] == [
        f"normconf run: onnxruntime={OLD}: pip cannot install it here (simulated); the other releases run"
    ]
    assert list((out / f"onnxruntime-{envs.installed('onnxruntime')}").glob("worker-*.jsonl"))


def test_a_divergence_with_a_release_range_holds_only_there(monkeypatch):
    from normconf.conformance.divergences import KNOWN

    (entry,) = [e for e in KNOWN if e.clause == "LN.D4" and e.adapters == "onnxruntime"]
    assert entry.releases == "<1.27"
    monkeypatch.setenv(envs.RELEASE, f"onnxruntime={OLD}")
    assert entry.holds_in_release("onnxruntime")
    monkeypatch.setenv(envs.RELEASE, "onnxruntime=1.27.0")
    assert not entry.holds_in_release("onnxruntime")
    monkeypatch.setenv(envs.RELEASE, "jax=0.4.38")  # another framework's release: the installed one counts
    assert entry.holds_in_release("onnxruntime") is (envs.installed("onnxruntime") in ("1.26.0",))


def test_the_environment_shadows_the_installed_release(cache, monkeypatch):
    monkeypatch.setenv(envs.CACHE, str(cache))
    python = envs.ensure(envs.Release("onnxruntime", OLD))
    probe = "import onnxruntime, numpy, normconf; print(onnxruntime.__version__, numpy.__file__)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    version, numpy_file = done.stdout.split()
    assert version == OLD and Path(numpy_file).is_relative_to(Path(sys.prefix))  # the rest is this one's
