"""Every failure carries a repro script; run alone, it reproduces the failure: it prints both answers
and the verdict under the same budget, and exits 1 (NUM.N7)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from normconf import adapters
from normconf.conformance import checks
from normconf.conformance.divergences import KNOWN
from normconf.conformance.harness import Cell, repro


def _entry(clause, adapter, shows_in):
    entry = next(e for e in KNOWN if e.clause == clause and e.names(adapter) and e.shows_in == shows_in)
    if not adapters.get(adapter).available()[0]:
        pytest.skip(f"{adapter} is not installed")
    return entry


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("clause, adapter, shows_in", [("LRN.D4", "onnx.reference", "forward"),
                                                       ("RMS.D3", "torch.functional", "gradient")])
def test_a_repro_run_alone_reproduces_the_failure(clause, adapter, shows_in, tmp_path):
    entry = _entry(clause, adapter, shows_in)
    case, dtype = entry.example()
    cell = Cell(adapter, entry.norm, dtype, "forward_matches_reference")
    if shows_in == "gradient":
        cell.cotangent = case.cotangent if case.cotangent is not None else np.full_like(case.x, 0.3)
    cell.failure = checks.Verdict(clause, adapter, entry.norm, dtype, "y", checks.T.Comparison(1.0, 0.0, np.inf, 0.0, ()),
                                  "NUM.N5")
    script = tmp_path / "repro.py"
    script.write_text(repro(cell, case), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"FAIL [{clause}] {adapter}" in done.stdout


@pytest.mark.clause("NUM.N7")
def test_a_torch_repro_carries_the_framework_alone_call(tmp_path):
    """torch.functional writes the F.* call it made with literal tensors; the repro runs it first."""
    entry = _entry("RMS.D3", "torch.functional", "gradient")
    case, dtype = entry.example()
    cell = Cell("torch.functional", entry.norm, dtype, "gradients_match_reference_vjp", cotangent=np.full_like(case.x, 0.3))
    text = repro(cell, case)
    namespace: dict = {}
    exec(next(line for line in text.splitlines() if line.startswith("FRAMEWORK_ALONE = ")), namespace)
    alone = namespace["FRAMEWORK_ALONE"]
    assert "import torch.nn.functional as F" in alone and "y = F.rms_norm(" in alone and "normconf" not in alone
    script = tmp_path / "repro.py"
    script.write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert "--- the framework alone ---" in done.stdout and "grad of a0:" in done.stdout, done.stdout[-2000:] + done.stderr


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("adapter", ["onnxruntime", "onnx.reference"])
def test_an_onnx_repro_rebuilds_the_model_with_onnx_alone(adapter):
    """The ONNX adapters write the one-node model they ran with onnx.helper, and run it with the runtime."""
    if not adapters.get(adapter).available()[0]:
        pytest.skip(f"{adapter} is not installed")
    x = np.arange(6.0).reshape(2, 3) / 4
    alone = adapters.get(adapter).framework_repro("layer_norm", x, {"axes": (-1,), "eps": 2.0**-10}, dtype="float32")
    assert "normconf" not in alone and "helper.make_node('LayerNormalization'" in alone
    done = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("Y = "), done.stdout + done.stderr


@pytest.mark.clause("NUM.N7")
def test_a_torch_nn_repro_rebuilds_the_configured_module():
    """torch.nn writes the module it called (repr, loaded parameters and buffers, mode): run alone it
    gives the adapter's own output and running statistics."""
    from normconf import reference as R

    if not adapters.get("torch.nn").available()[0]:
        pytest.skip("torch is not installed")
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    params = {"eps": 2.0**-10, "momentum": 0.25, "state": R.RunningStats(np.ones(3), np.full(3, 2.0), 3),
              "scale": np.array([1.0, 2.0, 0.5])}
    alone = adapters.get("torch.nn").framework_repro("batch_norm", x, params, dtype="float32")
    assert "normconf" not in alone and "module = torch.nn.BatchNorm1d(3" in alone
    namespace: dict = {}
    exec(alone, namespace)
    outcome = adapters.get("torch.nn").run("batch_norm", x, params, dtype="float32")
    assert np.array_equal(namespace["y"].detach().double().numpy(), outcome.y)
    assert np.array_equal(namespace["module"].running_var.double().numpy(), outcome.state.var)


@pytest.mark.clause("NUM.N7")
def test_a_paddle_repro_carries_the_framework_alone_call():
    """paddle.functional writes the F.* call it made (through its isolated child when TF is loaded)."""
    if not adapters.get("paddle.functional").available()[0]:
        pytest.skip("paddle is not installed")
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    alone = adapters.get("paddle.functional").framework_repro("group_norm", x, {"groups": 3, "eps": 2.0**-10},
                                                             dtype="float32", cotangent=np.ones_like(x))
    assert "normconf" not in alone and "y = F.group_norm(" in alone
    done = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "grad of a0:" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
