"""Running statistics of every stateful norm: several training steps, then eval (BN.S2-S5, IN.S2-S3,
SBN.S3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf import reference as R
from normconf.adapters.base import POLICIES
from normconf.vocabulary import budgets
from normconf.vocabulary.case import Case
from normconf.vocabulary.models import Observation

from . import checks, diagnosis, strategies
from .harness import reference_or_reject, run_or_reject

STEPS = 3


STATEFUL = tuple(name for name, norm in R.NORMS.items() if norm.stateful)


@pytest.mark.targets(norms=STATEFUL, need=("stateful",), policies=POLICIES)
@pytest.mark.clause(
    *(c for n in STATEFUL for c in (R.NORMS[n].clauses.state, R.NORMS[n].clauses.eval)),
    "BN.S5",
    "BN.N3",
    "BN.N4",
)
@strategies.covering
@given(data=st.data())
def test_state_after_steps_then_eval(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    first = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    if "state" not in first.params:
        first.params["state"] = R.RunningStats.initial(first.x.shape[first.params["channel_axis"]])
    first.params["training"] = True
    clause, eval_clause = R.NORMS[target.norm].clauses.state, R.NORMS[target.norm].clauses.eval
    pdtype = declaration.parameter_dtype(target.dtype)
    ref_state = fw_state = pure_state = first.params["state"]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="batches_seed"))
    for step in range(STEPS):
        x = (
            first.x
            if step == 0
            else strategies.representable(first.x + rng.normal(size=first.x.shape), target.dtype)
        )
        ref_case = Case(target.norm, x, {**first.params, "state": ref_state}, first.kind)
        fw_case = Case(target.norm, x, {**first.params, "state": fw_state}, first.kind)
        expected = reference_or_reject(ref_case)
        pure_state = reference_or_reject(
            Case(target.norm, x, {**first.params, "state": pure_state}, first.kind)
        ).state
        outcome = run_or_reject(cell, fw_case, clause)
        excused = cell.expected
        dtypes = declaration.state_budget_dtypes(target.dtype)  # the state in float32 under a policy: MP.N1
        bounds = budgets.state_budget(target.norm, x, first.params, expected.state, ref_state, **dtypes)
        for what in ("mean", "var"):
            want, got, bound = getattr(expected.state, what), getattr(outcome.state, what), bounds[what]
            explain = lambda actual, b, what=what, case=ref_case: diagnosis.explain(  # noqa: E731
                target.norm, case.x, case.params, actual, lambda r: getattr(r.state, what), b, target.dtype
            )
            cell.check(
                clause=clause,
                what=f"step {step + 1} state.{what}",
                actual=got,
                expected=want,
                budget=bound,
                case=ref_case,
                diagnose=explain,
                # a divergence's model starts from the state the framework itself held
                observed=(Observation(fw_case, what, got, bound[0]),),
                dtype=pdtype,  # the state's own dtype (MP.N1)
            )
        # after a step a known divergence explained, the reference goes on from the framework's own
        # state: later steps are judged on their own update, not on that divergence carried forward
        ref_state, fw_state = (expected.state if cell.expected is excused else outcome.state), outcome.state
    # eval from the same state on both sides, the reference's own (never a divergence's carried
    # forward), so only the eval arithmetic is judged
    state = R.RunningStats(
        strategies.representable(pure_state.mean, pdtype),
        strategies.representable(pure_state.var, pdtype),
        pure_state.num_batches_tracked,
    )
    if not (np.all(np.isfinite(state.mean)) and np.all(np.isfinite(state.var))):
        return  # a state the dtype cannot hold (a float16 variance past 65504) is none a layer could load
    ref_case = Case(target.norm, first.x, {**first.params, "training": False, "state": state}, first.kind)
    expected = reference_or_reject(ref_case)
    outcome = run_or_reject(cell, ref_case, eval_clause)
    bound = checks.budget(
        target.norm, first.x, ref_case.params, expected.y, **declaration.budget_dtypes(target.dtype)
    )
    cell.check(
        clause=eval_clause,
        what="eval y",
        actual=outcome.y,
        expected=expected.y,
        budget=bound,
        case=ref_case,
    )
