"""Synchronized BatchNorm across replicas (spec/sync_batch_norm.md): with equal batches a synchronized
step is the single-device step on the concatenated batch (SBN.N1), whatever the pooling; with unequal
batches the framework pools as it declares (SBN.P2), and which pooling it was is recorded.
(The general properties - forward, gradients, running statistics, special values - run for
`sync_batch_norm` as for every norm.)"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf import reference as R
from normconf.vocabulary import budgets
from normconf.vocabulary.case import Case

from . import checks, strategies
from .harness import reference_or_reject, run_or_reject

SYNC = ("sync_batch_norm",)


def _equal_batches(case: Case) -> Case:
    """`case` with every replica cut to the smallest replica's batch."""
    sizes = case.params["replica_sizes"]
    rows = min(sizes)
    parts = np.split(case.x, np.cumsum(sizes)[:-1], axis=0)
    x = np.concatenate([part[:rows] for part in parts])
    return Case(case.norm, x, {**case.params, "replica_sizes": (rows,) * len(sizes)}, case.kind)


@pytest.mark.targets(norms=SYNC)
@pytest.mark.clause("SBN.N1", "SBN.N2", "SBN.S3")
@strategies.covering
@given(data=st.data())
def test_equal_batches_match_one_device_on_the_concatenation(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    case = _equal_batches(data.draw(strategies.case(target.norm, declaration, target.dtype), label="case"))
    single = {k: v for k, v in case.params.items() if k not in ("replica_sizes", "weighting")}
    expected = reference_or_reject(Case("batch_norm", case.x, single, case.kind))
    outcome = run_or_reject(cell, case, "SBN.N1")
    bound = checks.budget("batch_norm", case.x, single, expected.y, **declaration.budget_dtypes(target.dtype))
    cell.check(
        clause="SBN.N1",
        what="y",
        actual=outcome.y,
        expected=expected.y,
        budget=bound,
        case=case,
    )
    if expected.state is not None and case.params.get("training", True):
        dtypes = declaration.state_budget_dtypes(target.dtype)
        for what, bound in budgets.state_budget(
            "batch_norm", case.x, single, expected.state, single["state"], **dtypes
        ).items():
            cell.check(
                clause="SBN.S3",
                what=f"state.{what}",
                actual=getattr(outcome.state, what),
                expected=getattr(expected.state, what),
                budget=bound,
                case=case,
            )


# SBN.E1's batches, three channels apart: replica 1 holds three rows, replica 2 one row far off
UNEQUAL = np.array([[0.0, 1.0, -2.0], [2.0, 3.0, -1.0], [4.0, 2.0, 0.5], [6.0, 9.0, 4.0]])


@pytest.mark.targets(norms=SYNC, widest=True)
@pytest.mark.clause("SBN.P2", "SBN.D1", "SBN.D2")
def test_unequal_batches_pool_as_declared(target, cell):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    declared = declaration.fixed().get("weighting", "count")
    params = {
        "replica_sizes": (3, 1),
        "weighting": declared,
        "eps": 1e-3,
        "training": True,
        "channel_axis": 1,
        "running_var": declaration.fixed().get("running_var", "unbiased"),
    }  # unused (no state), but declared
    x = strategies.representable(UNEQUAL, target.dtype)
    case = Case(target.norm, x, params, "standard")
    try:
        outcome = adapters.get(target.adapter).run(target.norm, x, params, dtype=target.dtype)
    except adapters.Unsupported as exc:  # e.g. a library whose replicas all hold equal shards
        cell.unsupported[str(exc)] = 1
        return
    matches = []
    for weighting in ("count", "equal"):
        want = R.sync_batch_norm(x, **{**params, "weighting": weighting}).y
        weighted = {**params, "weighting": weighting}
        bound = checks.budget(target.norm, x, weighted, want, **declaration.budget_dtypes(target.dtype))
        verdict = checks.check(
            "SBN.P2",
            target.adapter,
            target.norm,
            target.dtype,
            f"y ({weighting} weighting)",
            outcome.y,
            want,
            bound,
            case.describe(),
        )
        if verdict.passed:
            matches.append(weighting)
        if weighting == declared:
            declared_verdict = verdict
    cell.observations.append(
        f"replica batches of 3 and 1 rows: pools {' / '.join(matches) or 'neither way'} "
        f"(declared: {declared})"
    )
    cell.settle(declared_verdict, case)
