"""Every failure carries a repro script; run alone, it reproduces the failure: it prints both answers
and the verdict under the same budget, and exits 1 (NUM.N7)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from normconf import adapters
from normconf.conformance import checks
from normconf.conformance.divergences import KNOWN, framework_alone, observable_in
from normconf.conformance.harness import Cell, repro
from normconf.vocabulary import tolerances as T
from normconf.vocabulary.case import Case


def _entry(clause, adapter, shows_in):
    entry = next(e for e in KNOWN if e.clause == clause and e.names(adapter) and e.shows_in == shows_in)
    if not adapters.get(adapter).available()[0]:
        pytest.skip(f"{adapter} is not installed")
    return entry


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize(
    "clause, adapter, shows_in",
    [("LRN.D4", "onnx.reference", "forward"), ("RMS.D3", "torch.functional", "gradient")],
)
def test_a_repro_run_alone_reproduces_the_failure(clause, adapter, shows_in, tmp_path):
    entry = _entry(clause, adapter, shows_in)
    case, dtype = entry.example()
    cell = Cell(adapter, entry.norm, dtype, "forward_matches_reference")
    if shows_in == "gradient" and case.cotangent is None:
        case = Case(case.norm, case.x, case.params, case.kind, cotangent=np.full_like(case.x, 0.3))
    cell.failure = checks.Verdict(
        clause, adapter, entry.norm, dtype, "y", T.Comparison(1.0, 0.0, np.inf, 0.0, ()), "NUM.N5"
    )
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
    case = Case(case.norm, case.x, case.params, case.kind, cotangent=np.full_like(case.x, 0.3))
    cell = Cell("torch.functional", entry.norm, dtype, "gradients_match_reference_vjp")
    text = repro(cell, case)
    namespace: dict = {}
    exec(next(line for line in text.splitlines() if line.startswith("FRAMEWORK_ALONE = ")), namespace)
    alone = namespace["FRAMEWORK_ALONE"]
    assert (
        "import torch.nn.functional as F" in alone and "y = F.rms_norm(" in alone and "normconf" not in alone
    )
    script = tmp_path / "repro.py"
    script.write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert "--- the framework alone ---" in done.stdout and "grad['x'] = " in done.stdout, (
        done.stdout[-2000:] + done.stderr
    )


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("adapter", ["onnxruntime", "onnx.reference"])
def test_an_onnx_repro_rebuilds_the_model_with_onnx_alone(adapter):
    """The ONNX adapters write the one-node model they ran with onnx.helper, and run it with the runtime."""
    if not adapters.get(adapter).available()[0]:
        pytest.skip(f"{adapter} is not installed")
    x = np.arange(6.0).reshape(2, 3) / 4
    alone = adapters.get(adapter).framework_repro(
        "layer_norm", x, {"axes": (-1,), "eps": 2.0**-10}, dtype="float32"
    )
    assert "normconf" not in alone and "helper.make_node('LayerNormalization'" in alone
    done = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("y = "), done.stdout + done.stderr


@pytest.mark.clause("NUM.N7")
def test_a_torch_nn_repro_rebuilds_the_configured_module():
    """torch.nn writes the module it called (repr, loaded parameters and buffers, mode): run alone it
    gives the adapter's own output and running statistics."""
    from normconf import reference as R

    if not adapters.get("torch.nn").available()[0]:
        pytest.skip("torch is not installed")
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    params = {
        "eps": 2.0**-10,
        "momentum": 0.25,
        "state": R.RunningStats(np.ones(3), np.full(3, 2.0), 3),
        "scale": np.array([1.0, 2.0, 0.5]),
    }
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
    alone = adapters.get("paddle.functional").framework_repro(
        "group_norm", x, {"groups": 3, "eps": 2.0**-10}, dtype="float32", cotangent=np.ones_like(x)
    )
    assert "normconf" not in alone and "y = F.group_norm(" in alone
    done = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "grad['x'] = " in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# Every framework adapter writes a framework-alone repro, and run alone it gives the adapter's numbers.

# Runs each script of a JSON list (stdin) in its own namespace; prints their outputs as a JSON list.
RUN_SCRIPTS = """
import contextlib, io, json, sys, traceback
outputs = []
for text in json.load(sys.stdin):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(text, 'repro', 'exec'), {'__name__': '__main__'})
    except Exception:
        out.write('RAISED ' + traceback.format_exc())
    outputs.append(out.getvalue())
sys.stdout.write('\\nOUTPUTS ' + json.dumps(outputs))
"""


def _sets_up_devices(script: str) -> bool:
    return "XLA_FLAGS" in script or "set_logical_device_configuration" in script


def _framework_adapters():
    return [name for name in adapters.names() if adapters.get(name).available()[0]]


def _first_supported(adapter, norm):
    """The first of a few small examples (layouts, ranks, with or without affine, state and offset)
    the adapter runs: (x, params, dtype, cotangent, outcome), gradients where declared."""
    from normconf import reference as R

    declaration = adapter.declarations[norm]
    dtype = "float32" if "float32" in declaration.dtypes else declaration.dtypes[0]
    base = {**declaration.defaults(), **declaration.fixed()}
    raised = None
    for shape in ((2, 4, 6), (2, 4, 3, 2), (2, 3, 2, 4)):
        x = np.sin(np.arange(np.prod(shape), dtype=np.float64) * 1.7).reshape(shape) * 2 + 0.5
        axis = base.get("channel_axis", 1) % x.ndim
        channels = shape[axis]
        params = {**base}
        if "eps" not in declaration.fixed() and norm not in ("channel_normalize", "local_response_norm"):
            params["eps"] = 2.0**-10
        if norm == "group_norm":
            params["groups"] = 2
        if norm == "sync_batch_norm":  # one sample per replica
            params["replica_sizes"] = (1,) * shape[0]
        if params.get("axes", ()) is None:  # "every axis" (tf.math.l2_normalize) is not canonical (LP.C2)
            params["axes"] = tuple(range(x.ndim))
        params.setdefault("size", 3) if norm == "local_response_norm" else None
        if norm == "channel_normalize":
            params.update(mean=np.linspace(-0.5, 0.5, channels), std=np.linspace(0.5, 2.0, channels))
        affine_shape = (shape[-1],) if norm in ("layer_norm", "rms_norm") else (channels,)
        variants = [{}]
        if norm in ("batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"):
            scale, offset = np.linspace(0.5, 2.0, affine_shape[0]), np.linspace(-1.0, 1.0, affine_shape[0])
            variants = [{"scale": scale, "offset": offset}, {"scale": scale}, {}]
        if declaration.stateful:
            state = {
                "state": R.RunningStats(np.full(channels, 0.25), np.full(channels, 2.0), 3),
                "training": True,
            }
            variants = (
                [{**v, **state} for v in variants]
                + [{**v, **state, "momentum": 1.0} for v in variants]
                + variants
                + [{**v, **state, "training": False} for v in variants]  # an eval-only layer (BN.D21)
            )
        for variant in variants:
            case = {**params, **variant}
            cotangent = np.cos(np.arange(x.size) * 0.9).reshape(shape) if declaration.gradients else None
            try:
                return x, case, dtype, cotangent, adapter.run(norm, x, case, dtype=dtype, cotangent=cotangent)
            except adapters.Unsupported:
                continue
            except Exception as exc:  # a variant a known divergence makes raise (MP.D50): try the next one
                raised = raised or exc
    if raised is not None:  # no variant ran, and one raised: that is the adapter's error, not "none"
        raise raised
    return None


def _printed(output: str) -> dict:
    values = {}
    for line in output.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and value.startswith("["):
            values[name] = np.array(eval(value, {"nan": np.nan, "inf": np.inf}), dtype=np.float64)  # noqa: S307
    return values


def _agree(adapter, norm, x, params, dtype, cotangent, outcome, printed) -> list:
    """The printed y and x/scale gradients against the adapter's own, each under the suite's budget
    for this example (a framework may differ between processes in the last bits: the thread count
    changes its reduction order); the failed verdicts."""
    from normconf import reference as R

    acc = adapter.declarations[norm].accumulation.get(dtype, dtype)
    expected = getattr(R, norm)(x, **params)
    bound = checks.budget(norm, x, params, getattr(expected, "y", expected), acc_dtype=acc, out_dtype=dtype)
    failed = [
        checks.check(
            "NUM.N7",
            adapter.name,
            norm,
            dtype,
            "repro y",
            printed.get("y", np.array(np.nan)),
            outcome.y,
            bound,
            {},
        )
    ]
    if outcome.grads is not None:
        want = getattr(R, f"{norm}_vjp")(cotangent, x, **params)
        want = {k: getattr(want, k) for k in ("x", "scale") if getattr(want, k) is not None}
        bounds = checks.gradient_budget(norm, x, params, cotangent, want, acc_dtype=acc, out_dtype=dtype)
        grads = [v for k, v in printed.items() if k.startswith("grad[")]
        for key in want:
            ours = getattr(outcome.grads, key)
            theirs = next(
                (
                    g
                    for g in grads
                    if g.size == ours.size
                    and T.compare(g.reshape(ours.shape), ours, bounds[key], dtype).passed
                ),
                None,
            )
            failed.append(
                checks.check(
                    "NUM.N7",
                    adapter.name,
                    norm,
                    dtype,
                    f"repro d{key}",
                    np.full(ours.shape, np.nan) if theirs is None else theirs.reshape(ours.shape),
                    ours,
                    (bounds[key], "NUM.N8"),
                    {},
                )
            )
    return [v for v in failed if not v.passed]


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("adapter_name", _framework_adapters())
def test_every_framework_repro_run_alone_gives_the_adapters_numbers(adapter_name):
    """For each norm the adapter has, a small example: its framework-alone script (no normconf in it)
    run in a fresh interpreter prints the adapter's own y and x (and scale) gradients."""
    adapter = adapters.get(adapter_name)
    examples, scripts = [], []
    for norm in adapter.declarations:
        if adapter.cannot_run(norm):  # this machine lacks what the norm needs (SyncBatchNorm's accelerators)
            continue
        example = _first_supported(adapter, norm)
        assert example is not None, f"{adapter_name} runs none of the small {norm} examples"
        x, params, dtype, cotangent, outcome = example
        text = adapter.framework_repro(norm, x, params, dtype=dtype, cotangent=cotangent)
        assert text is not None and "normconf" not in text, f"{adapter_name} {norm}: no framework-alone repro"
        examples.append((norm, *example))
        scripts.append(text)
    # one interpreter for the lot, except scripts that set up devices before their framework starts
    # (a synchronized step's XLA_FLAGS or TF logical CPUs): each of those gets its own
    alone = [i for i, text in enumerate(scripts) if _sets_up_devices(text)]
    batches = [[i for i in range(len(scripts)) if i not in alone]] + [[i] for i in alone]
    outputs = [""] * len(scripts)
    for batch in (b for b in batches if b):
        done = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPTS],
            input=json.dumps([scripts[i] for i in batch]),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert "\nOUTPUTS " in done.stdout, done.stderr[-3000:]
        for i, output in zip(batch, json.loads(done.stdout.rpartition("\nOUTPUTS ")[2]), strict=True):
            outputs[i] = output
    for example, text, output in zip(examples, scripts, outputs, strict=True):
        failed = _agree(adapter, *example, _printed(output))
        assert not failed, "\n".join(v.message() for v in failed) + f"\n{output[-1500:]}\n{text[-1500:]}"


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_a_long_drawn_array_is_written_as_the_draw_that_regenerates_it(dtype):
    """A repro of a 10^4-value example is a line: the seeded draw (with a few runs of values replaced,
    where a property put them in), which recomputes every value bit for bit (checked when written); an
    array no draw made is written compressed, in the narrowest dtype that
    holds it exactly."""
    from hypothesis import find

    from normconf.adapters import _repro
    from normconf.conformance import forcing, strategies, value_draws

    for kind in value_draws.VALUE_KINDS:
        token = forcing._KINDS.set((kind,))  # the values of this kind only
        try:
            _, x = find(strategies.values((3, 4000), dtype, 1, 4000, near=1e-3), lambda _: True)
        finally:
            forcing._KINDS.reset(token)
        source = _repro.values(x)
        assert len(source) < 300 and "b64decode" not in source, (kind, source[:300])
        again = np.asarray(eval(source, {"np": np}), dtype=np.float64)
        assert np.array_equal(again, x, equal_nan=True), kind
        # a script written elsewhere (a framework-alone script from the isolated child) gets the draws too
        packed = f"x = np.array({_packed(x)})"
        assert "b64decode" not in _repro.with_recipes(packed), kind
        if kind == "standard":  # a group made constant, a NaN put in (special-value properties): patched
            patched = x.copy()
            patched[1, :] = -3.0
            patched[2, 7] = np.nan
            source = _repro.values(patched)
            assert len(source) < 400 and "b64decode" not in source, source[:400]
            assert np.array_equal(np.asarray(eval(source, {"np": np})), patched, equal_nan=True)
    other = strategies.representable(np.linspace(-1, 1, 5000), dtype)  # not a draw: its bytes
    source = _repro.values(other)
    narrow = {"float16": "<f2", "bfloat16": "<f2", "float32": "<f4", "float64": "<f8"}[dtype]  # [-1, 1]
    assert f"'{narrow}'" in source and np.array_equal(np.asarray(eval(source, {"np": np})), other)


def _packed(array) -> str:
    """How a process that did not draw `array` writes it (compressed bytes)."""
    from normconf.adapters import _repro

    saved = dict(_repro._RECIPES), dict(_repro._RECENT)
    _repro._RECIPES.clear()
    _repro._RECENT.clear()
    try:
        return _repro.values(array)
    finally:
        _repro._RECIPES.update(saved[0])
        _repro._RECENT.update(saved[1])


@pytest.mark.clause("NUM.L6")
@pytest.mark.parametrize(
    "entry", [pytest.param(e, id=f"{e.clause}-{e.adapters}-{e.norm}") for e in KNOWN if e.bug]
)
def test_a_framework_bug_has_a_framework_alone_repro_that_still_shows_it(entry):
    """NUM.L6: a bug entry's example, in every installed adapter it names, is a script with the framework
    alone (what `normconf bugs --repro` prints for the upstream report); run in a fresh interpreter it
    prints the adapter's own numbers, or raises where the adapter raises. The meta-test shows those
    numbers are the bug (they diverge, as the entry's model says)."""
    names = observable_in(entry)  # as the meta-test that shows the numbers are the bug
    if not names:
        pytest.skip(f"none of {entry.adapters} is installed")
    case, dtype = entry.example_as_run()
    for name in names:
        adapter = adapters.get(name)
        script = framework_alone(entry, name)
        assert script and "normconf" not in script, f"{entry.clause} in {name}: no framework-alone repro"
        done = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPTS], input=json.dumps([script]), capture_output=True, text=True
        )
        assert "\nOUTPUTS " in done.stdout, done.stderr[-3000:]
        (output,) = json.loads(done.stdout.rpartition("\nOUTPUTS ")[2])
        try:
            outcome = adapter.run(entry.norm, case.x, case.params, dtype=dtype, cotangent=case.cotangent)
        except Exception as exc:  # the divergence is the refusal: the script alone refuses too
            assert output.startswith("RAISED"), (
                f"{name} raised {exc!r}; the script alone printed {output[:500]}"
            )
            continue
        failed = _agree(
            adapter, entry.norm, case.x, case.params, dtype, case.cotangent, outcome, _printed(output)
        )
        assert not failed, "\n".join(v.message() for v in failed) + f"\n{output[-1500:]}\n{script[-1500:]}"
