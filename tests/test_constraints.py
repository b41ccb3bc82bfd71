"""Every C-clause: invalid input raises ClauseError naming the clause and the parameter, and the
reference writes nothing (inputs and state are left as they were)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from normconf import reference as R

X3 = np.arange(24, dtype=float).reshape(2, 3, 4)
STATE = R.RunningStats.initial(3)

# (clause, parameter, call). Each call must raise ClauseError for exactly that clause and parameter.
VIOLATIONS = [
    ("BN.C1", "x", lambda: R.batch_norm(np.ones(5))),
    ("SBN.C1", "replica_sizes", lambda: R.sync_batch_norm(X3, replica_sizes=(1, 2))),
    ("SBN.C1", "replica_sizes", lambda: R.sync_batch_norm(X3, replica_sizes=(2, 0))),
    ("SBN.C1", "replica_sizes", lambda: R.sync_batch_norm(X3, replica_sizes=())),
    ("SBN.C2", "channel_axis", lambda: R.sync_batch_norm(X3, replica_sizes=(1, 1), channel_axis=0)),
    ("SBN.C3", "weighting", lambda: R.sync_batch_norm(X3, replica_sizes=(1, 1), weighting="mean")),
    ("BN.C7", "x", lambda: R.sync_batch_norm(np.ones((1, 3)), replica_sizes=(1,), state=STATE)),
    ("BN.C1", "x", lambda: R.batch_norm(np.ones((0, 3)))),
    ("BN.C1", "x", lambda: R.batch_norm(np.array([[1 + 2j]]))),
    ("BN.C2", "channel_axis", lambda: R.batch_norm(X3, channel_axis=3)),
    ("BN.C3", "eps", lambda: R.batch_norm(X3, eps=-1e-5)),
    ("BN.C3", "eps", lambda: R.batch_norm(X3, eps=float("nan"))),
    ("BN.C4", "momentum", lambda: R.batch_norm(X3, state=STATE, momentum=1.5)),
    ("BN.C5", "scale", lambda: R.batch_norm(X3, scale=np.ones(4))),
    ("BN.C5", "state.var", lambda: R.batch_norm(X3, state=R.RunningStats(np.zeros(3), np.ones(2)))),
    ("BN.C5", "state.mean", lambda: R.batch_norm(X3, state=R.RunningStats(None, np.ones(3)))),
    (
        "BN.C5",
        "state.num_batches_tracked",
        lambda: R.batch_norm(X3, state=R.RunningStats(np.zeros(3), np.ones(3), -1)),
    ),
    ("BN.C6", "running_var", lambda: R.batch_norm(X3, state=STATE, running_var="sample")),
    ("BN.C6", "training", lambda: R.batch_norm(X3, training="yes")),
    ("BN.C7", "x", lambda: R.batch_norm(np.ones((1, 3)), state=STATE)),
    ("BN.C8", "normalize_var", lambda: R.batch_norm(X3, normalize_var="sample")),
    ("BN.C8", "x", lambda: R.batch_norm(np.ones((1, 3)), normalize_var="unbiased")),
    ("IN.C8", "eps_placement", lambda: R.instance_norm(X3, eps_placement="outside")),
    ("LN.C5", "eps_placement", lambda: R.layer_norm(X3, eps_placement="outside")),
    ("LN.C5", "x", lambda: R.layer_norm(np.ones((2, 1)), normalize_var="unbiased")),
    ("GN.C7", "normalize_var", lambda: R.group_norm(X3, groups=3, normalize_var=None)),
    ("RMS.C5", "eps_placement", lambda: R.rms_norm(X3, eps=1e-3, eps_placement="add")),
    ("IN.C1", "x", lambda: R.instance_norm(np.ones((2, 3)))),
    ("IN.C2", "channel_axis", lambda: R.instance_norm(X3, channel_axis=0)),
    ("IN.C3", "eps", lambda: R.instance_norm(X3, eps=-1.0)),
    ("IN.C4", "momentum", lambda: R.instance_norm(X3, state=STATE, momentum=-0.1)),
    ("IN.C5", "offset", lambda: R.instance_norm(X3, offset=np.ones((3, 1)))),
    ("IN.C6", "running_var", lambda: R.instance_norm(X3, state=STATE, running_var=None)),
    ("IN.C7", "x", lambda: R.instance_norm(np.ones((2, 3, 1)), state=STATE)),
    ("LN.C1", "x", lambda: R.layer_norm(np.float64(3.0))),
    ("LN.C1", "x", lambda: R.layer_norm(np.ones((2, 0)))),
    ("LN.C2", "axes", lambda: R.layer_norm(X3, axes=(1, -2))),
    ("LN.C2", "axes", lambda: R.layer_norm(X3, axes=())),
    ("LN.C3", "eps", lambda: R.layer_norm(X3, eps=float("inf"))),
    ("LN.C4", "scale", lambda: R.layer_norm(X3, axes=(1, 2), scale=np.ones(12))),
    ("GN.C1", "x", lambda: R.group_norm(np.ones(3), groups=1)),
    ("GN.C1", "x", lambda: R.group_norm(np.ones((2, 0, 3)), groups=1)),
    ("GN.C2", "channel_axis", lambda: R.group_norm(X3, groups=1, channel_axis=0)),
    ("GN.C3", "groups", lambda: R.group_norm(X3, groups=2)),
    ("GN.C3", "groups", lambda: R.group_norm(X3, groups=0)),
    ("GN.C4", "eps", lambda: R.group_norm(X3, groups=3, eps=-0.5)),
    ("GN.C5", "scale", lambda: R.group_norm(X3, groups=3, scale=np.ones(1))),
    ("GN.C6", "assignment", lambda: R.group_norm(X3, groups=3, assignment="random")),
    ("RMS.C1", "x", lambda: R.rms_norm(np.float64(1.0), eps=1e-6)),
    ("RMS.C1", "x", lambda: R.rms_norm(np.ones((3, 0)), eps=1e-6)),
    ("RMS.C2", "axes", lambda: R.rms_norm(X3, axes=(5,), eps=1e-6)),
    ("RMS.C3", "eps", lambda: R.rms_norm(X3, eps=-1e-6)),
    ("RMS.C4", "offset", lambda: R.rms_norm(X3, eps=1e-6, offset=np.ones(3))),
    ("LRN.C1", "x", lambda: R.local_response_norm(np.ones(4), size=3)),
    ("LRN.C2", "channel_axis", lambda: R.local_response_norm(X3, size=3, channel_axis=-4)),
    ("LRN.C3", "size", lambda: R.local_response_norm(X3, size=0)),
    ("LRN.C3", "size", lambda: R.local_response_norm(X3, size=2.5)),
    ("LRN.C4", "alpha", lambda: R.local_response_norm(X3, size=3, alpha=-1.0)),
    ("LRN.C4", "k", lambda: R.local_response_norm(X3, size=3, k=0.0)),
    ("LRN.C4", "beta", lambda: R.local_response_norm(X3, size=3, beta=float("nan"))),
    ("LRN.C5", "extra", lambda: R.local_response_norm(X3, size=4, extra="centre")),
    ("LRN.C5", "alpha_over_size", lambda: R.local_response_norm(X3, size=4, alpha_over_size=1)),
    ("LP.C1", "x", lambda: R.lp_normalize(np.float64(2.0))),
    ("LP.C1", "x", lambda: R.lp_normalize(np.ones((3, 0, 2)))),
    ("LP.C2", "axes", lambda: R.lp_normalize(np.ones(3), axes=(1,))),
    ("LP.C3", "p", lambda: R.lp_normalize(X3, p=0.5)),
    ("LP.C4", "eps", lambda: R.lp_normalize(X3, eps=-1e-12)),
    ("LP.C5", "eps_placement", lambda: R.lp_normalize(X3, eps_placement="clamp")),
    ("CN.C1", "x", lambda: R.channel_normalize(np.float64(1.0), mean=[0.0], std=[1.0])),
    ("CN.C2", "channel_axis", lambda: R.channel_normalize(np.ones((2, 2)), mean=[0.0], std=[1.0])),
    ("CN.C3", "mean", lambda: R.channel_normalize(X3, mean=[0.0, 1.0], std=[1.0], channel_axis=1)),
    ("CN.C4", "std", lambda: R.channel_normalize(X3, mean=[0.0], std=[1.0, 0.0, 2.0], channel_axis=1)),
    ("CN.C4", "std", lambda: R.channel_normalize(X3, mean=[0.0], std=[-1.0], channel_axis=1)),
    (
        "CN.C4",
        "std_floor",
        lambda: R.channel_normalize(X3, mean=[0.0], std=[1.0], channel_axis=1, std_floor=-1.0),
    ),
]


@pytest.mark.parametrize(
    "clause, parameter, call",
    [
        pytest.param(c, p, f, id=f"{c}-{p}-{i}", marks=pytest.mark.clause(c))
        for i, (c, p, f) in enumerate(VIOLATIONS)
    ],
)
def test_violation_raises_clause_error(clause, parameter, call):
    before = (X3.copy(), copy.deepcopy(STATE))
    with pytest.raises(R.ClauseError) as info:
        call()
    assert (info.value.clause, info.value.parameter) == (clause, parameter)
    assert str(info.value).startswith(f"[{clause}] {parameter}:")
    np.testing.assert_array_equal(X3, before[0])
    np.testing.assert_array_equal(STATE.mean, before[1].mean)
    np.testing.assert_array_equal(STATE.var, before[1].var)


@pytest.mark.clause("BN.C6", "LN.C2")
def test_clause_error_is_a_value_error():
    """Callers that catch ValueError (the Python convention for bad arguments) catch these too."""
    with pytest.raises(ValueError):
        R.layer_norm(X3, axes=(7,))


def test_every_constraint_clause_has_a_violation_here():
    """Each C clause of the spec is exercised above: a new constraint comes with its error test."""
    from normconf import spec

    constraints = {
        c for c in spec.clauses() if c.split(".")[1].startswith("C") and c.split(".")[1][1:].isdigit()
    }
    assert constraints - {clause for clause, _, _ in VIOLATIONS} == set()
