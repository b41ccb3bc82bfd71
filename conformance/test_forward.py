"""Forward agreement with the reference, for every adapter x norm x dtype (NUM.N5/N6 budgets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf.adapters.base import POLICIES
from normconf.reference import NORMS

from . import checks, diagnosis, strategies
from .harness import reference_or_reject, run_or_reject


def _clause(norm, params):
    """The clause this example exercises: eval mode with running statistics, equal-weighted pooling, or
    the plain forward equation."""
    clauses = NORMS[norm].clauses
    if params.get("training") is False and params.get("state") is not None:
        return clauses.eval
    if params.get("weighting") == "equal":
        return clauses.equal_weighting
    return clauses.forward


@pytest.mark.targets(policies=POLICIES)
@pytest.mark.clause(
    *(c for n in NORMS.values() for c in (n.clauses.forward, n.clauses.eval, n.clauses.equal_weighting) if c),
    "NUM.N5",
    "NUM.N6",
    "NUM.N7",
    "MP.S1",
    "MP.N1",
    "MP.N2",
)
@strategies.covering
@given(data=st.data())
def test_forward_matches_reference(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    case = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    expected = reference_or_reject(case)
    clause = _clause(target.norm, case.params)
    outcome = run_or_reject(cell, case, clause)
    y_ref = getattr(expected, "y", expected)
    bound = checks.budget(target.norm, case.x, case.params, y_ref, **declaration.budget_dtypes(target.dtype))
    cell.check(
        clause=clause,
        what="y",
        actual=outcome.y,
        expected=y_ref,
        budget=bound,
        case=case,
        diagnose=diagnosis.of_output(target.norm, case, target.dtype),
    )
    cell.check_dtype(
        clause="MP.N2",
        what="y",
        actual=outcome.dtype,
        expected=declaration.output_dtype(target.dtype),
        case=case,
    )
