"""What a failing implementation probably does instead: the conventions the spec knows, tried one by one.

When an output disagrees with the reference, the reference is re-run under each alternative convention
of the norm (eps outside the root, unbiased variance, the other group assignment, a window one channel
wider or narrower, ...). One that agrees within the same budget is named in the failure message with
its clause, and with the declaration that would make the suite check against it when it is intended.
"""

from __future__ import annotations

import numpy as np

from normconf import reference as R
from normconf.vocabulary import tolerances as T

# conventions an implementation may declare (adapters/plugin.py); the other alternatives are bugs
DECLARABLE = {"eps_placement", "normalize_var", "running_var", "assignment", "alpha_over_size", "extra"}


def _other(key, a, b):
    return lambda p: {key: b if p.get(key, a) == a else a}


DIVISOR = [
    ("eps outside the square root", lambda p: {"eps_placement": "outside_sqrt"}),
    ("the unbiased variance normalizes", lambda p: {"normalize_var": "unbiased"}),
    (
        "the unbiased variance normalizes, eps outside the square root",
        lambda p: {"normalize_var": "unbiased", "eps_placement": "outside_sqrt"},
    ),
]
RUNNING = [
    ("the other running-variance estimator", _other("running_var", "unbiased", "biased")),
    (
        "momentum weights the old value (canonical = 1 - momentum)",
        lambda p: None if p.get("momentum") is None else {"momentum": 1.0 - p["momentum"]},
    ),
]


def _resized(p, by: int, extra: str):
    """An LRN window `by` channels longer, the same alpha / size factor (only the window is wrong)."""
    size = p["size"] + by
    if size < 1:  # an empty window: nothing but k divides
        return {"alpha": 0.0}
    alpha = (
        p.get("alpha", 1e-4) * size / p["size"] if p.get("alpha_over_size", True) else p.get("alpha", 1e-4)
    )
    return {"size": size, "alpha": alpha, "extra": extra}


# norm -> [(clause, what the implementation does instead, change(params) -> the params that say so)]
ALTERNATIVES = {
    "batch_norm": [("BN.N1/BN.N2", *d) for d in DIVISOR] + [("BN.N3/BN.N4", *r) for r in RUNNING],
    "instance_norm": [("IN.N1", *d) for d in DIVISOR] + [("BN.N3/BN.N4", *r) for r in RUNNING],
    "layer_norm": [("LN.N1", *d) for d in DIVISOR],
    "group_norm": [("GN.N1", *d) for d in DIVISOR]
    + [("GN.P4", "channels grouped the other way", _other("assignment", "contiguous", "interleaved"))],
    "rms_norm": [
        ("RMS.N1", "eps outside the square root", lambda p: {"eps_placement": "outside_sqrt"}),
        (
            "RMS.N3",
            "the scale is applied as 1 + scale (if that is intended, declare scale_form='one_plus')",
            lambda p: None if p.get("scale") is None else {"scale": 1.0 + np.asarray(p["scale"])},
        ),
    ],
    "local_response_norm": [
        (
            "LRN.N1",
            "the window is one channel short (its extra channel before)",
            lambda p: _resized(p, -1, "before"),
        ),
        (
            "LRN.N1",
            "the window is one channel short (its extra channel after)",
            lambda p: _resized(p, -1, "after"),
        ),
        ("LRN.N1", "the window is one channel too long", lambda p: _resized(p, +1, p.get("extra", "before"))),
        ("LRN.N2", "alpha not divided by the size", _other("alpha_over_size", True, False)),
        ("LRN.N3", "the even window's extra channel on the other side", _other("extra", "before", "after")),
    ],
    "lp_normalize": [
        ("LP.N1", f"eps placed as {placement!r}", lambda p, placement=placement: {"eps_placement": placement})
        for placement in ("max_norm", "max_power_sum", "add_norm", "none", "none_or_zero")
    ],
}


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(a, b)
    return a == b


def explain(norm: str, x: np.ndarray, params: dict, actual, pick, bound, dtype: str, vjp_of=None) -> str:
    """A sentence naming the alternative convention under which the reference agrees with `actual`
    (`pick(result)` takes the compared quantity from a reference result - the VJP's, given the output
    cotangent `vjp_of`; `bound` is the budget), or ""."""
    for clause, what, change in ALTERNATIVES.get(norm, ()):
        changed = change(params)
        if not changed or all(_same(params.get(k), v) for k, v in changed.items()):
            continue
        try:
            if vjp_of is None:
                expected = pick(getattr(R, norm)(x, **{**params, **changed}))
            else:
                expected = pick(getattr(R, f"{norm}_vjp")(vjp_of, x, **{**params, **changed}))
        except (R.ClauseError, AttributeError, TypeError):
            continue
        if np.shape(expected) == np.shape(actual) and T.compare(actual, expected, bound, dtype).passed:
            if not set(changed) <= DECLARABLE:  # a bug, or a value the implementation must map itself
                return f"it agrees with the reference when {what} ({clause})"
            declared = ", ".join(f"{k!r}: {v!r}" for k, v in changed.items())
            return (
                f"it agrees with the reference when {what} ({clause}); if that is intended, declare "
                f"conventions={{{declared}}}"
            )
    return ""


def of_output(norm: str, case, dtype: str):
    """A check's `diagnose(actual, bound)` for a forward output y: `explain` on the case's own input."""
    return lambda actual, bound: explain(
        norm, case.x, case.params, actual, lambda r: getattr(r, "y", r), bound, dtype
    )
