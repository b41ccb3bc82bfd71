"""flax's known divergences (flax.linen and flax.nnx; "flax.*" entries hold for both), by clause:
the one-pass variance (BN.D8, LN.D4), nnx's float32 running statistics (BN.D15), the float16 backward
(LN.D5, LN.D10), a constant group at eps = 0 (NUM.D2) and, under the mixed policy, nnx's parameters and
eval statistics cast to the half type (MP.D30, MP.D31). known.py lists them in the family's order."""

from __future__ import annotations

import numpy as np

from normconf.reference import RunningStats
from normconf.vocabulary import (
    OFFSET_ROWS,
    SAFETY,
    Bounded,
    Case,
    Computes,
    Divergence,
    Envelope,
    OneOf,
    Simulated,
    float64_state_read,
    groups_where,
    half_rsqrt_jvp_groups,
    half_rsqrt_jvp_overflows,
    huge,
    offset_along,
    one_pass_exceeds_budget,
    one_pass_gradient_amplified,
    one_pass_in,
    one_pass_model,
    param,
    reference_value,
    rounded,
    scale_along,
    state_in_float32,
    statistic_view,
    zero_over_zero,
)

from .known_common import XLA_PROMOTED_HALF


def _flax_one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=True, acc="float32")


def _half_cotangent_times_rstd_overflows(case: Case, dtype: str) -> bool:
    """LN.D5 (flax): |g| * rsqrt(var + eps) beyond float16's range."""
    if dtype != "float16" or case.cotangent is None or not case.x.size:
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    smallest = float(np.min(view.var(axis=axes))) + param(case, "eps")
    return float(np.max(np.abs(case.cotangent))) / np.sqrt(smallest) > huge(dtype)


_NEAR_ONE = 1.0 + 1e-5 * np.array([[0.3, -1.2, 0.7, 0.2]])


# The models: what flax computes where a divergence holds (vocabulary/models.py).
def _float32_bookkeeping(case: Case, dtype: str, which: str):
    """BN.D15 (nnx, float64): the float32 BatchStats carry float32 rounding into what reads them - the
    state, an eval step's y, the training step's gradient - each within SAFETY * u32 of its terms."""
    u = SAFETY * float(np.finfo(np.float32).eps)
    if which in ("mean", "var"):
        return u * np.abs(reference_value(case, which))
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    state, eps = case.params["state"], param(case, "eps")
    with np.errstate(all="ignore"):
        if which == "y" and not param(case, "training"):  # eval: the float32 state's mean and variance
            axis = param(case, "channel_axis") % case.x.ndim
            shape = [-1 if i == axis else 1 for i in range(case.x.ndim)]
            mean, var = np.reshape(state.mean, shape), np.reshape(state.var, shape)
            spread = (np.abs(mean) + np.abs(case.x - mean)) / np.sqrt(var + eps)
            return u * (spread * np.abs(scale_along(case)) + np.abs(offset_along(case)))
        # a training step: the batch's statistics in float32, the mean's rounding amplified by |mean| / σ
        sigma = np.sqrt(view.var(axis=axes, keepdims=True) + eps)
        mean = view.mean(axis=axes, keepdims=True)
        xhat = (np.abs(mean) + np.abs(view - mean)) / sigma
        if which == "y":
            return u * (np.asarray(back(xhat)) * np.abs(scale_along(case)) + np.abs(offset_along(case)))
        if which == "scale":
            channel = param(case, "channel_axis") % case.x.ndim
            terms = np.abs(case.cotangent) * np.asarray(back(xhat))
            return u * np.sum(terms, axis=tuple(i for i in range(case.x.ndim) if i != channel))
        if which == "x":
            g = statistic_view(case.norm, np.abs(case.cotangent * scale_along(case)), case.params)[0]
            terms = g + g.mean(axis=axes, keepdims=True) + xhat * (g * xhat).mean(axis=axes, keepdims=True)
            return u * np.asarray(back(terms / sigma))
    return None


def _half_cotangent_groups(view, axes, case: Case, dtype: str):
    """LN.D5 (flax): the groups where |g| * rsqrt(var + eps) leaves float16's range."""
    g = statistic_view(case.norm, case.cotangent, case.params)[0]
    rstd = 1.0 / np.sqrt(view.var(axis=axes, keepdims=True) + param(case, "eps"))
    return np.max(np.abs(g), axis=axes, keepdims=True) * rstd > huge(dtype)


# BN.D8: the batch variance in one pass
BN_D8: list[Divergence] = [
    Divergence(
        adapters="flax.*",
        norm="batch_norm",
        clause="BN.D8",
        reason="flax computes the variance in one pass (use_fast_variance=True)",
        applies=_flax_one_pass,
        example=lambda: (
            Case(
                "batch_norm",
                OFFSET_ROWS.T.copy(),
                {"channel_axis": -1, "eps": 2.0**-20, "training": True},
                "offset",
            ),
            "float32",
        ),
        model=one_pass_model("float32", clip=True),
    ),
]

# BN.D15 (flax.nnx): float64 running statistics held in float32
BN_D15: list[Divergence] = [
    Divergence(
        adapters="flax.nnx",
        norm="batch_norm",
        clause="BN.D15",
        reason=(
            "flax.nnx stores float64 running statistics in float32 (param_dtype): the state after a step, "
            "and what reads it (eval), carry float32 rounding"
        ),
        applies=float64_state_read,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.1], [0.7], [1.3]]),
                {
                    "channel_axis": -1,
                    "eps": 2.0**-20,
                    "momentum": 0.5,
                    "running_var": "biased",
                    "training": True,
                    "state": RunningStats(np.array([0.1]), np.array([0.3]), 0),
                },
                "standard",
            ),
            "float64",
        ),
        shows_in="state",
        model=OneOf((Simulated(state_in_float32), Bounded(absolute=_float32_bookkeeping))),
    ),
]

# LN.D4, LN.D5: the one-pass variance of the other norms, and the float16 backward
LN_D4_D5: list[Divergence] = [
    *(
        Divergence(
            adapters="flax.*",
            norm=norm,
            clause="LN.D4",
            reason="flax computes the variance in one pass (use_fast_variance=True)",
            applies=_flax_one_pass,
            example=lambda norm=norm, shape=shape, extra=extra: (
                Case(norm, OFFSET_ROWS.reshape(shape), {"eps": 2.0**-20, **extra}, "offset"),
                "float32",
            ),
            model=one_pass_model("float32", clip=True),
        )
        for norm, shape, extra in (
            ("layer_norm", (1, 6), {"axes": (-1,)}),
            ("instance_norm", (1, 6, 1), {"channel_axis": -1}),
            ("group_norm", (1, 6), {"groups": 1, "channel_axis": -1}),
        )
    ),
    *(
        Divergence(
            adapters="flax.*",
            norm=norm,
            clause="LN.D4",
            reason="flax's one-pass variance (use_fast_variance=True) carries its error into the gradient",
            applies=one_pass_gradient_amplified,
            example=lambda norm=norm, x=x, extra=extra: (
                Case(
                    norm,
                    x,
                    {"eps": 1e-5, **extra},
                    "tiny_spread",
                    cotangent=np.array([0.7, -0.3, 0.2, -0.5]).reshape(x.shape),
                ),
                "float32",
            ),
            shows_in="gradient",
            model=one_pass_model("float32", clip=True),
        )
        for norm, x, extra in (
            ("layer_norm", _NEAR_ONE, {"axes": (-1,)}),
            ("instance_norm", _NEAR_ONE.reshape(1, 4, 1), {"channel_axis": -1}),
            ("group_norm", _NEAR_ONE.reshape(1, 4, 1), {"groups": 1, "channel_axis": -1}),
            ("batch_norm", _NEAR_ONE.T.copy(), {"channel_axis": -1, "training": True}),
        )
    ),
    *(
        Divergence(
            adapters="flax.*",
            norm=norm,
            clause="LN.D5",
            reason="flax's float16 backward multiplies the cotangent by rsqrt(var + eps) in float16",
            applies=_half_cotangent_times_rstd_overflows,
            example=lambda norm=norm, x=x, extra=extra: (
                Case(norm, x, {"eps": 1e-12, **extra}, "constant_channel", cotangent=np.full_like(x, 0.7)),
                "float16",
            ),
            shows_in="gradient",
            model=Envelope(groups_where(_half_cotangent_groups)),
        )
        for norm, x, extra in (
            ("layer_norm", np.array([[0.125], [-0.25]]), {"axes": (-1,)}),
            ("group_norm", np.array([[[0.125]], [[-0.25]]]), {"groups": 1, "channel_axis": -1}),
            ("instance_norm", np.array([[[0.125]], [[-0.25]]]), {"channel_axis": -1}),
        )
    ),
]

# LN.D10 (flax.linen): BatchNorm's rsqrt derivative in XLA's float16
LN_D10: list[Divergence] = [
    Divergence(
        adapters="flax.linen",
        norm="batch_norm",
        clause="LN.D10",
        reason=(
            "flax.linen's BatchNorm differentiates rsqrt through XLA's float16: -rsqrt(v)/(2v) overflows for "
            "v < ~6.1e-4 (measured with statistics near eps)"
        ),
        applies=half_rsqrt_jvp_overflows,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[1.0, -1.0, 5.5], [1.0, -4.5, 3.0]]) * 2.0**-23,
                {"eps": 1e-12, "channel_axis": 1, "training": False, "running_var": "biased"},
                "near_eps",
                cotangent=np.array([[0.125, -0.132, 0.64], [0.5, 0.25, -0.75]]),
            ),
            "float16",
        ),
        shows_in="gradient",
        cpu=XLA_PROMOTED_HALF,
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
]

# NUM.D2: a constant group at eps = 0, as measured (flax 0.12.7)
NUM_D2: list[Divergence] = [
    *(
        entry
        for norm, shape, params in (
            ("batch_norm", (5, 3), {"channel_axis": -1}),
            ("group_norm", (2, 5, 4), {"channel_axis": -1, "groups": 2}),
            ("layer_norm", (2, 3, 4), {"axes": (1, 2)}),
        )
        for entry in zero_over_zero(
            "flax.*",
            (norm,),
            "any",
            "flax answers a constant group's 0/0 at eps = 0 with NaN, its offset or a finite value near "
            "it, as rounding in its statistics of the group falls (measured: NaN for a row whose mean is "
            "exact, the offset, and offset - 2e-4 for three 1.5s over axes (0, 2))",
            shape,
            # the other groups: flax's one-pass variance (LN.D4, BN.D4), simulated
            base=Simulated(one_pass_in("float32", clip=True)),
            **params,
        )
    ),
]


# -- under the mixed policy (spec MP.D30, MP.D31): flax.nnx's promote_dtype -----------------------------
HALVES = ("float16", "bfloat16")
SUM_ORDER_SLACK = 4.0  # x the sequential simulation's distance from the reference: XLA's float16 order


def _nnx_eval(case: Case) -> bool:
    """An nnx BatchNorm eval step on running statistics (MP.D31's territory)."""
    return case.norm == "batch_norm" and not param(case, "training") and case.params.get("state") is not None


def _promoted(case: Case, dtype: str) -> Case:
    """The case with scale and offset as nnx's promote_dtype casts them to `dtype` (MP.D30)."""
    cast = {k: rounded(case.params[k], dtype) for k in ("scale", "offset") if case.params.get(k) is not None}
    return Case(case.norm, case.x, {**case.params, **cast}, case.kind, cotangent=case.cotangent)


def _summed_in(values: np.ndarray, axis: int, dtype: str) -> np.ndarray:
    """values summed over every axis but `axis`, row by row (row-major), each partial sum rounded to
    `dtype`: the transposed broadcast of an nnx eval step (a half reduce in XLA's CPU loop order - bit for
    bit in bfloat16; float16's vectorized order differs, SUM_ORDER_SLACK)."""
    rows = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
    total = np.zeros(rows.shape[1])
    for row in rows:
        total = rounded(total + row, dtype)
    return total


def _eval_in_half(case: Case, dtype: str, which: str):
    """MP.D31: the eval step as nnx runs it - running mean and variance, eps, scale and offset cast to
    `dtype` and every operation rounded to it: y = ((x - m) * (rsqrt(v + eps) * scale)) + offset, dx =
    g * (rsqrt(v + eps) * scale), dscale = Σ g (x - m) times rsqrt(v + eps), doffset = Σ g, each sum in
    `dtype` (measured bit for bit, flax 0.12.8: 20 of 20 drawn steps, y and dx in both half types, dscale
    and doffset in bfloat16)."""
    if which in ("mean", "var"):
        return None
    axis = param(case, "channel_axis") % case.x.ndim
    shape = [-1 if i == axis else 1 for i in range(case.x.ndim)]
    state = case.params["state"]
    mean, var = (rounded(np.reshape(v, shape), dtype) for v in (state.mean, state.var))
    inv = rounded(1.0 / np.sqrt(rounded(var + rounded(param(case, "eps"), dtype), dtype)), dtype)
    mul = rounded(inv * rounded(scale_along(case), dtype), dtype)
    centered = rounded(case.x - mean, dtype)
    if which == "y":
        return rounded(rounded(centered * mul, dtype) + rounded(offset_along(case), dtype), dtype)
    g = rounded(case.cotangent, dtype)
    if which == "x":
        return rounded(g * mul, dtype)
    if which == "scale":
        return rounded(_summed_in(rounded(g * centered, dtype), axis, dtype) * inv.reshape(-1), dtype)
    return _summed_in(g, axis, dtype)  # offset


def _nnx_promoted(case: Case, dtype: str, which: str):
    """MP.D30 / MP.D31: what flax.nnx computes with dtype=<half> and param_dtype=float32. A step on batch
    statistics: float32 statistics and arithmetic on the scale and offset cast to the half type, y and
    dx rounded to it, dscale and doffset taken in float32 and rounded to it on their way back through the
    cast; an eval step: `_eval_in_half`. The running statistics update in float32: the reference."""
    if dtype not in HALVES or which in ("mean", "var"):
        return None
    if _nnx_eval(case):
        return _eval_in_half(case, dtype, which)
    value = reference_value(_promoted(case, dtype), which)
    return rounded(value, dtype) if which in ("scale", "offset") else value


def _nnx_sum_order(case: Case, dtype: str, which: str):
    """MP.D31's half sums in another order than the simulation's: SUM_ORDER_SLACK x its distance from
    the reference (dscale and doffset of an eval step only)."""
    if dtype not in HALVES or which not in ("scale", "offset") or not _nnx_eval(case):
        return None
    return SUM_ORDER_SLACK * np.abs(_eval_in_half(case, dtype, which) - reference_value(case, which))


def _nnx_promoted_one_pass(case: Case, dtype: str, which: str):
    """MP.D30 on top of flax's one-pass float32 variance (LN.D4, BN.D8): y of a batch-statistics step."""
    if dtype not in HALVES or which != "y" or _nnx_eval(case):
        return None
    return one_pass_in("float32", clip=True)(_promoted(case, dtype), dtype, "y")


NNX_PROMOTED = OneOf(
    (Computes(_nnx_promoted, absolute=_nnx_sum_order), Simulated(_nnx_promoted_one_pass)), kind="precision"
)


def _nnx_parameters_cast(case: Case, dtype: str) -> bool:
    """MP.D30: a half step with a scale or an offset, on batch statistics (eval is MP.D31)."""
    learned = any(case.params.get(k) is not None for k in ("scale", "offset"))
    return dtype in HALVES and learned and not _nnx_eval(case)


def _nnx_eval_cast(case: Case, dtype: str) -> bool:
    return dtype in HALVES and _nnx_eval(case)


# MP.D30's forward examples: a scale of 1 + 2^-11 + 2^-13 (float16 and bfloat16 hold 1 + 2^-10, 1) and an
# offset cancelling x-hat * scale at the first value (-1.2656729 = -x-hat_0 * scale in float32)
_CANCELLING_X = np.array([[1.0, -1.0, 0.5, -0.5]])
_CANCELLING = {"scale": 1.0006103515625, "offset": -1.2656729221343994}


def _cancelling(norm: str, x: np.ndarray, channels: int, **extra):
    return lambda: (
        Case(
            norm,
            x,
            {
                "eps": 1e-5,
                **extra,
                "scale": np.full(channels, _CANCELLING["scale"]),
                "offset": np.full(channels, _CANCELLING["offset"]),
            },
            "standard",
        ),
        "float16",
    )


def _parameter_gradients(norm: str, **extra):
    """MP.D30's gradient example: dscale rounded to bfloat16, held to float32 (MP.N1)."""
    return lambda: (
        Case(
            norm,
            np.array([[0.125, 2.0], [0.75, -1.0], [1.25, 0.5], [-0.375, 0.25]]),
            {"eps": 1e-5, **extra, "scale": np.array([0.5, 1.5])},
            "standard",
            cotangent=np.array([[-1.25, 0.5], [0.75, -0.375], [1.125, 0.25], [-0.625, 1.0]]),
        ),
        "bfloat16",
    )


MP_D30_D31: list[Divergence] = [
    *(
        Divergence(
            adapters="flax.nnx@mixed",
            norm=norm,
            clause="MP.D30",
            reason=(
                "flax.nnx casts its float32 scale and offset to dtype before use (promote_dtype): y is "
                "computed from them rounded to the half type, and dscale, doffset come back rounded to it"
            ),
            applies=_nnx_parameters_cast,
            example=example,
            shows_in=shows_in,
            model=NNX_PROMOTED,
        )
        for norm, example, shows_in in (
            (
                "batch_norm",
                _cancelling("batch_norm", _CANCELLING_X.T.copy(), 1, channel_axis=-1, training=True),
                "forward",
            ),
            ("layer_norm", _cancelling("layer_norm", _CANCELLING_X, 4, axes=(-1,)), "forward"),
            ("group_norm", _cancelling("group_norm", _CANCELLING_X, 4, groups=1, channel_axis=-1), "forward"),
            (
                "instance_norm",
                _cancelling("instance_norm", _CANCELLING_X.reshape(1, 4, 1), 1, channel_axis=-1),
                "forward",
            ),
            ("rms_norm", _parameter_gradients("rms_norm", axes=(-1,)), "gradient"),
        )
    ),
    Divergence(
        adapters="flax.nnx@mixed",
        norm="batch_norm",
        clause="MP.D31",
        reason="flax.nnx's eval step casts the running mean and variance, eps, scale and offset to dtype: "
        "(x - mean), var + eps and its rsqrt run in the half type",
        applies=_nnx_eval_cast,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5], [0.625], [0.375]]),
                {
                    "channel_axis": -1,
                    "eps": 1e-5,
                    "training": False,
                    "running_var": "biased",
                    "state": RunningStats(
                        np.array([0.49951171875 + 2.0**-14]), np.array([2.0**-12 * 1.3]), 3
                    ),
                },
                "standard",
            ),
            "bfloat16",
        ),
        model=NNX_PROMOTED,
    ),
]
