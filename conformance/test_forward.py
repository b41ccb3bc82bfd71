"""Forward agreement with the reference, for every adapter x norm x dtype (NUM.N5/N6 budgets)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters

from . import checks, diagnosis, strategies
from .harness import reference_or_reject, run_or_reject

FORWARD_CLAUSE = {"batch_norm": "BN.S1", "instance_norm": "IN.S1", "layer_norm": "LN.S1", "group_norm": "GN.S1",
                  "rms_norm": "RMS.S1", "local_response_norm": "LRN.S1", "lp_normalize": "LP.S1",
                  "channel_normalize": "CN.S1", "sync_batch_norm": "SBN.S1"}
EVAL_CLAUSE = {"batch_norm": "BN.S3", "instance_norm": "IN.S2", "sync_batch_norm": "SBN.S3"}


def _clause(norm, params):
    if params.get("training") is False and params.get("state") is not None:
        return EVAL_CLAUSE[norm]
    if params.get("weighting") == "equal":
        return "SBN.S2"
    return FORWARD_CLAUSE[norm]


@pytest.mark.clause(*FORWARD_CLAUSE.values(), *EVAL_CLAUSE.values(), "SBN.S2", "NUM.N5", "NUM.N6", "NUM.N7")
@given(data=st.data())
def test_forward_matches_reference(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    case = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    expected = reference_or_reject(case)
    clause = _clause(target.norm, case.params)
    outcome = run_or_reject(cell, case, clause)
    y_ref = getattr(expected, "y", expected)
    acc = declaration.accumulation.get(target.dtype, target.dtype)
    bound = checks.budget(target.norm, case.x, case.params, y_ref, acc_dtype=acc, out_dtype=target.dtype)
    verdict = checks.check(clause, target.adapter, target.norm, target.dtype, "y", outcome.y, y_ref, bound, case.describe(),
                           diagnose=lambda actual, b: diagnosis.explain(target.norm, case.x, case.params, actual,
                                                                        lambda r: getattr(r, "y", r), b, target.dtype))
    cell.settle(verdict, case)
