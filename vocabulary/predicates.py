"""Where a divergence holds: predicates over a (case, dtype) and the masks of the elements it reaches,
shared by more than one family's entries (a predicate only one family needs lives in its known.py)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from normconf import reference as R
from normconf.reference.lp_normalize import lp_norm

from . import tolerances as T
from .budgets import budget, reduction_length, state_error_scales, statistic_view, uses_batch_stats
from .case import Case
from .models import (
    along,
    param,
)
from .tolerances import SAFETY, conditioning, finfo, growth

HALF_SQUARE_LIMIT = 255.9  # |x| above which x*x overflows float16 (sqrt(65504) = 255.94)


def max_abs(case: Case) -> float:
    """The largest |x| of the case's input (0 for an empty one)."""
    return float(np.max(np.abs(case.x))) if case.x.size else 0.0


def tiny(dtype: str) -> float:
    """The smallest normal number of `dtype`."""
    return float(finfo(dtype).tiny)


def huge(dtype: str) -> float:
    """The largest finite number of `dtype`."""
    return float(finfo(dtype).max)


def half(dtype: str) -> bool:
    """Whether `dtype` is a 16-bit float (float16 or bfloat16)."""
    return dtype in ("float16", "bfloat16")


def batch_stats(case: Case) -> bool:
    """Whether the case normalizes with batch statistics: training, or no running state to use."""
    return uses_batch_stats(case.params)


def values_per_statistic(case: Case) -> int:
    """How many values each statistic (mean, variance) reduces over."""
    return reduction_length(case.norm, case.x, case.params)


def one_value_per_statistic(case: Case, dtype: str) -> bool:
    """Batch statistics over a single value each (BN.D6, IN.D3, BN.D16)."""
    return batch_stats(case) and values_per_statistic(case) == 1


def norm_of(case: Case) -> float:
    """The largest Lp norm of the case's rows (lp_normalize; 0 for an empty input)."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    return float(np.max(lp_norm(case.x, param(case, "p"), axes), initial=0.0)) if case.x.size else 0.0


def min_norm(case: Case) -> float:
    """The smallest Lp norm of the case's rows (lp_normalize; inf for an empty input)."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    return float(np.min(lp_norm(case.x, param(case, "p"), axes), initial=np.inf)) if case.x.size else np.inf


def eps_underflows(case: Case, dtype: str) -> bool:
    """BN.D14: eps is not a float16 number (below ~3e-8 it rounds to 0) in a float16 run."""
    return dtype == "float16" and float(np.float16(param(case, "eps"))) != case.params.get("eps", 1e-5)


def half_squares_overflow(case: Case, dtype: str) -> bool:
    """Squares taken in float16 overflow: some |x| above HALF_SQUARE_LIMIT in a float16 run."""
    return dtype == "float16" and max_abs(case) > HALF_SQUARE_LIMIT


def norm_square_overflows(case: Case, dtype: str) -> bool:
    """LP.D4 for sum(x^2) in the input dtype: a row's squared norm beyond its range (float32 or
    narrower)."""
    return dtype != "float64" and norm_of(case) ** 2 > huge(dtype)


def power_sum_out_of_range(case: Case, dtype: str, norm_power: float | None = None) -> bool:
    """LP.D4: |x|^p taken in the input dtype (float32 or narrower) over- or underflows, or so does the
    norm raised to `norm_power` (p, the sum of |x|^p, by default)."""
    p = param(case, "p")
    return dtype != "float64" and (
        max_abs(case) ** p > huge(dtype)
        or 0 < max_abs(case) ** p < tiny(dtype)
        or norm_of(case) ** (p if norm_power is None else norm_power) > huge(dtype)
    )


def lrn_base_power(case: Case) -> float:
    """LRN's largest base^(beta + 1), base = k + alpha/size * sum of squares over a full window of max |x|."""
    p = case.params
    a = p.get("alpha", 1e-4) / (p["size"] if p.get("alpha_over_size", True) else 1)
    base = p.get("k", 1.0) + a * p["size"] * max_abs(case) ** 2
    return base ** (p.get("beta", 0.75) + 1.0)


def lrn_power_derivative_underflows(case: Case, dtype: str) -> bool:
    """LRN.D5: the derivative of base^-beta, -beta base^(-beta-1), below the input dtype's smallest normal
    (float32 or narrower)."""
    return dtype != "float64" and lrn_base_power(case) > 1.0 / tiny(dtype)


def float64_running_update(case: Case, dtype: str) -> bool:
    """BN.D15: a float64 training step that updates running statistics (kept in float32 by some)."""
    return dtype == "float64" and case.params.get("state") is not None and param(case, "training")


def float64_state_read(case: Case, dtype: str) -> bool:
    """BN.D15: a float64 step that reads or updates running statistics (kept in float32 by some): a
    training step's update, an eval step's normalization."""
    return dtype == "float64" and case.params.get("state") is not None


def one_pass_standardized(
    x: np.ndarray, axes: tuple[int, ...], eps: float, dtype: str, clip: bool, placement: str = "inside_sqrt"
) -> np.ndarray:
    """x̂ with var = E[x^2] - E[x]^2 in `dtype` (clipped at 0 when `clip`), eps inside the root or outside
    it: the one-pass formula of BN.D4 / BN.D8 / LN.D4 / GN.D4 / LN.D11."""
    if dtype == "bfloat16":  # NumPy knows it through ml_dtypes only (optional: the frameworks bring it)
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    with np.errstate(all="ignore"):
        xd = np.asarray(x, dtype=np.float64).astype(dtype)
        mean = xd.mean(axis=axes, keepdims=True, dtype=dtype)
        var = (xd * xd).mean(axis=axes, keepdims=True, dtype=dtype) - mean * mean
        var = np.maximum(var, 0) if clip else var
        eps_d = np.asarray(eps, dtype=dtype)
        divisor = np.sqrt(var + eps_d) if placement == "inside_sqrt" else np.sqrt(var) + eps_d
        return ((xd - mean) / divisor).astype(np.float64)


def one_pass_exceeds_budget(case: Case, dtype: str, clip: bool, acc: str = "float32") -> bool:
    """Does honest one-pass arithmetic in `acc` itself break the NUM.N5/N6 budget on this example?"""
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    eps = param(case, "eps")
    placement = case.params.get("eps_placement", "inside_sqrt")
    within = "float64" if dtype == "float64" else acc
    xhat = back(one_pass_standardized(view, axes, eps, within, clip, placement))
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    ref = getattr(R, case.norm)(case.x, **plain)
    ref = getattr(ref, "y", ref)
    bound, _ = budget(
        case.norm, case.x, plain, ref, acc_dtype=acc if dtype != "float64" else dtype, out_dtype=dtype
    )
    with np.errstate(invalid="ignore"):
        # an eighth of the budget: the simulation's summation order is not the framework's
        if bool(np.any(~np.isfinite(xhat) | (np.abs(xhat - ref) > bound / 8))):
            return True
    if not batch_stats(case):
        return False
    # the framework's summation order is not the simulation's: what one-pass can err whatever the order
    # (its bound; past 16 values a running sum's more, `long_sums`) - Paddle's float32 GroupNorm over 10
    # values near 100 had its variance off by 9e-4 relative where NumPy's order was off by 2e-6
    within = acc if dtype != "float64" else dtype
    loss = one_pass_forward_loss(within)(Case(case.norm, case.x, plain, case.kind), dtype, "y")
    if bool(np.any(loss > bound / 8)):
        return True
    state = case.params.get("state")
    if state is None or not param(case, "training"):
        return False
    # the running variance takes the batch's: its own budget (as the running-statistics property's)
    n = reduction_length(case.norm, case.x, case.params)
    state_bound = T.running_stat_budget(
        acc_dtype=within,
        out_dtype=dtype,
        n=n,
        batch_error_scale=state_error_scales(case.norm, case.x, case.params, within)["var"],
        y_ref=getattr(R, case.norm)(case.x, **case.params).state.var,
        previous=state.var,
    )
    return bool(np.any(one_pass_forward_loss(within)(case, dtype, "var") > state_bound / 8))


def one_pass_gradient_amplified(case: Case, dtype: str) -> bool:
    """LN.D4, gradients: the one-pass variance's relative error u * E[x^2] / (var + eps) beyond what
    NUM.N8 allows a backward-stable gradient, u * SAFETY * growth(n) * kappa."""
    if not batch_stats(case) or not case.x.size:  # every dtype: flax's float64 statistics are one-pass too
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    eps = param(case, "eps")
    amplification = np.mean(view * view, axis=axes) / (view.var(axis=axes) + eps)
    kappa = conditioning(view, axes, eps)
    allowed = SAFETY * growth(reduction_length(case.norm, case.x, case.params)) * kappa
    return bool(np.any(amplification > np.reshape(allowed, np.shape(amplification))))


def _square_statistics(case: Case) -> np.ndarray:
    """Every var + eps (mean square + eps for RMSNorm) the norm takes rsqrt of, in float64."""
    if not case.x.size:
        return np.zeros(1)
    if case.norm == "rms_norm":
        axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
        return np.mean(case.x * case.x, axis=axes) + (case.params.get("eps") or 0.0)
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    return view.var(axis=axes) + param(case, "eps")


def half_rsqrt_jvp_overflows(case: Case, dtype: str) -> bool:
    """LN.D10 in float16 arithmetic: rsqrt(v)/v beyond float16's range (v < ~6.1e-4), or the half of it
    times the cotangent reaching rsqrt(v) (`half_rsqrt_jvp_groups`)."""
    if dtype != "float16" or not batch_stats(case) or not case.x.size:
        return False
    smallest = float(np.min(_square_statistics(case)))
    if smallest == 0 or smallest**-1.5 > huge(dtype):
        return True
    return bool(np.any(statistic_mask(case, lambda v, a: half_rsqrt_jvp_groups(v, a, case, dtype))))


def rsqrt_jvp_underflows(case: Case, dtype: str) -> bool:
    """LN.D10: rsqrt(v)/v below float32's smallest normal (v ~> 2e25) in a float32-or-narrower run."""
    return dtype != "float64" and rsqrt_jvp_underflows_in_float32(case, dtype)


def half_rsqrt_jvp_underflows(case: Case, dtype: str) -> bool:
    """LN.D10 in float16 arithmetic: rsqrt(v)/(2v) below float16's smallest normal (v ~> 400) - the
    derivative keeps a subnormal's few bits."""
    return (
        dtype == "float16"
        and batch_stats(case)
        and float(np.max(_square_statistics(case))) ** 1.5 > 1.0 / tiny("float16")
    )


def rsqrt_jvp_underflows_in_float32(case: Case, dtype: str) -> bool:
    """LN.D10 where every dtype, float64 included, is computed in float32 (Keras on jax and torch)."""
    return batch_stats(case) and float(np.max(_square_statistics(case))) ** 1.5 > 1.0 / tiny("float32")


# example data more than one family's entries use
OFFSET_ROWS = 1e4 + np.array([[0.5, -0.25, 0.125, -0.5, 0.25, 0.0]])  # offset 1e4: one-pass variance fails
# 16 values offset by 100 from a unit spread, exact in float32: one-pass float32 variance misses the budget
# by ~10x but keeps y to ~1e-3, so a wrong answer of another kind still shows beside it
MODERATE_ROWS = (100.0 + np.random.default_rng(0).normal(size=16)).astype(np.float32).astype(np.float64)
HUGE_ROW = np.array([[7.29e17, -1.2254e18, -2.4433e18]])  # variances ~2e36: rsqrt's derivative underflows
RSQRT_EXAMPLES = {  # HUGE_ROW as each norm's (x, params)
    "layer_norm": (HUGE_ROW, {"axes": (-1,), "eps": 1e-12}),
    "rms_norm": (HUGE_ROW, {"axes": (-1,), "eps": 1e-12}),
    "group_norm": (HUGE_ROW.reshape(1, 3, 1), {"groups": 1, "channel_axis": -1, "eps": 1e-12}),
    "batch_norm": (HUGE_ROW.T.copy(), {"channel_axis": -1, "eps": 1e-12, "running_var": "biased"}),
    "instance_norm": (HUGE_ROW.reshape(1, 3, 1), {"channel_axis": -1, "eps": 1e-12}),
}
# TF's RsqrtGrad (LN.D10): values ~1e18 and a unit cotangent
HUGE_2X3 = np.array(
    [
        [8.928809573238702e17, -1.5008069836351734e18, -2.9924863714923643e18],
        [-3.151854259746636e18, 2.042272067532882e18, 2.6908372805573673e18],
    ]
)
SMALL_COTANGENT = np.array(
    [
        [0.1257302165031433, -0.13210485875606537, 0.6404226422309875],
        [0.10490011423826218, -0.5356693863868713, 0.3615950644016266],
    ]
)


# --- the models the families' entries share (models.py says how each kind is judged) ---------------


def statistic_mask(case: Case, holds) -> np.ndarray:
    """The elements of x whose statistic group satisfies `holds(view, axes) -> keepdims bool` (a
    divergence that breaks whole groups: an overflowing sum, an inf rstd)."""
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    with np.errstate(all="ignore"):
        return np.asarray(back(np.asarray(holds(view, axes), dtype=bool)), dtype=bool)


def groups_where_var_below(threshold) -> Callable:
    """affected(case, dtype, which): the groups whose var + eps is below `threshold(dtype)`; a gradient
    of scale or offset sums over every group, so any such group reaches all of it."""

    def affected(case: Case, dtype: str, which: str):
        eps = param(case, "eps")
        mask = statistic_mask(
            case, lambda view, axes: view.var(axis=axes, keepdims=True) + eps < threshold(dtype)
        )
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def groups_where_any(value_holds) -> Callable:
    """affected(case, dtype, which): the groups holding an element for which `value_holds(x, dtype)`
    (an overflowing square); scale/offset gradients are reached wholly."""

    def affected(case: Case, dtype: str, which: str):
        mask = statistic_mask(
            case, lambda view, axes: np.any(value_holds(view, dtype), axis=axes, keepdims=True)
        )
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def window_mask(case: Case, bad: np.ndarray) -> np.ndarray:
    """LRN: the elements whose window of channels holds a `bad` element."""
    from normconf.reference.local_response_norm import window, window_sum

    axis = param(case, "channel_axis") % case.x.ndim
    win = window(int(case.params["size"]), param(case, "extra"))
    return window_sum(np.asarray(bad, dtype=np.float64), axis, *win) > 0


def row_mask(case: Case, per_row) -> np.ndarray:
    """lp_normalize: the elements of rows for which `per_row(x, p, axes) -> keepdims bool`."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    with np.errstate(all="ignore"):
        return np.broadcast_to(per_row(case.x, param(case, "p"), axes), case.x.shape)


def scale_along(case: Case) -> np.ndarray:
    """The canonical scale broadcast against x (1 when absent)."""
    scale = case.params.get("scale")
    return np.ones(1) if scale is None else along(case, scale)


def statistic_held(case: Case, dtype: str, which: str):
    """The gradient of x with the derivative of the norm's divisor lost (it underflows: rsqrt's
    -rsqrt(v)/(2v), base^(-beta-1), the norm's own derivative), as `Computes` takes it: the other
    gradients are the reference's."""
    if which != "x":
        return None
    record, g = R.NORMS[case.norm], case.cotangent * scale_along(case)
    with np.errstate(all="ignore"):
        if record.gradient_terms == "standardizing":
            view, axes, back = statistic_view(case.norm, case.x, case.params)
            gview = statistic_view(case.norm, np.broadcast_to(g, case.x.shape), case.params)[0]
            divisor = record.standardized(view, axes, case.params).divisor
            # d mean / dx_i is the value's weight in the mean (1/n; pooled replicas' own, SBN.P2)
            weights = record.mean_weights(view, axes, case.params)
            return np.asarray(back((gview - weights * gview.sum(axis=axes, keepdims=True)) / divisor))
        if record.gradient_terms == "rms":
            axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
            return g / np.sqrt(
                np.mean(case.x * case.x, axis=axes, keepdims=True) + (case.params.get("eps") or 0.0)
            )
        if record.gradient_terms == "lp":
            axes = tuple(a % case.x.ndim for a in param(case, "axes"))
            return g / np.maximum(lp_norm(case.x, param(case, "p"), axes), param(case, "eps"))
        if record.gradient_terms == "window":
            from normconf.reference.local_response_norm import window, window_base

            p = case.params
            axis = param(case, "channel_axis") % case.x.ndim
            a = param(case, "alpha") / (p["size"] if param(case, "alpha_over_size") else 1)
            base = window_base(
                case.x, axis, window(int(p["size"]), param(case, "extra")), a, param(case, "k")
            )
            return g * base ** -param(case, "beta")
    raise ValueError(f"no divisor to hold for {case.norm}")


def half_square_windows(case: Case, dtype: str, which: str):
    """LRN.D3: the elements whose window holds an |x| whose float16 square overflows."""
    return window_mask(case, np.abs(case.x) > HALF_SQUARE_LIMIT)


def rows_below_eps(case: Case, dtype: str, which: str):
    """LP.D5: rows of norm below eps, which divide by an eps rounded to 0 (or by 1/eps gone to inf)."""
    return row_mask(case, lambda x, p, axes: lp_norm(x, p, axes) < param(case, "eps"))


def rows_where_norm_square_overflows(case: Case, dtype: str, which: str):
    """LP.D4 for sum(x^2) in the input dtype: the rows whose squared norm leaves its range."""
    return row_mask(case, lambda x, p, axes: lp_norm(x, p, axes) ** 2 > huge(dtype))


def groups_where(holds) -> Callable:
    """affected(case, dtype, which) from `holds(view, axes, case, dtype) -> keepdims bool` per
    statistic group; scale/offset gradients are reached wholly when any group is."""

    def affected(case: Case, dtype: str, which: str):
        mask = statistic_mask(case, lambda view, axes: holds(view, axes, case, dtype))
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def offset_along(case: Case) -> np.ndarray:
    """The canonical offset broadcast against x (0 when absent)."""
    offset = case.params.get("offset")
    if offset is None:
        return np.zeros(1)
    return np.reshape(
        offset, np.shape(scale_along(Case(case.norm, case.x, {**case.params, "scale": offset}, case.kind)))
    )


def half_rsqrt_jvp_groups(view, axes, case: Case, dtype: str):
    """LN.D10 in float16: the groups where rsqrt(v)/v leaves float16's range (v = var + eps: below
    ~6.1e-4), or the cotangent reaching rsqrt(v), Σ |g·scale·(x - mean)| (any partial sum), times
    rsqrt(v)/(2v) does (the chain rule's product: over 10^4 values of spread 0.03 it is ~3 x 1.6e4). RMSNorm:
    v = mean(x²) + eps and Σ |g·scale·x|."""
    spread = (
        np.mean(view * view, axis=axes, keepdims=True)
        if case.norm == "rms_norm"
        else view.var(axis=axes, keepdims=True)
    )
    v = spread + param(case, "eps")
    with np.errstate(all="ignore"):
        cubed = v**-1.5  # rsqrt(v)/v - JAX's ans / x, TF's y^3 - is formed before the halving
        return (
            (v == 0) | (cubed > huge(dtype)) | (rsqrt_cotangent(view, axes, case) * cubed / 2 > huge(dtype))
        )


def rsqrt_cotangent(view, axes, case: Case) -> np.ndarray:
    """Per statistic group (keepdims), Σ |g·scale·(x - mean)| (RMSNorm: Σ |g·scale·x|): a bound on every
    partial sum of the cotangent reaching rsqrt(var + eps) - a float16 sum of 10^4 such terms (haiku
    broadcasts the statistic before rsqrt, so the chain rule forms each term times rsqrt(v)/(2v) and
    then sums them) can leave the range on the way although the total cancels (0 without a cotangent)."""
    if case.cotangent is None:
        return np.zeros(np.sum(view, axis=axes, keepdims=True).shape)
    g = np.broadcast_to(case.cotangent * scale_along(case), case.x.shape)
    gview = statistic_view(case.norm, g, case.params)[0]
    centred = view if case.norm == "rms_norm" else view - view.mean(axis=axes, keepdims=True)
    return np.sum(np.abs(gview * centred), axis=axes, keepdims=True)


def long_sums(case: Case) -> float:
    """How much more a one-pass variance's sums may err past 16 values per statistic: n / 16. The bounds
    were measured on rows of up to 16 values; a sum accumulated value by value errs up to (n - 1)·u
    (Higham, Accuracy and Stability, 4.2: same-sign squares leave no cancellation to average it out).
    Measured: onnxruntime's float32-stash GroupNorm variance 2.7 % off, Keras-on-NumPy's float32 running
    variance 28 % off, over 10^4 bfloat16/float16 values offset by 100."""
    return max(1.0, values_per_statistic(case) / 16)


def one_pass_forward_loss(acc: str | None = None, float64_too: bool = False) -> Callable:
    """Bounded's absolute(case, dtype, which) for y: the one-pass variance's relative error,
    SAFETY * u(acc) * E[x²] / (var + eps) times `long_sums`, halved through the square root, times
    |scale * x̂|."""

    def absolute(case: Case, dtype: str, which: str):
        if which not in ("y", "var") or not batch_stats(case) or not case.x.size:
            return None
        within = "float64" if dtype == "float64" and not float64_too else acc or dtype
        view, axes, back = statistic_view(case.norm, case.x, case.params)
        eps = param(case, "eps")
        summed = long_sums(case)
        if which == "var":  # the running variance takes momentum times the batch's: its error too
            mean_square = np.mean(view * view, axis=axes)
            momentum = param(case, "momentum")
            weight = 1.0 if momentum is None else momentum  # the cumulative average's first step takes it all
            return weight * SAFETY * float(finfo(within).eps) * summed * np.ravel(mean_square)
        with np.errstate(all="ignore"):
            var = view.var(axis=axes, keepdims=True)
            loss = (
                SAFETY
                * float(finfo(within).eps)
                * summed
                * np.mean(view * view, axis=axes, keepdims=True)
                / (var + eps)
            )
            xhat = (view - view.mean(axis=axes, keepdims=True)) / np.sqrt(var + eps)
            return np.asarray(back(loss * np.abs(xhat)), dtype=np.float64) * np.abs(scale_along(case)) / 2

    return absolute
