"""What frameworks compute instead of the reference, shared by more than one family's entries: the
statistics and outputs of other arithmetic (one-pass variances, statistics in a narrower dtype, held
statistics), as model computes and bounds (models.py)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from normconf import reference as R
from normconf.reference.lp_normalize import lp_norm

from .budgets import statistic_view
from .case import Case
from .models import (
    Bounded,
    Computes,
    Envelope,
    Model,
    OneOf,
    Simulated,
    param,
    reference_value,
    rounded,
)
from .predicates import (
    batch_stats,
    groups_where,
    huge,
    long_sums,
    offset_along,
    one_pass_forward_loss,
    one_pass_standardized,
    row_mask,
    scale_along,
    statistic_held,
    tiny,
    window_mask,
)
from .tolerances import SAFETY, finfo


def standardized_as(xhat_of) -> Callable:
    """A model's compute(case, dtype, which): y = x̂ * scale + offset, with x̂ from
    `xhat_of(view, axes, eps, dtype, placement)` on the case's statistic view (another arithmetic for the
    statistics; `placement` the case's eps placement); every other quantity, and eval with running
    statistics, as the reference."""

    def compute(case: Case, dtype: str, which: str):
        if which != "y" or not batch_stats(case) or not case.x.size:
            return None
        view, axes, back = statistic_view(case.norm, case.x, case.params)
        placement = case.params.get("eps_placement", "inside_sqrt")
        with np.errstate(all="ignore"):
            xhat = np.asarray(
                back(xhat_of(view, axes, param(case, "eps"), dtype, placement)), dtype=np.float64
            )
            return xhat * scale_along(case) + offset_along(case)

    return compute


def statistics_in(acc: str | None = None) -> Callable:
    """standardized_as: two-pass statistics with every operation rounded to `acc` (None: the input
    dtype), as NUM.N6 writes them."""
    from .tolerances import standardized_in_dtype

    def xhat(view, axes, eps, dtype, placement):
        return standardized_in_dtype(view, axes, eps, acc or dtype, eps_placement=placement, breakdown=False)

    return standardized_as(xhat)


def one_pass_in(acc: str | None = None, clip: bool = True, float64_too: bool = False) -> Callable:
    """standardized_as: var = E[x²] - E[x]² in `acc` (None: the input dtype; float64 runs in float64
    unless `float64_too`), clipped at 0 when `clip` (BN.D4 / BN.D8 / LN.D4 / GN.D4)."""

    def xhat(view, axes, eps, dtype, placement):
        within = "float64" if dtype == "float64" and not float64_too else acc or dtype
        return one_pass_standardized(view, axes, eps, within, clip, placement)

    return standardized_as(xhat)


def affine_in_dtype(case: Case, dtype: str, which: str):
    """GN.D6: x̂ rounded to the input dtype, then times scale and plus offset, each rounded to it."""
    if which != "y":
        return None
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    xhat = reference_value(Case(case.norm, case.x, plain, case.kind), "y")
    scaled = rounded(rounded(xhat, dtype) * rounded(scale_along(case), dtype), dtype)
    return rounded(scaled + rounded(offset_along(case), dtype), dtype)


def xhat_rounding(case: Case, dtype: str, which: str):
    """GN.D6's x̂ is itself computed in the input dtype ((x - mean) * rstd, two roundings), not rounded
    from the exact one: up to eps·|x̂| more (one or two ulps), times |scale| (measured 0.4 ulp past the rounded
    model where y = x̂·scale + offset cancels, mlx.nn's float16 LayerNorm over 10^4 values)."""
    if which != "y":
        return None
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    xhat = reference_value(Case(case.norm, case.x, plain, case.kind), "y")
    return float(finfo(dtype).eps) * np.abs(xhat) * np.abs(scale_along(case))


def one_pass_gradient_loss(acc: str | None = None, float64_too: bool = False) -> Callable:
    """Bounded's rel(case, dtype): a one-pass variance's relative error, u(acc) * E[x²] / (var + eps)
    times `long_sums`, carried into the gradient (times SAFETY), per group; acc None: the input dtype
    (float64 runs in float64)."""

    def rel(case: Case, dtype: str):
        acc_dtype = "float64" if dtype == "float64" and not float64_too else acc or dtype
        eps = param(case, "eps")

        def loss(view, axes):
            mean_square = np.mean(view * view, axis=axes, keepdims=True)
            return (
                SAFETY
                * float(finfo(acc_dtype).eps)
                * long_sums(case)
                * mean_square
                / (view.var(axis=axes, keepdims=True) + eps)
            )

        view, axes, back = statistic_view(case.norm, case.x, case.params)
        with np.errstate(all="ignore"):
            return np.asarray(back(loss(view, axes)), dtype=np.float64)

    return rel


def state_held_in(state_dtype: Callable[[str], str]) -> Callable:
    """BN.D15 / BN.D25, as a Simulated model: the running statistics kept in state_dtype(dtype) - the
    step starts from the state as that dtype holds it (rounded, inf past its range: an update
    0 * inf is NaN) and its update is rounded to it; an eval step's y and gradients computed from the
    state as held."""

    def compute(case: Case, dtype: str, which: str):
        state = case.params.get("state")
        if state is None:
            return None
        within = state_dtype(dtype)
        held = R.RunningStats(
            rounded(state.mean, within), rounded(state.var, within), state.num_batches_tracked
        )
        if which in ("mean", "var"):
            return rounded(reference_value(case, which, {"state": held}), within)
        return None if param(case, "training") else reference_value(case, which, {"state": held})

    return compute


def state_past_half_example(norm: str = "batch_norm", **extra) -> Callable:
    """BN.D25's example: a float16 training step from a running variance of 1e6 - inf as float16 holds
    it - at momentum 1 (canonical), which the frameworks' momentum 0 turns into 0 * inf = NaN."""
    return lambda: (
        Case(
            norm,
            np.array([[0.5, 1.0], [-1.0, 2.0], [0.25, -0.5], [1.5, 0.75]]),
            {
                "channel_axis": 1,
                "eps": 1e-5,
                "running_var": "biased",
                "momentum": 1.0,
                "training": True,
                "state": R.RunningStats(np.array([0.0, 0.0]), np.array([1e6, 2.0]), 0),
                **extra,
            },
            "standard",
        ),
        "float16",
    )


# BN.D15: running statistics kept in float32, float64 inputs too
state_in_float32 = state_held_in(lambda dtype: "float32")


def trailing_axes(case: Case, dtype: str) -> dict:
    """LN.D8 / RMS.D6, for Reference: the same number of axes, the trailing ones."""
    count = len(tuple(param(case, "axes")))
    return {"axes": tuple(range(case.x.ndim - count, case.x.ndim))}


def rows_of_zero_norm(case: Case, dtype: str, which: str):
    """LP.D6: the rows whose norm is 0 (the gradient there is inf)."""
    return row_mask(case, lambda x, p, axes: lp_norm(x, p, axes) == 0)


def eps_in(acc: str | None = None) -> Callable:
    """Reference's changes(case, dtype): eps as a number of `acc` (None: the input dtype) - below
    float16's smallest subnormal it is 0, and a zero variance then gives 0/0 (BN.D14)."""

    def changes(case: Case, dtype: str) -> dict:
        return {"eps": float(rounded(param(case, "eps"), acc or dtype))}

    return changes


def rows_out_of_range(norm_power: float | None = None) -> Callable:
    """LP.D4's affected(case, dtype, which): the rows whose |x|^p over- or underflows the input dtype, or
    whose norm raised to `norm_power` (p, the sum of |x|^p, by default) overflows it."""

    def affected(case: Case, dtype: str, which: str):
        p, top = param(case, "p"), huge(dtype)

        def out(x, p_, axes):
            largest = np.max(np.abs(x), axis=axes, keepdims=True, initial=0.0) ** p_
            power = lp_norm(x, p_, axes) ** (p_ if norm_power is None else norm_power)
            return (largest > top) | ((largest > 0) & (largest < tiny(dtype))) | (power > top)

        return row_mask(case, lambda x, p_, axes: out(x, p, axes))

    return affected


# LP.D4's gradient: autodiff through an overflowed (or underflowed) norm leaves those rows no digit
LP_GRADIENT_OUT_OF_RANGE = {"x": "any", "y": "none"}


def lp_in_dtype(case: Case, dtype: str, which: str):
    """LP.D4: y with |x|^p and its sum rounded to the input dtype (overflowing to inf, underflowing to
    0), the eps placement applied to that norm."""
    if which != "y":
        return None
    p, eps, placement = param(case, "p"), param(case, "eps"), param(case, "eps_placement")
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    with np.errstate(all="ignore"):
        power_sum = rounded(np.sum(rounded(np.abs(case.x) ** p, dtype), axis=axes, keepdims=True), dtype)
        norm = power_sum ** (1.0 / p)
        if placement == "max_power_sum":
            divisor = np.sqrt(np.maximum(power_sum, eps))
        elif placement == "add_norm":
            divisor = norm + eps
        elif placement in ("none", "none_or_zero"):
            divisor = norm
        else:  # max_norm
            divisor = np.maximum(norm, eps)
        y = case.x / divisor
        return np.where(divisor == 0, 0.0, y) if placement == "none_or_zero" else y


def one_pass_model(acc: str | None = None, clip: bool = True, float64_too: bool = False) -> Model:
    """BN.D4 / BN.D8 / LN.D4 / GN.D4 / GN.D7 / SBN.D2: var = E[x²] - E[x]² in `acc` - simulated, or
    within the error such a variance can have whatever the summation order (its size, bounded)."""
    forward, backward = one_pass_forward_loss(acc, float64_too), one_pass_gradient_absolute(acc, float64_too)

    def absolute(case: Case, dtype: str, which: str):
        return (backward if which in ("x", "scale") else forward)(case, dtype, which)

    def near_zero(view, axes, case: Case, dtype: str):
        """Where var + eps is within the one-pass rounding of 0 the divisor keeps no digit."""
        within = "float64" if dtype == "float64" and not float64_too else acc or dtype
        unit = SAFETY * float(finfo(within).eps)
        mean_square = np.mean(view * view, axis=axes, keepdims=True)
        return view.var(axis=axes, keepdims=True) + param(case, "eps") <= unit * mean_square

    return OneOf(
        (
            Simulated(one_pass_in(acc, clip, float64_too)),
            Bounded(absolute=absolute),
            # y and the gradients only: a running variance takes momentum times a tiny batch variance
            # batch statistics only: a model applies to the step whose arithmetic it describes, and an
            # eval step with running statistics computes no variance (haiku's eval output 2.8e3 x its
            # budget was once excused here)
            Envelope(
                lambda case, dtype, which: (
                    groups_where(near_zero)(case, dtype, which)
                    if which in ("y", "x", "scale") and batch_stats(case)
                    else False
                ),
                allowed="any",
                kind="special",
            ),
        )
    )


def one_pass_gradient_absolute(acc: str | None = None, float64_too: bool = False) -> Callable:
    """Bounded's absolute(case, dtype, which) for dx: a one-pass variance's relative error δ (as
    `one_pass_gradient_loss`) moves each term of dx = (g - mean(g) - x̂ mean(g x̂)) / σ by δ: the bound is
    δ (|g| + mean|g| + |x̂| mean|g x̂|) / σ, scale included - the terms, not their cancelled sum."""

    def absolute(case: Case, dtype: str, which: str):
        if which not in ("x", "scale") or not batch_stats(case) or not case.x.size or case.cotangent is None:
            return None
        loss = one_pass_gradient_loss(acc, float64_too)(case, dtype)
        if which == "scale":  # dscale = sum of g x̂: each x̂ off by half the variance's relative error
            view, axes, back = statistic_view(case.norm, case.x, case.params)
            with np.errstate(all="ignore"):
                xhat = np.abs(view - view.mean(axis=axes, keepdims=True)) / np.sqrt(
                    view.var(axis=axes, keepdims=True) + param(case, "eps")
                )
                terms = loss * np.abs(case.cotangent) * np.asarray(back(xhat), dtype=np.float64) / 2
            kept = R.NORMS[case.norm].parameter_shape(case.x, case.params)
            return np.reshape(_sum_to_parameter(case, terms), kept)
        view, axes, back = statistic_view(case.norm, case.x, case.params)
        g = np.broadcast_to(case.cotangent * scale_along(case), case.x.shape)
        gview = statistic_view(case.norm, np.abs(g), case.params)[0]
        with np.errstate(all="ignore"):
            sigma = np.sqrt(view.var(axis=axes, keepdims=True) + param(case, "eps"))
            xhat = np.abs(view - view.mean(axis=axes, keepdims=True)) / sigma
            terms = (
                gview
                + gview.mean(axis=axes, keepdims=True)
                + xhat * (gview * xhat).mean(axis=axes, keepdims=True)
            )
            return loss * np.asarray(back(terms / sigma), dtype=np.float64)

    return absolute


def _sum_to_parameter(case: Case, values: np.ndarray) -> np.ndarray:
    """An x-shaped array summed over the axes a per-statistic parameter (scale, offset) does not span."""
    record = R.NORMS[case.norm]
    if record.statistics == "axes":
        kept = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
    else:
        kept = (param(case, "channel_axis") % case.x.ndim,)
    return np.sum(values, axis=tuple(i for i in range(case.x.ndim) if i not in kept))


# LN.D10 / RMS.D3: rsqrt's derivative underflows - wholly (the term lost) or partly (a subnormal's few bits):
# the answer lies between the gradient without the term and the reference
def _term_kept_to_a_few_bits(case: Case, dtype: str, which: str):
    """The variance term kept, but to the few bits a subnormal leaves it, possibly none: within its own
    size (measured up to 65 % of it past the reference on Keras' synchronized float32 step, whose
    RsqrtGrad multiplies dy into y^3 on the way)."""
    held = statistic_held(case, dtype, which)
    return None if held is None else np.abs(reference_value(case, which) - held)


RSQRT_HELD = Computes(statistic_held, between=True, absolute=_term_kept_to_a_few_bits)


def underflowing_derivative_windows(case: Case, dtype: str, which: str):
    """LRN.D5: the elements whose window's base^(beta + 1) passes 1 / the smallest normal of the input
    dtype: there the derivative of base^-beta underflows and the cross term keeps few or no digits."""
    if which != "x" or dtype == "float64":
        return False
    from normconf.reference.local_response_norm import window, window_base

    p = case.params
    axis = param(case, "channel_axis") % case.x.ndim
    a = param(case, "alpha") / (p["size"] if param(case, "alpha_over_size") else 1)
    base = window_base(case.x, axis, window(int(p["size"]), param(case, "extra")), a, param(case, "k"))
    with np.errstate(all="ignore"):
        return window_mask(case, base ** (param(case, "beta") + 1.0) > 1.0 / tiny(dtype))
