"""haiku's known divergences, by clause: the one-pass variance, unclipped and in the input dtype (BN.D8),
rsqrt's derivative in float16 (LN.D10) and float16 squares (RMS.D4). known.py lists them in the family's
order, with the entries haiku shares with flax and equinox (BN.D14, LN.D10, NUM.D1)."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    HALF_SQUARE_LIMIT,
    OFFSET_ROWS,
    RSQRT_HELD,
    Case,
    Divergence,
    Envelope,
    OneOf,
    batch_stats,
    groups_where,
    groups_where_any,
    half_rsqrt_jvp_groups,
    half_rsqrt_jvp_overflows,
    half_rsqrt_jvp_underflows,
    half_squares_overflow,
    one_pass_exceeds_budget,
    one_pass_gradient_amplified,
    one_pass_model,
    param,
    statistic_view,
)

from .known_common import XLA_PROMOTED_HALF


def _input_dtype_one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=False, acc=dtype)


def _unclipped_one_pass_can_go_negative(case: Case, dtype: str) -> bool:
    """BN.D8, haiku: mean(x²) − mean² unclipped, in the input dtype, each mean a sum times 1/n (as XLA
    divides) — on a (near-)constant channel it can come out a few ulps of mean(x²) below 0, and with
    eps smaller than that rsqrt(var + eps) is NaN. True where var + eps is within 4 ulps of mean(x²)."""
    if not batch_stats(case) or not case.x.size:
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    unit = float(np.finfo(np.float32 if dtype in ("float16", "bfloat16") else np.dtype(dtype)).eps)
    unit = 2.0**-8 if dtype == "bfloat16" else 2.0**-11 if dtype == "float16" else unit
    with np.errstate(over="ignore", invalid="ignore"):
        mean_square = np.mean(view * view, axis=axes)
        return bool(np.any(view.var(axis=axes) + param(case, "eps") <= 4 * unit * mean_square))


_CONSTANT_30 = np.full((30, 1), 1.5)  # mean(x) and mean(x²) multiplied by fl(1/30): var comes out < 0
# a constant channel (1.5) beside a varied one: with eps = 1e-12, mean(x²) - mean² in float64 is off by
# ~u * 2.25 against var + eps = 1e-12, and the gradient through 1/sqrt(var + eps) carries it (haiku, BN.D8)
_CONSTANT_1_5 = np.array([[1.5, -0.13], [1.5, -0.54], [1.5, 0.95], [1.5, -0.62], [1.5, -0.22], [1.5, -0.54]])
_CONSTANT_1_5_COTANGENT = np.array(
    [[0.13, -0.13], [0.1, -0.54], [1.3, 0.95], [-1.27, -0.62], [-2.33, -0.22], [-0.73, -0.54]]
)


# The models: what haiku computes where a divergence holds (vocabulary/models.py).
def _near_zero_one_pass_groups(view, axes, case: Case, dtype: str):
    """BN.D8 (haiku): the groups where var + eps is within 4 ulps of mean(x²) (the unclipped one-pass
    variance can come out below 0 there) - batch statistics only: an eval step computes no variance."""
    unit = 2.0**-8 if dtype == "bfloat16" else 2.0**-11 if dtype == "float16" else float(np.finfo(dtype).eps)
    mean_square = np.mean(view * view, axis=axes, keepdims=True)
    return batch_stats(case) & (
        view.var(axis=axes, keepdims=True) + param(case, "eps") <= 4 * unit * mean_square
    )


# BN.D8: the batch variance in one pass, unclipped, in the input dtype
BN_D8: list[Divergence] = [
    Divergence(
        "haiku",
        "batch_norm",
        "BN.D8",
        "haiku's one-pass variance carries its error into the gradient: where E[x^2] dwarfs var + eps "
        "its rounding, amplified by 1/sqrt(var + eps), exceeds a backward-stable gradient's",
        one_pass_gradient_amplified,
        lambda: (
            Case(
                "batch_norm",
                _CONSTANT_1_5,
                {"channel_axis": 1, "eps": 1e-12, "training": True},
                "constant_channel",
                cotangent=_CONSTANT_1_5_COTANGENT,
            ),
            "float64",
        ),
        "gradient",
        model=one_pass_model(clip=False),
    ),
    Divergence(
        "haiku",
        "batch_norm",
        "BN.D8",
        "haiku computes the variance in one pass, unclipped, in the input dtype",
        _input_dtype_one_pass,
        lambda: (
            Case(
                "batch_norm",
                OFFSET_ROWS.T.copy(),
                {"channel_axis": -1, "eps": 2.0**-20, "training": True},
                "offset",
            ),
            "float32",
        ),
        model=one_pass_model(clip=False),
    ),
    Divergence(
        "haiku",
        "batch_norm",
        "BN.D8",
        "haiku's unclipped one-pass variance goes below 0 on a constant channel: NaN where eps is smaller",
        _unclipped_one_pass_can_go_negative,
        lambda: (
            Case(
                "batch_norm",
                _CONSTANT_30,
                {"channel_axis": -1, "eps": 1e-12, "training": True},
                "constant_channel",
            ),
            "float32",
        ),
        model=OneOf(
            (
                one_pass_model(clip=False),
                # where var + eps is within the one-pass rounding of 0, the divisor has no digit left
                Envelope(groups_where(_near_zero_one_pass_groups), allowed="any", kind="special"),
            )
        ),
    ),
]

# LN.D10: rsqrt's derivative in float16
LN_D10: list[Divergence] = [
    *(
        Divergence(
            "haiku",
            norm,
            "LN.D10",
            "haiku differentiates rsqrt in float16: -rsqrt(v)/(2v) overflows for v < ~6.1e-4",
            half_rsqrt_jvp_overflows,
            lambda norm=norm, x=x, extra=extra: (
                Case(
                    norm,
                    x,
                    {"eps": 2.0**-20, **extra},
                    "constant_channel",
                    cotangent=np.array([0.125, -0.132, 0.64]).reshape(x.shape),
                ),
                "float16",
            ),
            "gradient",
            cpu=cpu,
            model=Envelope(groups_where(half_rsqrt_jvp_groups)),
        )
        for norm, x, extra, cpu in (
            ("layer_norm", np.full((1, 3), 1e4), {"axes": (-1,)}, None),
            ("group_norm", np.full((1, 3, 1), 1e4), {"groups": 1, "channel_axis": -1}, None),
            ("instance_norm", np.full((1, 3, 1), 1e4), {"channel_axis": -1}, None),
            ("batch_norm", np.full((3, 1), 1e4), {"channel_axis": -1, "training": True}, XLA_PROMOTED_HALF),
            ("rms_norm", np.full((1, 3), 2.0**-10), {"axes": (-1,)}, None),
        )
    ),
    *(
        Divergence(
            "haiku",
            norm,
            "LN.D10",
            "haiku differentiates rsqrt in float16: -rsqrt(v)/(2v) is a float16 subnormal for v > ~400, "
            "its few bits carry the divisor's term",
            half_rsqrt_jvp_underflows,
            lambda norm=norm, extra=extra: (
                Case(
                    norm,
                    np.array([[100.125, 99.875, 100.625]]),
                    {"eps": 1e-12, **extra},
                    "offset",
                    cotangent=np.array([[0.125732421875, -0.132080078125, 0.640625]]),
                ),
                "float16",
            ),
            "gradient",
            model=RSQRT_HELD,
        )
        for norm, extra in (("rms_norm", {"axes": (-1,)}),)
    ),
]

# RMS.D4: float16 squares
RMS_D4: list[Divergence] = [
    Divergence(
        "haiku",
        "rms_norm",
        "RMS.D4",
        "haiku squares in the input dtype: float16 x*x overflows for |x| > 255.9",
        half_squares_overflow,
        lambda: (
            Case("rms_norm", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 1.0}, "large"),
            "float16",
        ),
        model=Envelope(
            groups_where_any(lambda x, dtype: np.abs(x) > HALF_SQUARE_LIMIT),
            allowed="non_finite_or_zero",
            kind="precision",
        ),
    ),
]
