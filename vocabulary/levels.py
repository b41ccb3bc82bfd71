"""Conformance levels (spec/numerics.md NUM.L1-L5): which level an example belongs to, what caused a
failure in the range regime, and the state of each level over a set of results.

One rule for everyone: the level of an example and the range limit read only the example and the
statistics' dtype the implementation declares, never which implementation it is.
"""

from __future__ import annotations

import math

import numpy as np

from normconf import reference as R
from normconf.reference.local_response_norm import window, window_sum

from .budgets import statistic_view, uses_batch_stats
from .tolerances import finfo

# strongest first: the matrix colours a cell by the first of these that fails or diverges
LEVELS = ("semantics", "accuracy", "range", "special values")
CLAUSES = {"semantics": "NUM.L1", "accuracy": "NUM.L2", "range": "NUM.L3", "special values": "NUM.L4"}
# value kinds of well-scaled inputs (conformance/value_draws.VALUE_KINDS): the rest are judged at accuracy
WELL_SCALED = ("standard", "integers", "positive", "constant_channel")
LONG_REDUCTION = 10_000  # values per statistic from which a reduction is judged at accuracy
SPECIAL_CLAUSES = ("NUM.N9",)  # the properties that put NaN, inf, empty batches or eps = 0 in
# a known divergence's model kind (models.KINDS) -> the level it is counted at
KIND_LEVELS = {"semantic": "semantics", "precision": "accuracy", "special": "special values"}
RANGE_CLAUSES = ("NUM.D1",)  # the divergences that are range limits, granted every implementation
# a level's state over results, strongest first
HOLDS, LIMITED, FAILS = "holds", "limited", "fails"


def _arg(case, key):
    return case.params.get(key, R.NORMS[case.norm].parameters().get(key))


def square_sums(case) -> np.ndarray:
    """Per element of x, the sum its statistic takes of squares (|x|^p for lp_normalize; the window's
    for local_response_norm), in float64 - what overflows when that sum is taken in a narrower dtype.
    Zero where the norm takes no squares from this input (channel_normalize; eval with running
    statistics)."""
    x = case.x
    with np.errstate(all="ignore"):
        if case.norm == "local_response_norm":
            axis = _arg(case, "channel_axis") % x.ndim
            return window_sum(x * x, axis, *window(int(case.params["size"]), _arg(case, "extra")))
        if case.norm == "lp_normalize":
            axes = tuple(a % x.ndim for a in _arg(case, "axes"))
            powers = np.sum(np.abs(x) ** _arg(case, "p"), axis=axes, keepdims=True)
            return np.broadcast_to(powers, x.shape)
        if case.norm == "channel_normalize" or not uses_batch_stats(case.params) or not x.size:
            return np.zeros(x.shape)
        view, axes, back = statistic_view(case.norm, x, case.params)
        return np.asarray(back(np.sum(view * view, axis=axes, keepdims=True)))


def _num(value: float) -> str:
    """2 digits, as people write them: 1.8e19."""
    return f"{value:.2g}".replace("e+", "e")


def _huge(dtype: str) -> float:
    return float(finfo(dtype).max)


def statistics_dtype(acc: str) -> str:
    """The dtype squares are summed in under a declared accumulation dtype: that dtype, for a float
    narrower than float64."""
    return acc if acc in ("float16", "bfloat16", "float32") else "float64"


def range_cause(case, acc: str) -> str | None:
    """The words for an example whose intermediates leave the declared statistics dtype `acc`
    (NUM.L3), or None: squares beyond its largest number (NUM.D1), or an eps that rounds to 0 in it.
    A float16 run whose statistics are declared float32 leaves float32's range, not float16's."""
    stats = statistics_dtype(acc)
    if stats == "float64" or not case.x.size:
        return None
    sums = square_sums(case)
    finite = sums[np.isfinite(sums)]
    if finite.size and float(finite.max()) > _huge(stats):
        if case.norm == "lp_normalize":
            p = float(_arg(case, "p"))
            onset = _huge(stats) ** (1 / p)
            return f"powers |x|^{p:g} leave {stats} from |x| ≈ {_num(onset)} / n^(1/{p:g}) (NUM.D1)"
        return f"squares leave {stats} from |x| ≈ {_num(math.sqrt(_huge(stats)))} / sqrt(n) (NUM.D1)"
    eps = case.params.get("eps")
    if isinstance(eps, float) and eps > 0 and float(np.asarray(eps, dtype=_numpy(stats))) == 0.0:
        return f"eps = {eps:g} is 0 in {stats} (NUM.L3)"
    return None


def _numpy(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _per_statistic(case) -> np.ndarray:
    """How many values each statistic sums (the window or the row for LRN and Lp)."""
    if case.norm == "local_response_norm":
        channels = case.x.shape[_arg(case, "channel_axis") % case.x.ndim]
        return np.array([min(int(case.params["size"]), channels)])
    if case.norm == "lp_normalize":
        axes = tuple(a % case.x.ndim for a in _arg(case, "axes"))
        return np.array([int(np.prod([case.x.shape[a] for a in axes]))])
    return np.array([R.NORMS[case.norm].reduction_length(case.x, case.params)])


def of_example(case, acc: str, clause: str) -> str:
    """The level the example belongs to (NUM.L1-L4): special values for the properties that put them
    in, range where intermediates leave the declared statistics dtype, accuracy for ill-conditioned,
    near-eps, large or long inputs, semantics for the rest."""
    if clause in SPECIAL_CLAUSES or case.params.get("eps") == 0.0 or not np.all(np.isfinite(case.x)):
        return "special values"
    if range_cause(case, acc):
        return "range"
    long = case.x.size and _per_statistic(case).max() >= LONG_REDUCTION
    return "semantics" if case.kind in WELL_SCALED and not long else "accuracy"


def regime(case, acc: str) -> str:
    """The drawn regime in words, for a finding's message: the value kind, the values per statistic,
    and where the intermediates leave the statistics dtype (with how far, here)."""
    n = int(_per_statistic(case).max()) if case.x.size else 0
    long = " (a long reduction)" if n >= LONG_REDUCTION else ""
    words = f"values {case.kind}, n = {n} per statistic{long}"
    cause = range_cause(case, acc)
    if cause and "NUM.D1" in cause:
        sums = square_sums(case)
        cause += f"; here they sum to {_num(float(np.max(sums[np.isfinite(sums)])))}"
    return words + (f": {cause}" if cause else "")


def of_divergence(entry) -> str:
    """The level a known divergence is counted at: range for NUM.D1, else its model's kind."""
    if entry.clause in RANGE_CLAUSES:
        return "range"
    return KIND_LEVELS.get(entry.severity, "accuracy")


def states(records: list[dict]) -> dict[str, dict]:
    """{level: {"state": holds | limited | fails, "records": the ones that decide it}} over result
    records (a finding fails its level; a range limit limits range; any other divergence - a
    framework's - fails the level of its kind for a plug-in's verdict, and colours the matrix)."""
    out: dict[str, dict] = {level: {"state": HOLDS, "records": []} for level in LEVELS}
    for r in records:
        level = r.get("level")
        if level not in out:
            continue
        if r["verdict"] == "finding":
            out[level]["state"] = FAILS
            out[level]["records"].append(r)
        elif r["verdict"] == "expected divergence":
            limit = r.get("divergence_clause") in RANGE_CLAUSES
            if not limit:
                out[level]["state"] = FAILS
            elif out[level]["state"] == HOLDS:
                out[level]["state"] = LIMITED
            out[level]["records"].append(r)
    return out
