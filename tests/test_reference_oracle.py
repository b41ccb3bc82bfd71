"""The reference against the independent 256-bit oracle: forward, running state and VJPs, on
ordinary and nasty inputs. Error is relative to the output's scale; the budget is NUM.N4."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import (
    CASES,
    VALUE_KINDS,
    affine_params,
    constant_channel,
    initial_state,
)

from normconf.vocabulary.tolerances import reference_budget, relative_error


def _inputs(case, kind, seed, plant_constant):
    rng = np.random.default_rng(seed)
    x = VALUE_KINDS[kind](rng, case.shape)
    if plant_constant:
        x = constant_channel(x, case.channel_axis)
    return rng, x


def _cases(clause: str):
    """Every case, citing its `clause` ("forward_clause" or "vjp_clause") and NUM.N4."""
    return [
        pytest.param(case, id=case.name, marks=pytest.mark.clause(getattr(case, clause), "NUM.N4"))
        for case in CASES
    ]


def _assert_close(actual, exact, n, what):
    err = relative_error(actual, oracle.to_float(np.asarray(exact, dtype=object)))
    assert err <= reference_budget(n), (
        f"{what}: error {err:.3e} x scale exceeds budget {reference_budget(n):.3e}"
    )


@pytest.mark.parametrize("plant_constant", [False, True], ids=["varied", "constant_channel"])
@pytest.mark.parametrize("kind", sorted(VALUE_KINDS))
@pytest.mark.parametrize("case", _cases("forward_clause"))
def test_forward_matches_oracle(case, kind, plant_constant):
    rng, x = _inputs(case, kind, 1, plant_constant)
    params = {**case.params, **affine_params(case, rng)}
    if case.returns_state:
        ref_state, oracle_state = initial_state(case, rng)
        for training in (True, False):
            result = case.forward(x, **params, training=training, state=ref_state)
            y, state = case.oracle(x, **params, training=training, state=oracle_state)
            _assert_close(result.y, y, case.reduction_length, f"y (training={training})")
            if training:
                _assert_close(result.state.mean, state[0], case.reduction_length, "running mean")
                _assert_close(result.state.var, state[1], case.reduction_length, "running var")
                assert result.state.num_batches_tracked == state[2]
    else:
        _assert_close(case.forward(x, **params), case.oracle(x, **params), case.reduction_length, "y")


@pytest.mark.parametrize("kind", ["standard", "offset_1e8", "mixed_sign_integers"])
@pytest.mark.parametrize("case", _cases("vjp_clause"))
def test_vjp_matches_central_differences(case, kind):
    rng, x = _inputs(case, kind, 2, plant_constant=kind == "standard")
    params = {**case.params, **affine_params(case, rng)}
    g = rng.normal(size=case.shape)
    modes = (
        [{"training": True}, {"training": False, "state": initial_state(case, rng)}]
        if case.returns_state
        else [{}]
    )
    for mode in modes:
        ref_mode = dict(mode)
        oracle_mode = dict(mode)
        if "state" in mode:
            ref_mode["state"], oracle_mode["state"] = mode["state"]
        grads = case.vjp(g, x, **params, **ref_mode)
        arrays = {"x": x, **{k: params[k] for k in ("scale", "offset") if k in params}}
        others = {k: v for k, v in params.items() if k not in arrays}
        for name in arrays:
            exact = oracle.numeric_vjp(case.oracle, g, arrays, name, **others, **oracle_mode)
            _assert_close(
                getattr(grads, name), exact, case.reduction_length, f"d{name} {mode.get('training', '')}"
            )
