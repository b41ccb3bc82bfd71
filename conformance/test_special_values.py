"""NUM.N9: a NaN or ±inf in x stays in the groups it enters (non-finite exactly where the reference is,
within budget elsewhere), and an input with a zero-length axis normalizes to an empty output."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf.reference import NORMS
from normconf.vocabulary.case import Case

from . import checks, diagnosis, strategies
from .harness import reference_or_reject, run_or_reject

SPECIAL_VALUES = (math.nan, math.inf, -math.inf)
# norms whose records say an empty batch leaves every statistic defined
EMPTY_BATCH_NORMS = tuple(name for name, norm in NORMS.items() if norm.empty_batch)


@pytest.mark.targets(widest=True)
@pytest.mark.clause("NUM.N9", "NUM.N7")
@strategies.covering
@given(data=st.data())
def test_non_finite_inputs_stay_in_their_groups(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    clean = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    x = clean.x.copy()
    x.flat[data.draw(st.integers(0, x.size - 1), label="position")] = data.draw(
        st.sampled_from(SPECIAL_VALUES), label="value"
    )
    case = Case(target.norm, x, clean.params, clean.kind)
    # the budget of the clean input: the groups the special value does not enter have its statistics
    y_clean = getattr(expected := reference_or_reject(clean), "y", expected)
    y_ref = getattr(special := reference_or_reject(case), "y", special)
    outcome = run_or_reject(cell, case, "NUM.N9")
    bound = checks.budget(
        target.norm, clean.x, clean.params, y_clean, **declaration.budget_dtypes(target.dtype)
    )
    cell.check(
        clause="NUM.N9",
        what="y",
        actual=outcome.y,
        expected=y_ref,
        budget=bound,
        case=case,
        diagnose=diagnosis.of_output(target.norm, case, target.dtype),
        explained_by=clean,
    )


@pytest.mark.targets(norms=EMPTY_BATCH_NORMS, widest=True)
@pytest.mark.clause("NUM.N9")
@strategies.covering
@given(data=st.data())
def test_an_empty_batch_gives_an_empty_output(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    drawn = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    case = Case(target.norm, drawn.x[:0], drawn.params, drawn.kind)
    y_ref = getattr(expected := reference_or_reject(case), "y", expected)  # a batch axis normalized over: C1
    outcome = run_or_reject(cell, case, "NUM.N9")
    cell.check(
        clause="NUM.N9",
        what="y",
        actual=outcome.y,
        expected=y_ref,
        budget=(np.zeros(y_ref.shape), "NUM.N9"),
        case=case,
    )


# norms whose spec defines eps = 0 on a constant group: 0/0 = NaN there (NUM.N9; BN.N1, IN.E1, LN, GN,
# RMS and Lp on an all-zero row), every other group as with any eps
WELL_SCALED = ("standard", "integers", "positive")
EPS_ZERO_NORMS = tuple(name for name, norm in NORMS.items() if "eps" in norm.parameters())


def _constant_group(case: Case, value: float) -> Case:
    """`case` with eps = 0, no running state, and the first statistic's group set to `value` (0 for the
    norms without centring, whose 0/0 is an all-zero row)."""
    record = NORMS[case.norm]
    # batch statistics, no running state: the constant group's own 0/0 is what is judged (BN.S4)
    params = {key: value for key, value in case.params.items() if key != "state"} | {"eps": 0.0}
    view, axes, back = record.statistic_view(np.ones_like(case.x), params)
    first = np.zeros(np.sum(view, axis=axes, keepdims=True).shape)
    first.flat[0] = 1.0
    mask = np.broadcast_to(np.asarray(back(first)), case.x.shape) > 0
    return Case(case.norm, np.where(mask, value, case.x), params, case.kind)


@pytest.mark.targets(norms=EPS_ZERO_NORMS, widest=True)
@pytest.mark.clause("NUM.N9", "NUM.L4", "NUM.D2")
@strategies.covering
@given(data=st.data())
def test_eps_0_on_a_constant_group_is_nan_there(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    if "eps" in declaration.fixed():
        pytest.skip(f"{target.adapter} {target.norm} fixes eps at {declaration.fixed()['eps']!r}: no eps = 0")
    # well-scaled values around the constant group: its 0/0 is the point, not another regime's limits
    drawn = strategies.case(target.norm, declaration, target.dtype, kinds=WELL_SCALED)
    clean = data.draw(drawn, label="case")
    value = (
        0.0
        if not NORMS[target.norm].standardizing
        else data.draw(st.sampled_from([1.5, -3.0]), label="constant")
    )
    case = _constant_group(clean, value)
    y_ref = getattr(expected := reference_or_reject(case), "y", expected)
    outcome = run_or_reject(cell, case, "NUM.N9")
    with np.errstate(all="ignore"):  # the constant group's conditioning is 0/0 there, as its answer
        bound = checks.budget(
            target.norm, case.x, case.params, y_ref, **declaration.budget_dtypes(target.dtype)
        )
    cell.check(
        clause="NUM.N9",
        what="y",
        actual=outcome.y,
        expected=y_ref,
        budget=bound,
        case=case,
    )
