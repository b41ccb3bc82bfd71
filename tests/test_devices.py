"""The device axis: every result records the device an adapter computed on and the TF32 modes in
force; NORMCONF_DEVICE / NORMCONF_TF32 (normconf run --device / --tf32) set them, and a bad value
is refused before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from normconf import adapters

# one adapter per framework whose TF32 switch normconf sets, with the flags it records
TF32_FLAGS = {
    "torch.nn": {"on": {"matmul": True, "cudnn": True}, "off": {"matmul": False, "cudnn": False}},
    "tf.nn": {"on": {"tensor_float_32_execution": True}, "off": {"tensor_float_32_execution": False}},
    "flax.linen": {
        "on": {"jax_default_matmul_precision": "tensorfloat32"},
        "off": {"jax_default_matmul_precision": "highest"},
    },
}
PRINT_ENVIRONMENT = (
    "import json, sys\nfrom normconf import adapters\n"
    "print(json.dumps({n: adapters.get(n).environment() for n in sys.argv[1:]}, default=str))"
)


def _installed(names):
    return [n for n in names if adapters.get(n).available()[0]]


def _environments(names, **env) -> dict:
    import os

    done = subprocess.run(
        [sys.executable, "-c", PRINT_ENVIRONMENT, *names],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting", ["on", "off"])
def test_tf32_switch_is_applied_and_recorded(setting):
    names = _installed(TF32_FLAGS)
    if not names:
        pytest.skip("no framework with a TF32 switch installed")
    found = _environments(names, NORMCONF_TF32=setting, NORMCONF_DEVICE="cpu")
    for name in names:
        assert found[name]["tf32"] == TF32_FLAGS[name][setting], name
        assert found[name]["device"] == "cpu", name


def test_every_framework_environment_names_its_device():
    names = _installed(["torch.nn", "tf.nn", "flax.linen", "keras[tensorflow]", "keras[jax]", "keras[torch]"])
    for name, environment in _environments(names).items():
        assert environment.get("device"), f"{name} records no device"
        assert "tf32" in environment, f"{name} records no TF32 mode"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("NORMCONF_TF32", "maybe"),
        ("NORMCONF_DEVICE", "gpu0"),
        pytest.param("NORMCONF_MAX_ISA", "avx9", marks=pytest.mark.clause("NUM.N10")),
        pytest.param("XLA_FLAGS", "--xla_cpu_max_isa=AVX9", marks=pytest.mark.clause("NUM.N10")),
        pytest.param("ONEDNN_MAX_CPU_ISA", "AVX3", marks=pytest.mark.clause("NUM.N10")),
        pytest.param("ATEN_CPU_CAPABILITY", "sse9", marks=pytest.mark.clause("NUM.N10")),
    ],
)
def test_a_bad_choice_is_refused_before_anything_runs(variable, value, tmp_path):
    import os

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "conformance/test_forward.py",
            "--adapters",
            "onnx.reference",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, variable: value},
        timeout=300,
        cwd=__import__("pathlib").Path(__file__).resolve().parent.parent,
    )
    assert done.returncode != 0 and variable in done.stdout + done.stderr
