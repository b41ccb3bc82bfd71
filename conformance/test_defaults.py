"""Declared defaults are the framework's own: the layer or function called with nothing but what it
requires must agree with the reference run on the adapter's declared defaults (the conventions of
spec/conventions.md). A wrong declaration would turn every mapped comparison into a false verdict."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf.reference import NORMS
from normconf.vocabulary import budgets
from normconf.vocabulary import tolerances as T
from normconf.vocabulary.case import Case

from . import checks, strategies
from .harness import reference_or_reject, run_or_reject

# the clause on each norm's page that lists the frameworks' defaults (a wrong declaration is cited by it)
CLAUSES = (*(n.clauses.defaults for n in NORMS.values() if n.clauses.defaults), "BN.D1", "BN.D2", "RMS.D1")


@pytest.mark.targets(widest=True, no_argument_call=True)
@pytest.mark.clause(*CLAUSES)
@strategies.covering
@given(data=st.data())
def test_declared_defaults_are_the_framework_defaults(target, cell, data):
    adapter = adapters.get(target.adapter)
    declaration = adapter.declarations[target.norm]
    defaults = declaration.defaults()
    # what the call needs beyond the defaults: the framework's default where it declares one
    hints = {key: defaults.get(key, value) for key, value in NORMS[target.norm].needs.items()}
    rank = data.draw(st.sampled_from([3, 4]), label="rank")
    shape = list(data.draw(st.sampled_from(strategies.SHAPE_POOL[rank]), label="shape"))
    axis = defaults.get("channel_axis", 1) % rank
    shape[axis] = hints.get("groups", 1) * data.draw(st.sampled_from([1, 2, 3]), label="channels_per_group")
    kind, x = data.draw(
        strategies.values(tuple(shape), target.dtype, axis, math.prod(shape) // shape[axis]), label="values"
    )
    # the case as far as known before the call (the call may imply a state and mode, see below)
    case = Case(target.norm, x, {**defaults, **hints}, kind)
    outcome, implied = run_or_reject(
        cell,
        case,
        NORMS[target.norm].clauses.defaults,
        call=lambda: adapter.run_framework_defaults(target.norm, x, hints, dtype=target.dtype),
    )
    params = {**defaults, **hints, **implied}
    if target.norm == "rms_norm" and params.get("eps") is None:  # RMS.D1: the computation dtype's epsilon
        params["eps"] = T.finfo("float64" if target.dtype == "float64" else "float32").eps
    case = Case(target.norm, x, params, kind)
    expected = reference_or_reject(case)
    y_ref = getattr(expected, "y", expected)
    bound = checks.budget(target.norm, x, params, y_ref, **declaration.budget_dtypes(target.dtype))
    cell.check(
        clause=NORMS[target.norm].clauses.defaults,
        what="default y",
        actual=outcome.y,
        expected=y_ref,
        budget=bound,
        case=case,
    )
    if outcome.state is not None and getattr(expected, "state", None) is not None:
        dtypes = declaration.state_budget_dtypes(target.dtype)
        for what, bound in budgets.state_budget(
            target.norm, x, params, expected.state, params["state"], **dtypes
        ).items():
            cell.check(
                clause="BN.D2",
                what=f"default state.{what}",
                actual=getattr(outcome.state, what),
                expected=getattr(expected.state, what),
                budget=bound,
                case=case,
            )
