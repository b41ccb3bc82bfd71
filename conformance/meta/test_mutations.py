"""Meta-test: the suite catches a broken reference. Each mutation of mutations.py is run through the
forward property (quick profile) against an installed adapter in a subprocess; the run must fail, and
the failure must cite the mutated norm's forward clause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from normconf import adapters

ROOT = Path(__file__).resolve().parents[2]
# mutation -> (norms whose forward property must catch it, the clause a failure cites)
CASES = {
    "lrn_window_off_by_one": ("local_response_norm", "LRN.S1"),
    "eps_outside_sqrt": ("layer_norm or batch_norm or group_norm", "LN.S1"),
    "unbiased_normalization": ("layer_norm or batch_norm", "LN.S1"),
}
CANDIDATES = ("torch.functional", "onnxruntime", "flax.linen")


def _adapter():
    for name in CANDIDATES:
        if adapters.get(name).available()[0]:
            return name
    pytest.skip(f"none of {CANDIDATES} is installed")


@pytest.mark.clause("LRN.N3", "BN.N1", "BN.N2", "LN.N1")
@pytest.mark.parametrize("mutation", sorted(CASES))
def test_suite_fails_against_a_broken_reference(mutation):
    norms, clause = CASES[mutation]
    env = {**os.environ, "NORMCONF_MUTATION": mutation}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance/test_forward.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "normconf.conformance.meta.mutations",
            "--adapters",
            _adapter(),
            "--profile",
            "quick",
            "-k",
            f"({norms}) and float64",
            "-x",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, f"the suite did not fail under {mutation}:\n{proc.stdout[-2000:]}"
    assert "S1]" in proc.stdout, proc.stdout[-2000:]


def test_unmutated_reference_passes_the_same_run():
    """The control: without a mutation the same selection passes, so the failures above are the bug's."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance/test_forward.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "normconf.conformance.meta.mutations",
            "--adapters",
            _adapter(),
            "--profile",
            "quick",
            "-k",
            "(local_response_norm or layer_norm or batch_norm or group_norm) and float64",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "NORMCONF_MUTATION"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.clause("LN.D1", "BN.D2")
@pytest.mark.parametrize(
    "mutation", ["torch_layer_norm_eps_declared_1e-3", "torch_batch_norm_momentum_declared_0.9"]
)
def test_defaults_property_catches_a_wrong_declaration(mutation):
    """An adapter claiming a default its framework lacks fails the defaults property (torch.nn)."""
    if not adapters.get("torch.nn").available()[0]:
        pytest.skip("torch is not installed")
    norm = "layer_norm" if "layer_norm" in mutation else "batch_norm"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance/test_defaults.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "normconf.conformance.meta.mutations",
            "--adapters",
            "torch.nn",
            "--profile",
            "quick",
            "-k",
            norm,
        ],
        cwd=ROOT,
        env={**os.environ, "NORMCONF_MUTATION": mutation},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, f"the defaults property missed {mutation}:\n{proc.stdout[-2000:]}"
    clause = (
        "[LN.D1]" if norm == "layer_norm" else "[BN.D2]"
    )  # the failure cites the clause of the wrong default
    assert "default " in proc.stdout and clause in proc.stdout, proc.stdout[-2000:]
