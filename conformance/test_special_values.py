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
    case = strategies.Case(target.norm, x, clean.params, clean.kind)
    # the budget of the clean input: the groups the special value does not enter have its statistics
    y_clean = getattr(expected := reference_or_reject(clean), "y", expected)
    y_ref = getattr(special := reference_or_reject(case), "y", special)
    outcome = run_or_reject(cell, case, "NUM.N9")
    acc = declaration.accumulation.get(target.dtype, target.dtype)
    bound = checks.budget(target.norm, clean.x, clean.params, y_clean, acc_dtype=acc, out_dtype=target.dtype)
    cell.settle(
        checks.check(
            "NUM.N9",
            target.adapter,
            target.norm,
            target.dtype,
            "y",
            outcome.y,
            y_ref,
            bound,
            case.describe(),
            diagnose=lambda actual, b: diagnosis.explain(
                target.norm, case.x, case.params, actual, lambda r: getattr(r, "y", r), b, target.dtype
            ),
        ),
        case,
        explained_by=clean,
    )


@pytest.mark.targets(norms=EMPTY_BATCH_NORMS, widest=True)
@pytest.mark.clause("NUM.N9")
@strategies.covering
@given(data=st.data())
def test_an_empty_batch_gives_an_empty_output(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    drawn = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    case = strategies.Case(target.norm, drawn.x[:0], drawn.params, drawn.kind)
    y_ref = getattr(expected := reference_or_reject(case), "y", expected)  # a batch axis normalized over: C1
    outcome = run_or_reject(cell, case, "NUM.N9")
    cell.settle(
        checks.check(
            "NUM.N9",
            target.adapter,
            target.norm,
            target.dtype,
            "y",
            outcome.y,
            y_ref,
            (np.zeros(y_ref.shape), "NUM.N9"),
            case.describe(),
        ),
        case,
    )
