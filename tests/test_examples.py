"""The examples/ verdicts, as examples/README.md records them: `normconf check` fails each deliberate
bug with a message naming the clause and what the implementation does instead, passes correct code
computed differently, and checks declared conventions against themselves."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def check(target: str, tmp_path, *options) -> tuple[int, str, list[dict]]:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "normconf.cli", "check", target, "--results", str(out), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    records = [
        json.loads(line)
        for path in sorted(out.glob("worker-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    return proc.returncode, proc.stdout + proc.stderr, [r for r in records if r.get("kind") == "result"]


def findings(records) -> dict[tuple[str, str, str], str]:
    return {
        (r["norm"], r["property"], r["dtype"]): r.get("message", "")
        for r in records
        if r["verdict"] == "finding"
    }


def test_each_deliberate_bug_fails_naming_its_clause_and_cause(tmp_path):
    code, output, records = check(f"{EXAMPLES / 'numpy_buggy.py'}", tmp_path, "--dtypes", "float64")
    assert code == 1 and "verdict: DOES NOT CONFORM" in output, output[-3000:]
    assert {r["dtype"] for r in records} == {"float64"}  # --dtypes selects
    found = findings(records)
    expected = {
        "layer_norm": ("[LN.S1]", "eps outside the square root (LN.N1)"),
        "group_norm": ("[GN.S1]", "channels grouped the other way (GN.P4)"),
        "batch_norm": ("[BN.S1]", "the unbiased variance normalizes (BN.N1/BN.N2)"),
        "local_response_norm": ("[LRN.S1]", "the window is one channel short"),
    }
    for norm, (clause, cause) in expected.items():
        message = found.get((norm, "forward_matches_reference", "float64"), "")
        assert message.startswith(clause) and cause in message, (norm, message)


def test_correct_implementations_computed_differently_conform(tmp_path):
    code, output, records = check(str(EXAMPLES / "numpy_correct.py"), tmp_path)
    assert code == 0 and "verdict: CONFORMS" in output, output[-3000:]
    assert {r["norm"] for r in records if r["verdict"] == "pass"} == {
        "layer_norm",
        "rms_norm",
        "group_norm",
        "batch_norm",
    }


@pytest.mark.clause("NUM.L1", "NUM.L2", "NUM.L3", "NUM.L4", "NUM.L5", "NUM.D1")
def test_textbook_float32_norms_conform_with_the_range_limit_named(tmp_path):
    """Every norm as a textbook writes it, two-pass statistics in float32, overflow unguarded: the
    equations, accuracy and special values hold; range is limited where squares leave float32 - the
    limit every framework computing in float32 has, in the same words (NUM.L3)."""
    code, output, records = check(str(EXAMPLES / "numpy_textbook.py"), tmp_path)
    assert code == 0, output[-3000:]
    assert (
        "verdict: CONFORMS (semantics, accuracy, special values); range limited: squares leave float32 "
        "from |x| ≈ 1.8e19 / sqrt(n) (NUM.D1)"
    ) in output, output[-3000:]
    limited = [r for r in records if r["verdict"] == "expected divergence"]
    assert limited and all(r["divergence_clause"] == "NUM.D1" and r["level"] == "range" for r in limited)
    assert {r["norm"] for r in records if r["verdict"] == "pass"} >= {
        "layer_norm",
        "rms_norm",
        "group_norm",
        "instance_norm",
        "batch_norm",
        "local_response_norm",
        "lp_normalize",
    }
    # a kernel promising the whole range is held to it
    code, output, _ = check(
        str(EXAMPLES / "numpy_textbook.py"), tmp_path, "--norms", "rms_norm", "--require", "range"
    )
    assert code == 1 and "verdict: DOES NOT CONFORM at range (is limited): squares leave float32" in output
    code, output, _ = check(str(EXAMPLES / "numpy_textbook.py"), tmp_path, "--require", "semantic")
    assert code == 2 and "--require: 'semantic' is not a conformance level" in output, output[-2000:]


@pytest.mark.clause("NUM.L5")
def test_the_same_arithmetic_gets_the_same_words_from_a_framework(tmp_path):
    """torch.nn's RMSNorm computes its float32 statistics in float32 too: where they overflow its
    record is the same range limit, the same level and the same cause."""
    pytest.importorskip("torch")
    out = tmp_path / "torch"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "conformance" / "test_forward.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--adapters",
            "torch.nn",
            "--norms",
            "rms_norm",
            "--dtypes",
            "float32",
            "--results",
            str(out / "r.jsonl"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    records = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    framework = [r for r in records if r.get("divergence_clause") == "NUM.D1"]
    assert framework, proc.stdout[-2000:]
    _, _, plugin = check(str(EXAMPLES / "numpy_textbook.py"), tmp_path, "--norms", "rms_norm")
    mine = [r for r in plugin if r.get("divergence_clause") == "NUM.D1"]
    cause = lambda r: r["regime"].split(": ", 1)[1].split("; here")[0]  # noqa: E731
    assert (
        {(r["verdict"], r["level"], cause(r)) for r in framework}
        == {(r["verdict"], r["level"], cause(r)) for r in mine}
        == {("expected divergence", "range", "squares leave float32 from |x| ≈ 1.8e19 / sqrt(n) (NUM.D1)")}
    )


def test_declared_conventions_are_checked_and_undeclared_ones_named(tmp_path):
    pytest.importorskip("torch")
    code, output, _ = check(str(EXAMPLES / "declared_conventions.py"), tmp_path)
    assert code == 0 and "verdict: CONFORMS" in output, output[-3000:]
    undeclared = tmp_path / "undeclared.py"
    source = (EXAMPLES / "declared_conventions.py").read_text()
    undeclared.write_text(
        source.replace(
            'conventions={"normalize_var": "unbiased", "eps_placement": "outside_sqrt"}', "conventions={}"
        )
    )
    code, output, records = check(
        f"{undeclared}:annotated_transformer_layer_norm", tmp_path, "--dtypes", "float64"
    )
    message = findings(records).get(("layer_norm", "forward_matches_reference", "float64"), "")
    assert (
        code == 1
        and "declare conventions={'normalize_var': 'unbiased', 'eps_placement': 'outside_sqrt'}" in message
    ), output[-3000:]


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers not installed ([examples])"
)
def test_llama_rms_norm_computes_float64_in_float32(tmp_path):
    code, output, records = check(
        f"{EXAMPLES / 'transformers_norms.py'}:llama_rms_norm", tmp_path, "--dtypes", "float32,float64"
    )
    forward = {r["dtype"]: r for r in records if r["property"] == "forward_matches_reference"}
    assert code == 1, output[-3000:]
    assert forward["float64"]["verdict"] == "finding"
    # float32: right but where its squares overflow - range limited (NUM.D1: x.pow(2).mean() is inf
    # past |x| ~ 1.8e19), as any implementation declaring float32 statistics
    assert forward["float32"]["verdict"] in ("pass", "expected divergence"), forward["float32"]
    if forward["float32"]["verdict"] == "expected divergence":
        assert forward["float32"]["level"] == "range", forward["float32"]


def test_torch_compiled_layer_norm_conforms_in_float32_but_where_squares_overflow(tmp_path):
    pytest.importorskip("torch")
    code, output, records = check(
        f"{EXAMPLES / 'torch_compile_norms.py'}:compiled_layer_norm", tmp_path, "--dtypes", "float32"
    )
    # NUM.D1: its float32 variance overflows past |x| ~ 1.8e19 - range limited, as any implementation
    # declaring float32 statistics; every other level holds
    assert code == 0, output[-3000:]
    limited = [r for r in records if r["verdict"] == "expected divergence"]
    assert limited and all(r["level"] == "range" for r in limited), output[-3000:]
    assert "range limited: squares leave float32" in output


def test_an_unknown_convention_value_is_refused_at_load_naming_the_valid_ones(tmp_path):
    """A plug-in declaring eps_placement="outside" (the valid value is "outside_sqrt") once had every
    example rejected and was called CONFORMS; now it is refused before anything runs, exit 2."""
    plugin = tmp_path / "bad_convention.py"
    plugin.write_text(
        "from normconf.adapters.plugin import implementation\n"
        "@implementation('layer_norm', conventions={'eps_placement': 'outside'})\n"
        "def layer_norm(x, *, axes, eps, scale=None, offset=None):\n"
        "    return x * 0 + 42\n"
    )
    code, output, records = check(str(plugin), tmp_path, "--dtypes", "float64")
    assert code == 2 and not records, output[-2000:]
    assert "eps_placement='outside'" in output and "['inside_sqrt', 'outside_sqrt']" in output, output
    assert "Traceback" not in output and "CONFORMS" not in output


def test_an_implementation_that_supports_nothing_is_not_checked(tmp_path):
    """A plug-in raising Unsupported on every call was CONFORMS ('1 checks pass, 7 not applicable' - the
    one pass a record-only property); now nothing judged is NOT CHECKED, exit 3."""
    plugin = tmp_path / "nothing.py"
    plugin.write_text(
        "from normconf.adapters import Unsupported\n"
        "from normconf.adapters.plugin import implementation\n"
        "@implementation('layer_norm')\n"
        "def layer_norm(x, *, axes, eps, scale=None, offset=None):\n"
        "    raise Unsupported('not today')\n"
    )
    code, output, _ = check(str(plugin), tmp_path, "--dtypes", "float64")
    assert code == 3 and "verdict: NOT CHECKED - nothing judged layer_norm" in output, output[-3000:]
    assert "CONFORMS" not in output.replace("NOT CHECKED", "")


@pytest.mark.parametrize(
    "layer", ["layer_norm_2d", "batch_norm_float_momentum", "normalize", "gemma_rms_norm"]
)
def test_model_library_layers_conform_as_they_are(tmp_path, layer):
    """A channels-first LayerNorm2d (layout declared once, other ranks Unsupported), a float-momentum
    BatchNorm (refuses={"momentum": [None]}) and torchvision's Normalize shape (channel_axis=-3,
    compared modulo the rank): each judged on everything it takes, and conforming."""
    code, output, records = check(f"{EXAMPLES / 'model_library_layers.py'}:{layer}", tmp_path)
    assert code == 0 and "verdict: CONFORMS (semantics, accuracy" in output, output[-3000:]
    assert sum(r.get("examples", 0) for r in records if r["verdict"] in ("pass", "expected divergence")) > 40
    refused = {reason for r in records for reason in r.get("unsupported", {})}
    if layer == "batch_norm_float_momentum":
        assert any("refuses momentum=None" in reason for reason in refused), refused
    assert not any("array(" in reason for reason in refused), refused  # one reason, not one per array


REFUSES_EPS_0 = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("layer_norm", dtypes=("float32",), accumulation={"float32": "float32"})
def layer_norm(x, *, eps, scale=None, offset=None):
    if eps == 0:
        raise ValueError("eps must be positive")  # as PyTorch's batch_norm does in training
    mean = x.mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(np.square(x - mean).mean(axis=-1, keepdims=True) + np.float32(eps))
    return y if scale is None else y * scale + (0 if offset is None else offset)
"""


UNDECLARED_ONE_PLUS = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("rms_norm", dtypes=("float64",))
def rms_norm(x, *, eps, scale=None):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if scale is None else y * (1 + scale)
"""


@pytest.mark.clause("RMS.N3")
def test_an_undeclared_one_plus_scale_is_named_with_its_declaration(tmp_path):
    plugin = tmp_path / "gemma_undeclared.py"
    plugin.write_text(UNDECLARED_ONE_PLUS)
    code, output, records = check(str(plugin), tmp_path)
    message = findings(records).get(("rms_norm", "forward_matches_reference", "float64"), "")
    assert code == 1 and "the scale is applied as 1 + scale" in message, output[-3000:]
    assert "declare scale_form='one_plus'" in message


ZERO_OVER_ZERO_AS_OFFSET = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("layer_norm", dtypes=("float64",))
def layer_norm(x, *, eps, scale=None, offset=None):
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        inverse = np.where((var == 0) & (eps == 0), 0.0, 1 / np.sqrt(var + eps))  # 0/0 answered as 0
    y = (x - mean) * inverse
    return y if scale is None else y * scale + (0 if offset is None else offset)
"""


@pytest.mark.clause("NUM.N9", "NUM.L4", "NUM.D2")
def test_a_constant_group_answered_as_its_offset_at_eps_0_fails_special_values(tmp_path):
    """The eps = 0 property's deliberately wrong answer: PyTorch's InvStd convention (0/0 as 0) in a plug-in
    that declares nothing is a special-values finding, and only that."""
    plugin = tmp_path / "zero_over_zero.py"
    plugin.write_text(ZERO_OVER_ZERO_AS_OFFSET)
    code, output, records = check(str(plugin), tmp_path)
    failing = {r["property"] for r in records if r["verdict"] == "finding"}
    assert code == 1 and "eps_0_on_a_constant_group_is_nan_there" in failing, output[-3000:]
    assert "verdict: DOES NOT CONFORM at special values" in output, output[-3000:]


def test_a_refusal_is_judged_at_its_level_and_stops_nothing(tmp_path):
    plugin = tmp_path / "refuses.py"
    plugin.write_text(REFUSES_EPS_0)
    code, output, records = check(str(plugin), tmp_path)
    refusals = [r for r in records if "refuses the input: raised ValueError" in r.get("message", "")]
    assert code == 1 and refusals and all(r["level"] == "special values" for r in refusals), output[-3000:]
    assert "verdict: DOES NOT CONFORM at special values" in output
    assert not [r for r in records if r["verdict"] == "skipped"], "a refusal stopped other cells"
    # a kernel that promises the equations and their accuracy only is held to exactly that
    code, output, _ = check(str(plugin), tmp_path, "--require", "semantics,accuracy")
    assert code == 0 and "verdict: CONFORMS (semantics, accuracy)" in output, output[-3000:]


WRONG_DTYPE = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("rms_norm", dtypes=("float32",))
def rms_norm(x, *, axes, eps, scale=None):
    return (x / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)).astype(np.float64)
"""


def test_a_protocol_error_is_the_plugins_says_what_to_do_and_its_repro_runs_anywhere(tmp_path):
    plugin = tmp_path / "wrong_dtype.py"
    plugin.write_text(WRONG_DTYPE)
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "normconf.cli", "check", plugin.name, "--results", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "the implementation's, not a clause's (raise normconf.adapters.Unsupported" in output
    protocol = [
        json.loads(line)
        for line in (out / "worker-1.jsonl").read_text().splitlines()
        if '"verdict": "protocol error"' in line
    ][0]
    assert protocol["message"].startswith("[plug-in protocol]") and "RMS.S1" not in protocol["message"]
    assert "returned float64 for a float32 input" in protocol["message"] and "level" not in protocol
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    replay = subprocess.run(
        [sys.executable, str(out / "repro.py")], cwd=elsewhere, capture_output=True, text=True, timeout=300
    )
    assert "PluginError" not in replay.stderr and "returned float64" in replay.stderr, replay.stderr[-2000:]
