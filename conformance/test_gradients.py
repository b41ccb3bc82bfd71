"""Gradients (x, scale, offset) from the framework's autodiff against the reference VJPs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf.adapters.base import POLICIES
from normconf.reference import NORMS

from . import checks, diagnosis, strategies
from .harness import reference_or_reject, run_or_reject


@pytest.mark.targets(need=("gradients",), policies=POLICIES)
@pytest.mark.clause(*(n.clauses.vjp for n in NORMS.values()), "NUM.N8")
@strategies.covering
@given(data=st.data())
def test_gradients_match_reference_vjp(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    case = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    seed = data.draw(st.integers(0, 2**16), label="cotangent_seed")
    g = strategies.cotangent(seed, case.x.shape, declaration.output_dtype(target.dtype))
    case.cotangent = g  # divergences that depend on the cotangent's size see it
    expected = reference_or_reject(case, vjp_of=g)
    clause = NORMS[target.norm].clauses.vjp
    outcome = run_or_reject(cell, case, clause, cotangent=g)
    want = {key: getattr(expected, key) for key in ("x", "scale", "offset")}
    bounds = checks.gradient_budget(
        target.norm,
        case.x,
        case.params,
        g,
        want,
        **declaration.gradient_budget_dtypes(target.dtype),
        seed=seed,
    )
    for key, bound in bounds.items():
        cell.check(
            clause=clause,
            what=f"d{key}",
            actual=getattr(outcome.grads, key),
            expected=want[key],
            budget=(bound, "NUM.N8"),
            case=case,
            dtype=None if key == "x" else declaration.parameter_dtype(target.dtype),  # MP.N1
            diagnose=lambda actual, b, key=key: diagnosis.explain(
                target.norm, case.x, case.params, actual, lambda r: getattr(r, key), b, target.dtype, vjp_of=g
            ),
        )
