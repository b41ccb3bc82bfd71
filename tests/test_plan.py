"""A plan (adapters/plan.py) is one record that `execute` runs and `render` writes: the script, run
alone, prints what the execution returned. Shown with NumPy as the framework, so it needs none."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from normconf.adapters import _repro
from normconf.adapters.plan import Block, Define, Get, Input, Plan, Runtime, Step, Symbol, execute, render

NUMPY = Runtime(
    imports=("import contextlib",),
    tensor=lambda value: np.asarray(value.value, dtype=value.dtype),
    tensor_source=lambda value: f"np.asarray({_repro.values(value.value)}, dtype={value.dtype!r})",
    numpy=lambda a: np.asarray(a, dtype=np.float64),
    numpy_source="v",
    aliases=(("numpy", "np"),),
)


def _printed(script: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(script, "plan", "exec"), {"__name__": "__main__"})
    return {
        name.strip(): np.asarray(eval(value), dtype=np.float64)
        for name, value in (line.split(" = ", 1) for line in out.getvalue().splitlines())
    }


def test_a_rendered_plan_prints_what_its_execution_returned():
    x = Input("x", [[1.0, 2.0], [3.0, 5.0]], "float32")
    plan = Plan(
        NUMPY,
        (
            Step("moments", Symbol("numpy.linalg.svd"), (x,), {"compute_uv": False}),
            Define("twice", ("a_",), (Step("b_", Symbol("numpy.multiply"), (Get("a_"), 2.0)),), Get("b_")),
            Block(
                "scope",
                Symbol("contextlib.nullcontext"),
                (),
                {},
                (Step("y", Get("twice"), (x,)), Step("largest", Symbol("numpy.max"), (Get("y"),))),
            ),
            Step("split", Symbol("numpy.split"), (Get("y"), 2), pick=1),
        ),
        grads={"x": Get("moments", "0")},
        after={"largest": Get("largest"), "row": Get("split"), "second": Get("moments", "1")},
    )
    ran = execute(plan)
    assert np.array_equal(ran.y, [[2.0, 4.0], [6.0, 10.0]]) and ran.after["largest"] == 10.0
    script = render(plan)
    assert (
        "normconf" not in script and "def twice(a_):" in script and "with contextlib.nullcontext()" in script
    )
    printed = _printed(script)
    assert np.array_equal(printed["y"], ran.y)
    assert np.array_equal(printed["grad['x']"], ran.grads["x"])
    for key, value in ran.after.items():
        assert np.array_equal(printed[f"after[{key!r}]"], value)


def test_a_symbol_is_read_as_the_script_reads_it_not_rebound_to_a_submodule():
    """`resolve` prefers a package's attribute to importing a submodule of the same name: importing
    `os.path` first would be harmless, but for a package exporting a function named like one of its
    modules (paddle's fused_rms_norm) the import would rebind the package attribute to the module."""
    from normconf.adapters.plan import resolve

    assert resolve("numpy.linalg.norm") is np.linalg.norm
    assert resolve("os.path.join") is __import__("os").path.join
