"""A divergence's model applies to the step whose arithmetic it describes (issue 32's haiku BN.D8)."""

from __future__ import annotations

import numpy as np
import pytest

from normconf.conformance import checks
from normconf.reference import RunningStats
from normconf.vocabulary import OFFSET_ROWS, one_pass_model
from normconf.vocabulary.case import Case
from normconf.vocabulary.models import Observation, reference_value


@pytest.mark.clause("BN.D8", "NUM.N5")
@pytest.mark.parametrize("clip", [False, True])
def test_a_one_pass_model_does_not_excuse_an_eval_step(clip):
    """Eval with running statistics computes no batch variance: on offset rows, where the one-pass
    models' near-zero envelope allows any answer in training, an eval output 2.8e3 times its budget off
    is not what the model computes; the same offset in training is still excused there."""
    model = one_pass_model("float32", clip=clip)
    x = OFFSET_ROWS.T.copy()
    state = RunningStats(np.full(1, 1e4), np.full(1, 0.125), 3)
    for training in (False, True):
        case = Case(
            "batch_norm",
            x,
            {"channel_axis": -1, "eps": 2.0**-20, "training": training, "state": state},
            "offset",
        )
        y = np.asarray(reference_value(case, "y"))
        bound, _ = checks.budget("batch_norm", x, case.params, y, acc_dtype="float32", out_dtype="float32")
        wrong = y + 2.8e3 * np.asarray(bound)
        judged = model.judge([Observation(case, "y", wrong, bound)], "float32")
        assert judged.agrees == training, (training, judged)


@pytest.mark.clause("LN.D10", "SBN.S2")
@pytest.mark.parametrize("weighting", ["count", "equal"])
def test_the_held_divisor_gradient_takes_the_pooled_mean_of_synchronized_replicas(weighting):
    """LN.D10's model (the divisor's derivative lost): dx of (x - mean) / sigma with sigma held, where
    the mean is the replicas' pooled one - each value weighted 1/N (count) or 1/(R n_r) (equal, SBN.S2):
    the central difference of that function, exact for a function linear in x up to the float64
    rounding of the loss it differences (NUM.N5's unit roundoff and growth over its terms)."""
    from normconf import reference as R
    from normconf.vocabulary import tolerances as T
    from normconf.vocabulary.predicates import statistic_held

    rng = np.random.default_rng(5)
    x, g = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    params = {"channel_axis": 1, "eps": 0.1, "replica_sizes": (1, 3, 2), "weighting": weighting}
    case = Case("sync_batch_norm", x, params, "standard", cotangent=g)
    record = R.NORMS["sync_batch_norm"]
    sigma = record.standardized(x, (0,), params).divisor
    weights = record.mean_weights(x, (0,), params)

    def terms(values):
        return g * (values - np.sum(weights * values, axis=0, keepdims=True)) / sigma

    expected = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        bump = np.zeros_like(x)
        bump[i] = 1.0  # a linear function: any step is exact but for rounding, the unit one loses least
        expected[i] = (terms(x + bump).sum() - terms(x - bump).sum()) / 2.0
    rounding = T.SAFETY * T.unit_roundoff("float64") * T.growth(x.size) * np.abs(terms(x)).sum()
    budget = np.full(x.shape, rounding + T.SAFETY * T.unit_roundoff("float64") * np.abs(g / sigma).sum())
    held = statistic_held(case, "float32", "x")
    assert T.compare(held, expected, budget, "float64").passed
    # the whole batch's plain mean in its place is another gradient wherever the replicas' weights differ
    plain = (g - g.mean(axis=0, keepdims=True)) / sigma
    assert (weighting == "count") == T.compare(plain, expected, budget, "float64").passed
