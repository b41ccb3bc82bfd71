"""haiku's known divergences, by clause: the one-pass variance, unclipped and in the input dtype (BN.D8),
rsqrt's derivative in float16 (LN.D10), float16 squares (RMS.D4) and, under a jmp policy, the parameters
and running statistics cast to the compute type (MP.D40). known.py lists them in the family's order, with
the entries haiku shares with flax and equinox (BN.D14, LN.D10, NUM.D1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normconf.reference import RunningStats
from normconf.vocabulary import (
    HALF_SQUARE_LIMIT,
    OFFSET_ROWS,
    RSQRT_HELD,
    Case,
    Computes,
    Divergence,
    Envelope,
    Model,
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
    reference_value,
    rounded,
    statistic_view,
)

from .known_common import HALVES, XLA_PROMOTED_HALF, CastFirst


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
        adapters="haiku",
        norm="batch_norm",
        clause="BN.D8",
        reason="haiku's one-pass variance carries its error into the gradient: where E[x^2] dwarfs var + eps "
        "its rounding, amplified by 1/sqrt(var + eps), exceeds a backward-stable gradient's",
        applies=one_pass_gradient_amplified,
        example=lambda: (
            Case(
                "batch_norm",
                _CONSTANT_1_5,
                {"channel_axis": 1, "eps": 1e-12, "training": True},
                "constant_channel",
                cotangent=_CONSTANT_1_5_COTANGENT,
            ),
            "float64",
        ),
        shows_in="gradient",
        model=one_pass_model(clip=False),
    ),
    Divergence(
        adapters="haiku",
        norm="batch_norm",
        clause="BN.D8",
        reason="haiku computes the variance in one pass, unclipped, in the input dtype",
        applies=_input_dtype_one_pass,
        example=lambda: (
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
        adapters="haiku",
        norm="batch_norm",
        clause="BN.D8",
        reason=(
            "haiku's unclipped one-pass variance goes below 0 on a constant channel: NaN where eps is smaller"
        ),
        applies=_unclipped_one_pass_can_go_negative,
        example=lambda: (
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
            adapters="haiku",
            norm=norm,
            clause="LN.D10",
            reason="haiku differentiates rsqrt in float16: -rsqrt(v)/(2v) overflows for v < ~6.1e-4",
            applies=half_rsqrt_jvp_overflows,
            example=lambda norm=norm, x=x, extra=extra: (
                Case(
                    norm,
                    x,
                    {"eps": 2.0**-20, **extra},
                    "constant_channel",
                    cotangent=np.array([0.125, -0.132, 0.64]).reshape(x.shape),
                ),
                "float16",
            ),
            shows_in="gradient",
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
            adapters="haiku",
            norm=norm,
            clause="LN.D10",
            reason=(
                "haiku differentiates rsqrt in float16: -rsqrt(v)/(2v) is a float16 subnormal for v > ~400, "
                "its few bits carry the divisor's term"
            ),
            applies=half_rsqrt_jvp_underflows,
            example=lambda norm=norm, extra=extra: (
                Case(
                    norm,
                    np.array([[100.125, 99.875, 100.625]]),
                    {"eps": 1e-12, **extra},
                    "offset",
                    cotangent=np.array([[0.125732421875, -0.132080078125, 0.640625]]),
                ),
                "float16",
            ),
            shows_in="gradient",
            model=RSQRT_HELD,
        )
        for norm, extra in (("rms_norm", {"axes": (-1,)}),)
    ),
]

# RMS.D4: float16 squares
RMS_D4: list[Divergence] = [
    Divergence(
        adapters="haiku",
        norm="rms_norm",
        clause="RMS.D4",
        reason="haiku squares in the input dtype: float16 x*x overflows for |x| > 255.9",
        applies=half_squares_overflow,
        example=lambda: (
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


# -- under a jmp policy (spec MP.D40) -------------------------------------------------------------------


def _state_stored_in_half(case: Case, dtype: str, which: str):
    """MP.D40's running statistics: the EMA updated in the compute type and stored in it (its hidden
    value and average are created in x's dtype; the policy's getter casts what is loaded)."""
    if which not in ("mean", "var"):
        return None
    return rounded(reference_value(case, which), dtype)


@dataclass(frozen=True)
class InHalf(Model):
    """What plain haiku computes in the half type on a case already cast (CastFirst): the reference with
    its running statistics stored in that type, or one of haiku's own divergences (`entries`) that holds
    on the cast case."""

    entries: tuple = ()

    def _models(self, case: Case, dtype: str) -> OneOf:
        own = [e.model for e in self.entries if e.holds_here() and e.applies(case, dtype)]
        return OneOf((Computes(_state_stored_in_half), *own))

    def judge(self, observations, dtype: str):
        return self._models(observations[0].case, dtype).judge(observations, dtype)

    def width(self, observation, dtype):
        return self._models(observation.case, dtype).width(observation, dtype)

    def describe(self) -> str:
        return "haiku in the half type"


def _policy_cast_applies(case: Case, dtype: str) -> bool:
    """MP.D40: a half call with anything the policy keeps in float32 - a scale, an offset, a state."""
    return dtype in HALVES and any(case.params.get(k) is not None for k in ("scale", "offset", "state"))


# an eval step from a running variance past float16 (1e6 is inf there): haiku's policy getter reads it
# as inf and the channel normalizes to its offset; the other channel as the reference
_PAST_HALF_X = np.array([[3.0e4, -2.0e4], [1.0e4, 5.0e3], [-4.0e4, 2.5e4]])


def mp_d40(known) -> list[Divergence]:
    """MP.D40's entries, modelled by haiku's own arithmetic (`known`: the family's entries so far, those
    naming plain haiku but the range limits, which stay NUM.D1) on the values the policy casts."""
    return [
        Divergence(
            adapters="haiku@mixed",
            norm=norm,
            clause="MP.D40",
            reason=(
                "a jmp policy (params=float32, compute=<half>) casts haiku's float32 scale, offset and "
                "running statistics to the half type when read, and its EMA is updated and stored in it"
            ),
            applies=_policy_cast_applies,
            example=example,
            model=CastFirst(
                InHalf(
                    tuple(
                        e for e in known if e.adapters == "haiku" and e.clause != "NUM.D1" and e.norm == norm
                    )
                ),
                ("scale", "offset", "state"),
            ),
        )
        for norm, example in (
            (
                "batch_norm",
                lambda: (
                    Case(
                        "batch_norm",
                        _PAST_HALF_X,
                        {
                            "channel_axis": -1,
                            "eps": 1e-5,
                            "training": False,
                            "running_var": "biased",
                            "scale": np.array([1.5, 0.75]),
                            "offset": np.array([0.25, -0.5]),
                            "state": RunningStats(np.zeros(2), np.array([1.0e6, 2.0]), 3),
                        },
                        "large",
                    ),
                    "float16",
                ),
            ),
        )
    ]
