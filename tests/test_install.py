"""`pip install normconf` - no framework, no lock - is a working checker: the wheel built from this
checkout, installed into a fresh virtual environment, checks a NumPy plug-in with `normconf check` and
runs the installed suite by name with `pytest --pyargs normconf.conformance --impl ...`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock-linux-cpu-py311.txt"
PLUGIN = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("rms_norm", dtypes=("float64",))
def rms_norm(x, *, eps, scale=None):  # the last axis
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if scale is None else y * scale
"""


def _run(command, cwd, timeout=900):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def test_the_wheel_alone_checks_a_numpy_plugin(tmp_path):
    source = tmp_path / "source"  # the committed files: the build writes nothing into the checkout
    source.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        tmp_path,
    )
    [wheel] = wheels.glob("normconf-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(LOCK), str(wheel)], tmp_path)
    frozen = _run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], tmp_path).lower()
    assert "torch" not in frozen and "jax" not in frozen and "pytest==" in frozen and "hypothesis==" in frozen
    work = tmp_path / "work"
    work.mkdir()
    (work / "my_norms.py").write_text(textwrap.dedent(PLUGIN))
    checked = _run([str(venv / "bin" / "normconf"), "check", "my_norms.py"], work)
    assert "verdict: CONFORMS (semantics, accuracy, range, special values)" in checked, checked[-2000:]
    suite = _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "--pyargs",
            "normconf.conformance",
            "--impl",
            "my_norms.py",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        work,
    )
    assert " passed" in suite.strip().splitlines()[-1], suite[-2000:]
