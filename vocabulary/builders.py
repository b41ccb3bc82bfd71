"""Entries more than one family declares, built per family: range limits (NUM.D1, its gradient form),
constant groups at eps = 0 (NUM.D2), running and sequential sums (NUM.D3), and the TF helpers."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from normconf import reference as R
from normconf.reference.lp_normalize import lp_norm

from . import levels
from .arithmetic import RSQRT_HELD, _sum_to_parameter
from .budgets import statistic_view
from .case import OVERFLOW_MAGNITUDE, Case
from .models import (
    Bounded,
    Computes,
    Envelope,
    OneOf,
    along,
    param,
    reference_value,
    rounded,
)
from .predicates import (
    batch_stats,
    huge,
    norm_of,
    offset_along,
    rsqrt_jvp_underflows,
    scale_along,
    statistic_held,
    statistic_mask,
    tiny,
    values_per_statistic,
)
from .records import Divergence
from .tolerances import SAFETY, finfo, growth

# --- NUM.D1: squares beyond the range of the dtype the statistics are computed in ------------------

# what may break where a statistic overflowed: y as if x-hat were 0 (the divisor went to inf) or
# non-finite (inf - inf); dx likewise 0 or non-finite; dscale loses those groups' terms (any value);
# doffset (a sum of the cotangent) and the running statistics only by turning non-finite
SQUARES_ALLOWED = {
    "y": "non_finite_or_offset",
    "x": "non_finite_or_zero",
    "scale": "any",
    "offset": "non_finite",
    "mean": "non_finite",
    "var": "non_finite",
}


def squares_overflow_in(half_in_half: bool) -> Callable:
    """affected(case, dtype, which): the elements whose statistic's sum of squares exceeds the largest
    float32 (float16's for a float16 input when `half_in_half`) - only where the input's own statistics
    normalize."""

    def affected(case: Case, dtype: str, which: str):
        limit = huge("float16" if half_in_half and dtype == "float16" else "float32")
        mask = levels.square_sums(case) > limit
        mask = np.broadcast_to(mask, case.x.shape)
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def parameter_sums_overflow(case: Case, dtype: str, which: str):
    """NUM.D1's gradient form, affected(case, dtype, which) for statistics summed in float16: the
    parameter elements whose gradient terms - g times x̂ or times x - mean (autodiff of
    (x - mean) * (scale * rsqrt(var + eps)) sums the undivided deviation), or g alone for doffset - add up
    in absolute value past 65504, so that some order of their float16 sum leaves the range although the
    answer may not (in eval too: x̂ = x / sqrt(state var + eps) is not bounded); in training dx reads such
    sums per statistic, so its elements in those groups; y and the state are not this."""
    if dtype != "float16" or case.cotangent is None or which not in ("scale", "offset", "x"):
        return False
    if case.params.get("scale") is None and case.params.get("offset") is None and which != "x":
        return False
    plain = Case(
        case.norm, case.x, {k: v for k, v in case.params.items() if k not in ("scale", "offset")}, ""
    )
    values, axes, back = statistic_view(case.norm, case.x, case.params)
    try:
        with np.errstate(all="ignore"):
            xhat = np.asarray(reference_value(plain, "y"), dtype=np.float64)
    except R.ClauseError:  # a call the spec refuses has no gradient to overflow
        return False
    with np.errstate(all="ignore"):
        if batch_stats(case) or case.params.get("state") is None:
            mean = np.broadcast_to(back(np.mean(values, axis=axes, keepdims=True)), case.x.shape)
        else:
            mean = along(case, case.params["state"].mean)
        deviation = np.maximum(np.abs(xhat), np.abs(case.x - mean))
        g = np.broadcast_to(case.cotangent, case.x.shape)
        sums = {
            "scale": _sum_to_parameter(case, np.abs(g) * deviation),
            "offset": _sum_to_parameter(case, np.abs(g)),
        }
    limit = huge("float16")
    if which == "scale":  # or x̂ itself past float16 (an eval step's small running variance), as it is formed
        beyond = (sums["scale"] > limit) | (_sum_to_parameter(case, np.abs(xhat) > limit) > 0)
        return np.reshape(beyond, np.shape(sums["scale"]))
    if which == "offset":
        return np.reshape(sums["offset"] > limit, np.shape(sums["offset"]))
    if not batch_stats(case):  # eval: dx = g scale / sqrt(var + eps), no sum
        return False
    # dx reads, per statistic, the sums of g scale over its values and of g scale times the deviation
    view = statistic_view(case.norm, np.abs(g * scale_along(case)), case.params)[0]
    spread = statistic_view(case.norm, deviation, case.params)[0]
    with np.errstate(all="ignore"):
        beyond = (np.sum(view * spread, axis=axes, keepdims=True) > limit) | (
            np.sum(view, axis=axes, keepdims=True) > limit
        )
    return np.asarray(back(beyond), dtype=bool)


# where a parameter's terms add up past 65504 its float16 sum has no digit left to judge (spacing 32 at
# the top): any answer there, as NUM.D1's dscale; dx only non-finite
PARAMETER_SUMS_ALLOWED = {"scale": "any", "offset": "any", "x": "non_finite", "y": "none"}


def overflow_example(norm: str, dtype: str = "float32", rank: int = 4, **params) -> Callable:
    """An entry's example: a typical call on x whose squares overflow `dtype`'s statistics (the
    strategies' "overflow" magnitude), `params` overriding the typical ones (a framework's layout; None:
    absent, as an affine-free layer's scale); every array rounded to `dtype`. LRN takes beta = 0.5, where
    the reference's answer is not ~0."""
    params = {"beta": 0.5, "alpha": 1.0, **params} if norm == "local_response_norm" else params

    def example() -> tuple[Case, str]:
        magnitude = OVERFLOW_MAGNITUDE.get(dtype, OVERFLOW_MAGNITUDE["default"])
        shape = (2, 3, 2, 3)[:rank] if rank > 1 else (3,)
        x = rounded(magnitude * np.random.default_rng(0).uniform(-1, 1, size=shape), dtype)
        record = R.NORMS[norm]
        chosen = record.typical_params(x, params)
        for key in [k for k, v in params.items() if v is None] + ["state"]:
            chosen.pop(key, None)
        if record.stateful:
            chosen["training"] = True
        chosen = {k: rounded(v, dtype) if isinstance(v, np.ndarray) else v for k, v in chosen.items()}
        return Case(norm, x, chosen, "overflow"), dtype

    return example


def parameter_sums_example(norm: str, **params) -> Callable:
    """NUM.D1's gradient form: a float16 call with a scale (and an offset, unless `offset=None`) whose
    gradient terms leave float16 while their sum need not - a BatchNorm in eval with mean 0, variance
    0.25 (x̂ = 2x ~ 8e4, g ~ 2.5), any other norm with a cotangent of ~6e4 (x̂ is bounded there); `params`
    override the typical ones (a framework's layout)."""

    def example() -> tuple[Case, str]:
        rng = np.random.default_rng(0)
        x = rounded(4.0e4 * rng.uniform(-1, 1, size=(2, 4, 4)), "float16")
        record = R.NORMS[norm]
        chosen = record.typical_params(x, {k: v for k, v in params.items() if v is not None})
        if norm == "group_norm":
            chosen["groups"] = 2  # two channels per group, whichever axis holds the four
        if norm == "batch_norm":
            channels = x.shape[chosen.get("channel_axis", 1)]
            # running variance 0.25: x̂ = 2x reaches 8e4 - past float16 itself, not only its products
            chosen |= {
                "training": False,
                "state": R.RunningStats(np.zeros(channels), np.full(channels, 0.25), 1),
            }
            g = 2.5 * rng.uniform(-1, 1, size=x.shape)
        else:
            chosen.pop("state", None)
            g = 6.0e4 * rng.uniform(-1, 1, size=x.shape)
        shape = record.parameter_shape(x, chosen)
        chosen |= {"scale": np.full(shape, 1.5), "offset": np.zeros(shape)}
        for key in [k for k, v in params.items() if v is None]:
            chosen.pop(key, None)
        return Case(norm, x, chosen, "overflow", cotangent=rounded(g, "float16")), "float16"

    return example


def squares_beyond(stats: str) -> Callable:
    """affected(case, dtype, which) for statistics summed in `stats` whatever the input dtype: the
    elements whose sum of squares exceeds its largest number."""

    def affected(case: Case, dtype: str, which: str):
        mask = np.broadcast_to(levels.square_sums(case) > huge(stats), case.x.shape)
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def parameter_sums_in_float16(adapters: str, norms, **params) -> list[Divergence]:
    """NUM.D1's gradient form for `adapters`, which sum a float16 call's parameter gradients in float16
    (measured per framework and norm): where a parameter's terms g x̂ (or g) add up past 65504 its sum may
    be ±inf or NaN, and in training dx with it; everything else is held to the reference."""
    return [
        Divergence(
            adapters=adapters,
            norm=norm,
            clause="NUM.D1",
            reason=(
                "parameter gradients summed in float16 for a float16 input: where the terms g x̂ (or g) of a "
                "parameter add up past 65504 its float16 sum may leave the range"
            ),
            applies=lambda case, dtype: any(
                np.any(parameter_sums_overflow(case, dtype, which)) for which in ("scale", "offset")
            ),
            example=parameter_sums_example(norm, **params),
            shows_in="gradient",
            model=Envelope(parameter_sums_overflow, PARAMETER_SUMS_ALLOWED, kind="special"),
        )
        for norm in norms
    ]


@functools.lru_cache(maxsize=None)
def declared_range(norm: str, acc: str) -> Divergence | None:
    """NUM.L3 for every implementation alike: NUM.D1's model read from the statistics dtype it declares
    (`accumulation`), so a plug-in whose float32 statistics overflow is range limited exactly as a
    framework is (None for float64 statistics: no drawn input reaches their range)."""
    stats = levels.statistics_dtype(acc)
    if stats == "float64":
        return None
    affected = squares_beyond(stats)
    return Divergence(
        adapters="*",
        norm=norm,
        clause="NUM.D1",
        reason=(
            f"squares summed in {stats} (the declared statistics dtype) overflow: the statistic is inf "
            f"and "
            "the group normalizes to its offset (or NaN)"
        ),
        applies=lambda case, dtype: bool(np.any(affected(case, dtype, "y"))),
        example=overflow_example(norm, "float32"),
        model=Envelope(affected, SQUARES_ALLOWED, kind="special"),
    )


def squares_overflow(
    adapters: str, norms, *, half_in_half: bool = False, rank: int = 4, base=None, **params
) -> list[Divergence]:
    """NUM.D1 for `adapters`: each of `norms` sums its squares in float32 (a float16 input's in float16
    too when `half_in_half`), and where that overflows the statistic is inf - the group normalizes to
    its offset, or to NaN - instead of the reference's finite answer. A model, not an excuse: elsewhere
    the reference holds (or `base`'s answer: Envelope), and in those groups only what an infinite
    divisor gives (SQUARES_ALLOWED)."""
    where = "in float32 (float16 for a float16 input)" if half_in_half else "in float32"
    affected = squares_overflow_in(half_in_half)
    return [
        Divergence(
            adapters=adapters,
            norm=norm,
            clause="NUM.D1",
            reason=f"squares summed {where} overflow: the statistic is inf and the group normalizes to its "
            "offset (or NaN)",
            applies=lambda case, dtype: bool(np.any(affected(case, dtype, "y"))),
            example=overflow_example(norm, "float32", rank, **params),
            model=Envelope(affected, SQUARES_ALLOWED, kind="special", base=base),
        )
        for norm in norms
    ]


def offset_in_output(half_in_half: bool = False) -> Computes:
    """NUM.D1 under a mixed policy (MP.P1): where a statistic's squares overflow, the group normalizes
    to its offset - held in float32 - and y is cast to the half input type: the offset rounded to it;
    elsewhere the reference."""
    affected = squares_overflow_in(half_in_half)

    def compute(case: Case, dtype: str, which: str):
        offset = case.params.get("offset")
        if which != "y" or offset is None:
            return None
        y = np.asarray(reference_value(case, "y"), dtype=np.float64)
        mask = np.broadcast_to(np.asarray(affected(case, dtype, "y"), dtype=bool), y.shape)
        return np.where(mask, rounded(np.broadcast_to(along(case, offset), y.shape), dtype), y)

    return Computes(compute)


def mixed_overflow_example(norm: str, rank: int = 4, **params) -> Callable:
    """NUM.D1 under a mixed policy, for an entry's example: the typical overflowing call in bfloat16
    with a float32 offset that bfloat16 cannot hold (1/3)."""

    def example() -> tuple[Case, str]:
        case, dtype = overflow_example(norm, "bfloat16", rank, **params)()
        if case.params.get("offset") is not None:
            third = rounded(np.full(np.shape(case.params["offset"]), 1.0 / 3.0), "float32")
            case = dataclasses.replace(case, params={**case.params, "offset": third})
        return case, dtype

    return example


def squares_overflow_mixed(
    adapters: str, norms, *, half_in_half: bool = False, rank: int = 4, **params
) -> list[Divergence]:
    """NUM.D1 for a policy adapter: `squares_overflow`'s model with the offset rounded to the half
    output (`offset_in_output`)."""
    return [
        dataclasses.replace(
            entry,
            reason=entry.reason + ", cast to the half output type",
            example=mixed_overflow_example(entry.norm, rank, **params),
        )
        for entry in squares_overflow(
            adapters, norms, half_in_half=half_in_half, rank=rank, base=offset_in_output(half_in_half)
        )
    ]


# --- NUM.D2: a constant group at eps = 0 -----------------------------------------------------------


def constant_groups_at_eps_0(case: Case, dtype: str, which: str):
    """The elements of the groups whose values are all equal (variance exactly 0) when eps = 0: the
    spec's 0/0 = NaN there (NUM.N9)."""
    if param(case, "eps") != 0.0 or not batch_stats(case):
        return np.zeros(case.x.shape, dtype=bool)
    return statistic_mask(case, lambda view, axes: np.ptp(view, axis=axes, keepdims=True) == 0)


def zero_over_zero(
    adapters: str, norms, answer: str, reason: str, shape: tuple = (2, 5, 3), base=None, **params
) -> list[Divergence]:
    """NUM.D2 for `adapters`: at eps = 0 each of `norms` answers a constant group's 0/0 with `answer`
    ("non_finite_or_offset": its offset, as if x-hat were 0; "any": what rounding noise in its mean
    gives) instead of NaN - in exactly those groups; every other group is held to the reference (or to
    `base`, another divergence's model of them: Envelope). The
    example's first group is constant over `shape`'s values per statistic (15 by default: a count whose
    1/n is not a binary fraction, so a mean taken as sum * (1/n) is off by rounding)."""

    def example(norm: str):
        def build() -> tuple[Case, str]:
            x = np.random.default_rng(0).normal(size=shape)
            chosen = {**R.NORMS[norm].typical_params(x, params), "eps": 0.0}
            for key in [k for k, v in params.items() if v is None] + ["state"]:
                chosen.pop(key, None)
            if R.NORMS[norm].stateful:
                chosen["training"] = True
            view, axes, back = statistic_view(norm, np.ones_like(x), chosen)
            first = np.zeros(np.sum(view, axis=axes, keepdims=True).shape)
            first.flat[0] = 1.0  # the first group constant
            x = np.where(np.broadcast_to(np.asarray(back(first)), x.shape) > 0, 1.5, x)
            return Case(norm, rounded(x, "float32"), chosen, "constant_channel"), "float32"

        return build

    return [
        Divergence(
            adapters=adapters,
            norm=norm,
            clause="NUM.D2",
            reason=reason,
            applies=lambda case, dtype: bool(np.any(constant_groups_at_eps_0(case, dtype, "y"))),
            example=example(norm),
            model=Envelope(constant_groups_at_eps_0, {"y": answer}, kind="special", base=base),
        )
        for norm in norms
    ]


# --- NUM.D3: statistics summed sequentially (error growing as n u) ----------------------------------


def outer_sequential_mean(x: np.ndarray, channel: int, acc: str) -> np.ndarray:
    """TF's reduce_mean of x over every axis but `channel` when some reduced axis precedes it (Eigen's
    outer-dimension reduction): one running sum per channel in `acc`, the reduced axes after the
    channel outermost and those before it innermost, each in memory order; then / n in `acc`. Measured
    bit for bit against TF 2.21 on (2, 2, 10^4), (10^2, 2, 10^2), (4, 3, 50, 50), (4, 50, 50, 3)."""
    after = [a for a in range(x.ndim) if a > channel]
    before = [a for a in range(x.ndim) if a < channel]
    kind = np.dtype(acc).type
    rows = np.transpose(np.asarray(x, dtype=kind), [channel, *after, *before]).reshape(x.shape[channel], -1)
    total = np.add.accumulate(rows, axis=1, dtype=kind)[:, -1]  # sequential, not pairwise
    return (total / kind(rows.shape[1])).astype(np.float64)


def sequentially_summed(acc_of: Callable[[str], str]) -> Callable:
    """A model's compute for BatchNorm over batch statistics as tf.nn.moments takes them (NUM.D3):
    mean and var = mean((x - mean)²) each an `outer_sequential_mean` in acc_of(dtype); y from them in
    float64 (the rest of the arithmetic is within the property's budget)."""

    def compute(case: Case, dtype: str, which: str):
        if which != "y" or not batch_stats(case) or not case.x.size:
            return None
        acc, kind = acc_of(dtype), np.dtype(acc_of(dtype)).type
        channel = param(case, "channel_axis") % case.x.ndim
        shape = [1] * case.x.ndim
        shape[channel] = -1
        x = np.asarray(case.x, dtype=kind)
        mean = outer_sequential_mean(x, channel, acc).reshape(shape)
        centred = (x - mean.astype(kind)).astype(kind)
        var = outer_sequential_mean(centred * centred, channel, acc).reshape(shape)
        with np.errstate(all="ignore"):
            xhat = (case.x - mean) / np.sqrt(var + param(case, "eps"))
        return xhat * scale_along(case) + offset_along(case)

    return compute


def running_sums_matter(case: Case, dtype: str = "") -> bool:
    """NUM.D3's territory: batch statistics over more values than the sqrt(n) model covers a running
    sum's (n - 1) u for (n - 1 > SAFETY growth(n), n > 23)."""
    n = values_per_statistic(case) if case.x.size else 0
    return batch_stats(case) and n - 1 > SAFETY * growth(n)


def sums_outer_axes(case: Case, dtype: str) -> bool:
    """NUM.D3 for tf.nn.moments: BatchNorm reducing an axis before the channel axis, where running sums
    matter."""
    return (
        case.norm == "batch_norm"
        and running_sums_matter(case)
        and param(case, "channel_axis") % case.x.ndim > 0
    )


def long_offset_rows(channel_axis: int = 1) -> tuple[Case, str]:
    """NUM.D3's example: two channels of 10^5 values 10^4 + 7/16 + a multiple of 1/2: each step of a
    running float32 sum past 2^23 rounds its 7/16 the same way, so the mean drifts by ~0.36 standard
    deviations (2 x the budget); a pairwise sum stays within ~10^-3."""
    rng = np.random.default_rng(0)
    x = 1e4 + 0.4375 + np.round(rng.normal(size=(2, 2, 50_000)) * 2) / 2
    params = {
        "channel_axis": channel_axis,
        "eps": 1e-5,
        "training": True,
        "momentum": 0.0,
        "running_var": "biased",
    }
    return Case("batch_norm", x, params, "offset"), "float32"


def sequential_sums(adapters: str, reason: str, acc_of: Callable[[str], str], dtypes: tuple) -> Divergence:
    """NUM.D3 for `adapters`: BatchNorm's batch statistics as running sums over outer axes, in
    acc_of(dtype), for the input `dtypes` it was measured in."""
    return Divergence(
        adapters=adapters,
        norm="batch_norm",
        clause="NUM.D3",
        reason=reason,
        applies=lambda case, dtype: dtype in dtypes and sums_outer_axes(case, dtype),
        example=long_offset_rows,
        model=Computes(sequentially_summed(acc_of), kind="precision"),
    )


def running_sums_bound(acc_of: Callable[[str], str]) -> Callable:
    """Bounded's absolute(case, dtype, which) for y where the statistics are running sums in
    acc_of(dtype) in an order no simulation reproduces (NUM.D3): a recursive sum of n values errs by at
    most γ = (n - 1) u of their magnitudes (Higham, Accuracy and Stability, 4.2), so the mean by
    dm = γ mean|x|, the two-pass variance by dm² + γ (var + dm²), and y by |scale| (dm + |x - mean| dv /
    (2 (var + eps))) / sqrt(var + eps); RMSNorm's mean square by γ relative, y by γ/2 |y|."""

    def absolute(case: Case, dtype: str, which: str):
        if which != "y" or not batch_stats(case) or not case.x.size:
            return None
        unit = float(finfo(acc_of(dtype)).eps) / 2
        gamma = (values_per_statistic(case) - 1) * unit
        with np.errstate(all="ignore"):
            if case.norm == "rms_norm":
                return SAFETY * gamma / 2 * np.abs(reference_value(case, "y"))
            view, axes, back = statistic_view(case.norm, case.x, case.params)
            var, eps = view.var(axis=axes, keepdims=True), param(case, "eps")
            dm = gamma * np.mean(np.abs(view), axis=axes, keepdims=True)
            dv = dm * dm + gamma * (var + dm * dm)
            centred = np.abs(view - view.mean(axis=axes, keepdims=True))
            loss = (dm + centred * dv / (2 * (var + eps))) / np.sqrt(var + eps)
            return SAFETY * np.asarray(back(loss), dtype=np.float64) * np.abs(scale_along(case))

    return absolute


def running_sums(adapters: str, norms: tuple, reason: str, acc_of: Callable[[str], str]) -> list[Divergence]:
    """NUM.D3 for `adapters` whose reductions are running sums in an order not reproduced: the bound."""

    def example(norm: str):
        def build() -> tuple[Case, str]:
            # one channel (instance, row) of 10^5 values, contiguous: NUM.N6's yardstick sums it pairwise
            case, dtype = long_offset_rows(1)
            x: np.ndarray = case.x.reshape(2, -1, 1)
            params: dict[str, Any] = {"channel_axis": -1, "eps": 1e-5}
            if norm == "batch_norm":
                x = x.reshape(-1, 1)
                params.update(training=True, running_var="biased", momentum=0.0)
            if norm == "layer_norm":
                x, params = x.reshape(2, -1), {"axes": (-1,), "eps": 1e-5}
            if norm == "group_norm":
                params["groups"] = 1
            return Case(norm, x, params, "offset"), dtype

        return build

    return [
        Divergence(
            adapters=adapters,
            norm=norm,
            clause="NUM.D3",
            reason=reason,
            applies=running_sums_matter,
            example=example(norm),
            model=Bounded(absolute=running_sums_bound(acc_of)),
        )
        for norm in norms
    ]


# --- LN.D10 for an L2 normalize: rsqrt(sum x^2) differentiated in the input dtype --------------------


def rsqrt_of_square_sum_underflows(case: Case, dtype: str) -> bool:
    """LN.D10 for an L2 normalize (Keras ops.normalize, TF l2_normalize): rsqrt(sum x^2)/sum x^2 below
    the input dtype's smallest normal (float32 or narrower)."""
    return dtype != "float64" and norm_of(case) ** 3 > 1.0 / tiny(dtype)


def subnormal_projection(case: Case, dtype: str, which: str):
    """LN.D10 for an L2 normalize in the input dtype: rsqrt(v)/v = 1/norm^3 rounded among the subnormals
    keeps a few bits - the projection x (x·g) / norm^3 is off by up to |x (x·g)| * spacing / 2 there;
    below the smallest subnormal it is lost whole (the `either` model), above the normals it is exact."""
    if which != "x":
        return None
    info = finfo(dtype)
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    cube = 1.0 / lp_norm(case.x, 2.0, axes) ** 3
    partial = (cube >= float(info.smallest_subnormal)) & (cube < float(info.tiny))
    projection = np.abs(case.x * np.sum(case.x * case.cotangent, axis=axes, keepdims=True))
    return np.where(partial, SAFETY * projection * float(info.smallest_subnormal) / 2, 0.0)


# the norm's derivative lost, wholly or to the bits a subnormal leaves it
LP_RSQRT_HELD = OneOf((Computes(statistic_held, either=True), Bounded(absolute=subnormal_projection)))


# --- TensorFlow's kernels, shared by the families built on them (tf.nn, tf_keras, Keras on TF) ---------


def tf_rsqrt_grad(adapter: str, norm: str, example: Callable[[], tuple[Case, str]]) -> Divergence:
    """LN.D10 where TF's RsqrtGrad, -dy y^3 / 2, differentiates rsqrt(var + eps) in float32."""
    return Divergence(
        adapters=adapter,
        norm=norm,
        clause="LN.D10",
        reason="TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        applies=rsqrt_jvp_underflows,
        example=example,
        shows_in="gradient",
        model=RSQRT_HELD,
    )


def tf_moments_sums(adapter: str) -> Divergence:
    """NUM.D3 where BatchNorm's statistics come from tf.nn.moments in the input dtype (float32, float64)."""
    return sequential_sums(
        adapter,
        "tf.nn.moments sums the batch axes as one running float32 (float64) sum: its error grows as n u",
        acc_of=lambda dtype: dtype,
        dtypes=("float32", "float64"),
    )
