"""Smoke test: every adapter x every norm it declares, on a small input with the framework's own
defaults (as declared, in canonical terms), against the reference - in float64 where the framework
takes float64, else float32 under the tolerance model. Also: declarations are complete and cite
sources, and a framework that is not installed is skipped with its reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normconf import adapters
from normconf import reference as R
from normconf.adapters.base import CANONICAL_PARAMETERS, NORMS
from normconf.vocabulary import tolerances as T

CHANNELS, GROUPS, LRN_SIZE = 6, 3, 3
STANDARDIZING = {"batch_norm", "instance_norm", "layer_norm", "group_norm"}


def _pairs():
    for name in adapters.names():
        for norm in adapters.get(name).declarations:
            yield pytest.param(name, norm, id=f"{name}-{norm}")


def _input_and_params(declaration, rng):
    """A rank-4 input (N=2, C=6, H=3, W=4, C placed on the declared channel axis) and canonical params:
    the framework's defaults, plus what those leave open (groups, size, affine parameters, state)."""
    params = declaration.defaults()
    shape = [2, 3, 4]
    channel_axis = params.get("channel_axis", 1) % 4
    shape.insert(channel_axis, CHANNELS)
    x = rng.normal(size=shape)
    norm = declaration.norm
    if norm == "group_norm":
        params["groups"] = GROUPS
    if norm == "local_response_norm":
        params.setdefault("size", LRN_SIZE)
    if "axes" in params and params["axes"] is None:
        params["axes"] = tuple(range(x.ndim))
    if norm in ("batch_norm", "instance_norm", "group_norm", "sync_batch_norm"):
        params["scale"], params["offset"] = rng.normal(size=CHANNELS) + 1, rng.normal(size=CHANNELS)
    if norm == "sync_batch_norm":  # one sample per replica
        params["replica_sizes"] = (1,) * x.shape[0]
    if norm in ("layer_norm", "rms_norm"):
        param_shape = tuple(x.shape[a % x.ndim] for a in sorted(a % x.ndim for a in params["axes"]))
        params["scale"] = rng.normal(size=param_shape) + 1
    if norm == "channel_normalize":
        params["mean"], params["std"] = rng.normal(size=CHANNELS), rng.uniform(0.5, 2.0, size=CHANNELS)
    if declaration.stateful:
        params["state"] = R.RunningStats(rng.normal(size=CHANNELS), rng.uniform(0.5, 2.0, size=CHANNELS), 2)
    return x, params


def _reference(norm, x, params, dtype):
    ref_params = dict(params)
    if norm == "rms_norm" and ref_params.get("eps") is None:  # RMS.D1: the computation dtype's epsilon
        ref_params["eps"] = float(np.finfo(np.float64 if dtype == "float64" else np.float32).eps)
    return getattr(R, norm)(x, **ref_params)


def _reduction_length(norm, x, params):
    axes = params.get("axes")
    return {
        "batch_norm": x.size // CHANNELS,
        "sync_batch_norm": x.size // CHANNELS,
        "instance_norm": x.size // (CHANNELS * x.shape[0]),
        "group_norm": x.size // (GROUPS * x.shape[0]),
        "layer_norm": math.prod(x.shape[a] for a in axes) if axes else 1,
        "rms_norm": math.prod(x.shape[a] for a in axes) if axes else 1,
        "lp_normalize": math.prod(x.shape[a] for a in axes) if axes else 1,
        "local_response_norm": params.get("size", 1),
        "channel_normalize": 1,
    }[norm]


def _check(actual, expected, declaration, dtype, n, what):
    acc = declaration.accumulation.get(dtype, dtype)
    expected = np.asarray(expected, dtype=np.float64)
    budget = T.standardizing_budget(
        acc_dtype=acc, out_dtype=dtype, n=n, kappa=1.0, xhat=expected, scale=None, y_ref=expected
    )
    result = T.compare(actual, expected, budget, dtype)
    assert result.passed, (
        f"{declaration.api} {what} ({dtype}): worst error {result.worst_error:.3e} at "
        f"{result.index} vs budget {result.budget:.3e} ({result.ulps:.1f} ulps)"
    )


@pytest.mark.clause("NUM.N5")
@pytest.mark.parametrize("name, norm", list(_pairs()))
def test_adapter_agrees_with_reference_on_its_defaults(name, norm):
    """A known divergence (adapters/<family>/known.py) that explains a mismatch makes this an xfail."""
    try:
        _smoke(name, norm)
    except adapters.Unsupported as reason:  # the framework's defaults need something it cannot express
        pytest.skip(f"unsupported: {reason}")
    except AssertionError as failure:
        from normconf.conformance import divergences
        from normconf.vocabulary.case import Case

        x, params, dtype = _LAST[name, norm]
        known = divergences.explaining(name, norm, Case(norm, x, params, "standard"), dtype)
        if known is None:
            raise
        pytest.xfail(f"{known.clause}: {known.reason} ({failure})")


_LAST: dict = {}


def _smoke(name, norm):
    adapter = adapters.get(name)
    ok, reason = adapter.available()
    if not ok:
        pytest.skip(reason)
    declaration = adapter.declarations[norm]
    dtype = "float64" if "float64" in declaration.dtypes else "float32"
    rng = np.random.default_rng(3)
    x, params = _input_and_params(declaration, rng)
    x = x.astype(dtype).astype(np.float64)  # both sides see the same representable input
    n = _reduction_length(norm, x, params)
    _LAST[name, norm] = (x, params, dtype)
    g = rng.normal(size=x.shape) if declaration.gradients else None
    outcome = adapter.run(norm, x, params, dtype=dtype, cotangent=g)
    expected = _reference(norm, x, params, dtype)
    if declaration.stateful:
        _check(outcome.y, expected.y, declaration, dtype, n, "training output")
        _check(outcome.state.mean, expected.state.mean, declaration, dtype, n, "running mean")
        _check(outcome.state.var, expected.state.var, declaration, dtype, n, "running var")
        evaluated = adapter.run(norm, x, {**params, "state": outcome.state, "training": False}, dtype=dtype)
        eval_expected = _reference(norm, x, {**params, "state": expected.state, "training": False}, dtype)
        _check(evaluated.y, eval_expected.y, declaration, dtype, n, "eval output")
    else:
        _check(outcome.y, getattr(expected, "y", expected), declaration, dtype, n, "output")
    if g is not None:
        grads = getattr(R, f"{norm}_vjp")(g, x, **{k: v for k, v in _vjp_params(norm, params, dtype).items()})
        for key in ("x", "scale", "offset"):
            want = getattr(grads, key)
            if want is not None:  # a parameter's gradient sums every element that shares it
                terms = n if key == "x" else max(n, x.size // want.size)
                _check(getattr(outcome.grads, key), want, declaration, dtype, terms, f"d{key}")


def _vjp_params(norm, params, dtype):
    """The reference VJP's arguments: the same canonical parameters (training step, batch statistics)."""
    vjp_params = dict(params)
    if norm == "rms_norm" and vjp_params.get("eps") is None:
        vjp_params["eps"] = float(np.finfo(np.float64 if dtype == "float64" else np.float32).eps)
    return vjp_params


@pytest.mark.parametrize("name", adapters.names())
def test_declarations_are_complete_and_cite_sources(name):
    adapter = adapters.get(name)
    assert adapter.name == name
    for norm, declaration in adapter.declarations.items():
        assert norm in NORMS and declaration.norm == norm
        assert declaration.dtypes and set(declaration.dtypes) <= {"float16", "bfloat16", "float32", "float64"}
        assert set(declaration.accumulation) >= set(declaration.dtypes), (
            f"{declaration.api}: accumulation dtype per input dtype"
        )
        for convention in declaration.conventions:
            assert convention.source.startswith("https://"), (
                f"{declaration.api}.{convention.key} cites no source"
            )
        unknown = {c.key for c in declaration.conventions} & set(CANONICAL_PARAMETERS[norm])
        assert unknown <= set(CANONICAL_PARAMETERS[norm])


def test_importing_the_registry_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys; from normconf import adapters\n"
        "[adapters.get(n).declarations for n in adapters.names()]\n"
        "heavy = {'torch', 'tensorflow', 'jax', 'keras', 'onnxruntime', 'onnx', 'flax', 'haiku', 'equinox'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_unknown_adapter_names_the_known_ones():
    with pytest.raises(adapters.UnknownAdapter, match="torch.functional"):
        adapters.get("tensorflw")


def _declared_clauses():
    for name in adapters.names():
        for norm, declaration in adapters.get(name).declarations.items():
            for convention in declaration.conventions:
                if convention.clause:
                    yield pytest.param(
                        name,
                        declaration,
                        convention,
                        id=f"{name}-{norm}-{convention.key}",
                        marks=pytest.mark.clause(convention.clause),
                    )


@pytest.mark.parametrize("name, declaration, convention", list(_declared_clauses()))
def test_declared_convention_cites_a_divergence_of_its_norm(name, declaration, convention):
    """A convention that differs from the canonical one names the spec clause that explains it."""
    from normconf import spec

    clause = spec.clause(convention.clause)
    prefix = {
        "batch_norm": "BN",
        "instance_norm": "IN",
        "layer_norm": "LN",
        "group_norm": "GN",
        "rms_norm": "RMS",
        "local_response_norm": "LRN",
        "lp_normalize": "LP",
        "channel_normalize": "CN",
        "sync_batch_norm": "SBN",
    }[declaration.norm]
    assert clause.id.split(".")[0] in (prefix, "BN", "NUM"), (
        f"{declaration.api}.{convention.key} cites {clause.id}"
    )


@pytest.mark.clause("NUM.N1")
def test_conventions_page_is_generated_from_the_declarations():
    from normconf.adapters import conventions

    assert conventions.current() == conventions.generated(), "run `normconf conventions --write`"
