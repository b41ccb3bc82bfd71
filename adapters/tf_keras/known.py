"""Keras 2's (tf_keras) known divergences, sorted by clause: each a model of what the framework computes
instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf.reference import RunningStats
from normconf.vocabulary import (
    HUGE_2X3,
    LP_GRADIENT_OUT_OF_RANGE,
    LP_RSQRT_HELD,
    SMALL_COTANGENT,
    Case,
    CpuDependency,
    Divergence,
    Envelope,
    OneOf,
    Raises,
    Reference,
    Simulated,
    eps_in,
    eps_underflows,
    float64_running_update,
    groups_where,
    groups_where_var_below,
    half_rsqrt_jvp_groups,
    half_rsqrt_jvp_overflows,
    lp_in_dtype,
    param,
    power_sum_out_of_range,
    rounded,
    rows_out_of_range,
    rsqrt_of_square_sum_underflows,
    squares_overflow,
    tf_moments_sums,
    tf_rsqrt_grad,
    tiny,
)

from . import known_mixed


def _decay(case: Case) -> float:
    """BN.D24: the weight tf_keras gives the batch, 1 - (1 - momentum), as the float32 tensor it makes."""
    return float(np.float32(1.0 - (1.0 - param(case, "momentum"))))


def _decay_rounded(case: Case, dtype: str) -> bool:
    """BN.D24: a float64 training step whose decay is not a float32 number (float64 is never fused); a
    cumulative average (momentum None) has no decay to round."""
    if param(case, "momentum") is None:
        return False
    return float64_running_update(case, dtype) and _decay(case) != param(case, "momentum")


def _half_square_sums(case: Case, dtype: str) -> np.ndarray:
    """LP.D5: each row's sum of squares as l2_normalize takes it in the input dtype."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    with np.errstate(all="ignore"):
        return rounded(np.sum(rounded(case.x * case.x, dtype), axis=axes, keepdims=True), dtype)


def _unfloored_half_rows(case: Case, dtype: str) -> bool:
    """LP.D5: float16, where epsilon=1e-12 rounds to 0: a row whose float16 sum of squares is below the
    normal range gets rsqrt of a subnormal or of 0 - no floor at all."""
    return (
        dtype == "float16"
        and rounded(param(case, "eps"), dtype) == 0
        and bool(np.any(_half_square_sums(case, dtype) < tiny(dtype)))
    )


def _l2_normalized_in_dtype(case: Case, dtype: str, which: str):
    """LP.D5: x * rsqrt(max(sum x^2, eps)), every step (eps included) rounded to the input dtype."""
    if which != "y":
        return None
    with np.errstate(all="ignore"):
        floor = np.maximum(_half_square_sums(case, dtype), rounded(param(case, "eps"), dtype))
        return rounded(case.x * rounded(1.0 / np.sqrt(floor), dtype), dtype)


KNOWN: list[Divergence] = [
    *(
        Divergence(
            adapters="tf_keras",
            norm=norm,
            clause="BN.D14",
            reason=(
                "a float16 LayerNormalization or GroupNormalization adds eps to float16 statistics: eps "
                "below ~3e-8 rounds to 0 and a zero variance gives 0/0 (LN.D12, GN.D11)"
            ),
            applies=eps_underflows,
            example=lambda norm=norm, extra=extra: (
                Case(norm, np.array([[0.5, 0.5]]), {"eps": 1e-12, **extra}, "constant_channel"),
                "float16",
            ),
            model=OneOf(
                (
                    Reference(eps_in(), kind="special"),
                    Envelope(groups_where_var_below(lambda dtype: 2.0**-24)),
                )
            ),
        )
        for norm, extra in (
            ("layer_norm", {"axes": (-1,)}),
            ("group_norm", {"groups": 1, "channel_axis": 1}),
        )
    ),
    Divergence(
        adapters="tf_keras",
        norm="batch_norm",
        clause="BN.D24",
        reason=(
            "tf_keras makes the moving-average decay 1 - momentum a float32 tensor before casting it to the "
            "float64 variable: float64 running statistics move by a float32-rounded weight"
        ),
        applies=_decay_rounded,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5, -1.25, 2.0], [1.5, 0.75, -0.5]]),
                {
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "running_var": "biased",
                    "momentum": 0.01,
                    "training": True,
                    "state": RunningStats.initial(3),
                },
                "standard",
            ),
            "float64",
        ),
        shows_in="state",
        model=Reference(lambda case, dtype: {"momentum": _decay(case)}, kind="precision"),
    ),
    Divergence(
        adapters="tf_keras",
        norm="lp_normalize",
        clause="LP.D4",
        reason=(
            "UnitNormalization is tf.linalg.l2_normalize: it sums x^2 in the input dtype, so float16 rows of "
            "norm above 256 overflow and squares below float16's normal range lose their digits"
        ),
        applies=lambda case, dtype: power_sum_out_of_range(case, dtype, norm_power=2),
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([[300.0, 400.0]]),
                {"axes": (-1,), "eps": 1e-12, "eps_placement": "max_power_sum"},
                "large",
            ),
            "float16",
        ),
        model=OneOf(
            (Simulated(lp_in_dtype), Envelope(rows_out_of_range(norm_power=2), LP_GRADIENT_OUT_OF_RANGE))
        ),
    ),
    # tf.linalg.l2_normalize under both: UnitNormalization and the tf.nn adapter (its default profile's
    # seed 2 drew three float16 subnormals: y = ±inf)
    Divergence(
        adapters="tf[._][kn]*",
        norm="lp_normalize",
        clause="LP.D5",
        reason="tf.linalg.l2_normalize's epsilon=1e-12 is 0 in float16: a row whose float16 sum of squares "
        "underflows is multiplied by rsqrt(0) = inf",
        applies=_unfloored_half_rows,
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([[0.0, 0.0], [2.0**-24, 0.0]]),
                {"axes": (-1,), "eps": 1e-12, "eps_placement": "max_power_sum"},
                "integers",
            ),
            "float16",
        ),
        model=Simulated(_l2_normalized_in_dtype),
    ),
]

# NUM.D1: squares summed beyond float32 (float16 where the layer computes in it: LN.D12, GN.D11, LP.D8)
KNOWN += [
    *squares_overflow("tf_keras", ("batch_norm",), running_var="biased"),
    *squares_overflow("tf_keras", ("layer_norm", "group_norm"), half_in_half=True),
    *squares_overflow("tf_keras", ("lp_normalize",), half_in_half=True, eps_placement="max_power_sum"),
]

# BN.D20 where tf_keras takes the fused kernel (fused=True: running_var="unbiased", BN.D23): TF picks the
# oneDNN half-precision FusedBatchNormV3 by the CPU's features, and a oneDNN capped below them raises
KNOWN += [
    Divergence(
        adapters="tf_keras",
        norm="batch_norm",
        clause="BN.D20",
        reason=f"tf_keras' fused BatchNormalization routes {dtype} to oneDNN by the CPU's features, "
        "but oneDNN is capped below them: it raises",
        applies=lambda case, dtype, half=dtype: dtype == half and param(case, "running_var") == "unbiased",
        example=lambda dtype=dtype: (
            Case(
                "batch_norm",
                np.array([[[[0.5, -1.0]]], [[[2.0, 0.25]]]]),
                {"channel_axis": -1, "training": True, "running_var": "unbiased"},
                "standard",
            ),
            dtype,
        ),
        cpu=CpuDependency("onednn", feature, present=False, on_cpu=True),
        model=Raises(pattern="could not create a primitive"),
    )
    for dtype, feature in (("bfloat16", "avx512f"), ("float16", "avx512_fp16"))
]

# LN.D10 in float16: tf_keras' LayerNormalization and GroupNormalization compute a float16 layer in float16
# (LN.D12, GN.D11), so TF's RsqrtGrad, -rsqrt(v)/(2v), leaves float16's range for v < ~6.1e-4 (found by
# the quick profile run through the CI workflow: rows 1 ± 1e-3, eps 1e-12)
KNOWN += [
    Divergence(
        adapters="tf_keras",
        norm=norm,
        clause="LN.D10",
        reason="a float16 layer differentiates rsqrt in float16: -rsqrt(v)/(2v) overflows for v < ~6.1e-4",
        applies=half_rsqrt_jvp_overflows,
        example=lambda norm=norm, x=x, params=params: (
            Case(norm, x, params, "tiny_spread", cotangent=np.array([0.125, -0.132, 0.64]).reshape(x.shape)),
            "float16",
        ),
        shows_in="gradient",
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    )
    for norm, x, params in (
        ("layer_norm", np.array([[1.0, 1.0, 1.0009765625]]), {"axes": (-1,), "eps": 1e-12}),
        ("group_norm", np.array([[1.0, 1.0, 1.0009765625]]), {"groups": 1, "channel_axis": 1, "eps": 1e-12}),
    )
]

# NUM.D3: BatchNormalization's batch statistics as tf.nn's running sums (measured with TF 2.21 on 3-D
# and 4-D inputs, channels first and last: bit for bit the same statistics)
KNOWN += [
    tf_moments_sums("tf_keras"),
]

# LN.D10 in float32: GroupNormalization normalizes with tf.nn.batch_normalization, whose
# tf.math.rsqrt(var + eps) differentiates through TF's RsqrtGrad, -dy * y^3 / 2: below float32's
# smallest normal for v > ~2e25 (tf_keras v2.21.0 group_normalization.py; found by the quick gate once
# seeded by identity: values ~1e18, groups 1)
KNOWN += [
    tf_rsqrt_grad(
        "tf_keras",
        "group_norm",
        lambda: (
            Case(
                "group_norm",
                np.array(
                    [
                        [8.928809573238702e17, -1.5008069836351734e18],
                        [-2.9924863714923643e18, -3.151854259746636e18],
                    ]
                ),
                {"groups": 1, "channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=np.array(
                    [[-0.9475444555282593, -0.8804417848587036], [-1.3612605333328247, 0.7226120829582214]]
                ),
            ),
            "float32",
        ),
    ),
    # BatchNormalization's non-fused path (running_var="biased") normalizes with tf.nn.batch_normalization
    # in float32 (half inputs cast up): the same RsqrtGrad (found by tf_keras@mixed's default profile,
    # seed 2: bfloat16 values ~1e18, dx 2x its budget)
    tf_rsqrt_grad(
        "tf_keras",
        "batch_norm",
        lambda: (
            Case(
                "batch_norm",
                rounded(HUGE_2X3, "bfloat16"),
                {"channel_axis": 1, "eps": 1e-12, "running_var": "biased", "training": True},
                "large",
                cotangent=rounded(SMALL_COTANGENT, "bfloat16"),
            ),
            "bfloat16",
        ),
    ),
]

# LN.D10 for UnitNormalization: tf.linalg.l2_normalize multiplies by rsqrt(sum x^2) in the input dtype,
# and TF's RsqrtGrad forms y^3 there: a float16 subnormal for norms above ~40 (x = 100.125: 6 % of the
# projection term lost, default profile seed 1), zero in float32 for norms above ~1e13 (values ~1e18)
KNOWN += [
    Divergence(
        adapters="tf_keras",
        norm="lp_normalize",
        clause="LN.D10",
        reason="UnitNormalization differentiates rsqrt(sum x^2) in the input dtype: rsqrt(v)/v under- or "
        "subflows for large v",
        applies=rsqrt_of_square_sum_underflows,
        example=lambda x=x, g=g, dtype=dtype: (
            Case(
                "lp_normalize",
                np.array(x),
                {"axes": (0,), "p": 2.0, "eps_placement": "max_power_sum", "eps": 1e-12},
                "offset",
                cotangent=np.array(g),
            ),
            dtype,
        ),
        shows_in="gradient",
        model=LP_RSQRT_HELD,
    )
    for x, g, dtype in (  # the default profile's seed 1 found both
        ([100.125], [-0.007648468017578125], "float16"),
        (
            [
                [8.928809573238702e17, -1.5008069836351734e18, -2.9924863714923643e18],
                [-3.151854259746636e18, 2.042272067532882e18, 2.6908372805573673e18],
            ],
            [
                [0.1257302165031433, -0.13210485875606537, 0.6404226422309875],
                [0.10490011423826218, -0.5356693863868713, 0.3615950644016266],
            ],
            "float32",
        ),
    )
]

# Under the mixed policy (tf_keras@mixed, spec MP): MP.D20, and NUM.D1 with the offset cast to the half
# output (known_mixed.py)
KNOWN += known_mixed.MIXED
