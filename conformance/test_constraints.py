"""Constraint clauses: what each framework does with an input the spec rejects. The reference raises
ClauseError (checked here again); the framework's answer is recorded, not judged - it may refuse it
too, or compute something - so a porter knows which mistakes a framework will not catch."""

from __future__ import annotations

import numpy as np
import pytest

from normconf import adapters
from normconf import reference as R

# norm -> [(clause, what is wrong, change(x, params) -> (x, params))], on a valid base input whose
# channels sit on the adapter's default channel axis
VIOLATIONS = {
    "batch_norm": [
        ("BN.C3", "eps < 0", lambda x, p: (x, {**p, "eps": -0.5})),
        (
            "BN.C4",
            "momentum > 1",
            lambda x, p: (
                x,
                {
                    **p,
                    "momentum": 1.5,
                    "training": True,
                    "state": R.RunningStats.initial(x.shape[p["channel_axis"]]),
                },
            ),
        ),
        (
            "BN.C7",
            "one value per channel, unbiased update",
            lambda x, p: (
                _one_per_channel(x, p["channel_axis"]),
                {
                    **p,
                    "training": True,
                    "running_var": "unbiased",
                    "state": R.RunningStats.initial(x.shape[p["channel_axis"]]),
                },
            ),
        ),
        ("BN.C8", "unknown eps placement", lambda x, p: (x, {**p, "eps_placement": "between"})),
    ],
    "instance_norm": [
        ("IN.C3", "eps < 0", lambda x, p: (x, {**p, "eps": -0.5})),
        ("IN.C8", "unknown normalizing variance", lambda x, p: (x, {**p, "normalize_var": "median"})),
    ],
    "layer_norm": [
        ("LN.C3", "eps < 0", lambda x, p: (x, {**p, "eps": -0.5})),
        (
            "LN.C5",
            "unbiased normalizing variance of one value",
            lambda x, p: (x[..., :1], {**p, "axes": (-1,), "normalize_var": "unbiased"}),
        ),
    ],
    "group_norm": [
        ("GN.C3", "groups do not divide the channels", lambda x, p: (x, {**p, "groups": 4})),
        ("GN.C4", "eps < 0", lambda x, p: (x, {**p, "eps": -0.5})),
        ("GN.C7", "unknown eps placement", lambda x, p: (x, {**p, "eps_placement": "between"})),
    ],
    "rms_norm": [
        ("RMS.C3", "eps < 0", lambda x, p: (x, {**p, "eps": -0.5})),
        ("RMS.C5", "unknown eps placement", lambda x, p: (x, {**p, "eps_placement": "between"})),
    ],
    "local_response_norm": [
        ("LRN.C3", "size = 0", lambda x, p: (x, {**p, "size": 0})),
        ("LRN.C4", "k = 0 with alpha = 0", lambda x, p: (x, {**p, "k": 0.0, "alpha": 0.0})),
    ],
    "lp_normalize": [
        ("LP.C3", "p = 0", lambda x, p: (x, {**p, "p": 0.0})),
        ("LP.C4", "eps < 0", lambda x, p: (x, {**p, "eps": -0.5})),
    ],
    "sync_batch_norm": [
        (
            "SBN.C1",
            "replica sizes that do not sum to the batch",
            lambda x, p: (x, {**p, "replica_sizes": (1, 2)}),
        ),
        ("SBN.C3", "unknown weighting", lambda x, p: (x, {**p, "weighting": "mean"})),
    ],
    "channel_normalize": [
        (
            "CN.C4",
            "a zero std and no floor",
            lambda x, p: (x, {**p, "std": np.zeros_like(p["std"]), "std_floor": 0.0}),
        )
    ],
}


def _one_per_channel(x: np.ndarray, axis: int) -> np.ndarray:
    return x[tuple(slice(None) if i == axis % x.ndim else slice(0, 1) for i in range(x.ndim))]


def _base(declaration) -> tuple[np.ndarray, dict]:
    """A valid (2, 6, 3, 4)-shaped input (6 channels on the default channel axis) and parameters."""
    params = declaration.defaults()
    axis = params.setdefault("channel_axis", 1) % 4
    shape = [2, 3, 4]
    shape.insert(axis, 6)
    x = np.random.default_rng(0).normal(size=shape)
    if declaration.norm == "rms_norm" and params.get("eps") is None:
        params["eps"] = 1e-6
    if declaration.norm in ("layer_norm", "rms_norm", "lp_normalize"):
        params.pop("channel_axis")
    if "axes" in params and params["axes"] is None:  # a framework default of "every axis"
        params["axes"] = tuple(range(x.ndim))
    if declaration.norm == "group_norm":
        params["groups"] = 3
    if declaration.norm == "sync_batch_norm":  # one sample per replica
        params["replica_sizes"] = (1, 1)
    if declaration.norm == "local_response_norm" and params.get("size") is None:
        params["size"] = 3
    if declaration.norm == "channel_normalize":
        params["mean"], params["std"] = np.zeros(6), np.ones(6)
    return x, params


def _answer(adapter, norm, x, params, dtype) -> str:
    try:
        y = adapter.run(norm, x, params, dtype=dtype).y
    except adapters.Unsupported as exc:
        return f"not expressible: {exc}"
    except Exception as exc:  # what the framework says to the invalid input
        return (
            f"refused: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
        )
    return "accepted, output finite" if np.all(np.isfinite(y)) else "accepted, output with NaN or inf"


@pytest.mark.targets(widest=True)
@pytest.mark.clause(*sorted({clause for rows in VIOLATIONS.values() for clause, _, _ in rows}))
def test_constraint_violations_are_recorded(target, cell):
    adapter = adapters.get(target.adapter)
    declaration = adapter.declarations[target.norm]
    x, params = _base(declaration)
    for clause, wrong, change in VIOLATIONS.get(target.norm, []):
        bad_x, bad = change(x, params)
        with pytest.raises(R.ClauseError, match=rf"\[{clause}\]"):
            getattr(R, target.norm)(bad_x, **bad)
        cell.observations.append(
            f"{clause} ({wrong}): {_answer(adapter, target.norm, bad_x, bad, target.dtype)}"
        )
