"""MLX's known divergences (mlx.nn), sorted by clause: each a model of what the framework does instead,
checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    RSQRT_HELD,
    Case,
    Computes,
    Divergence,
    Envelope,
    OneOf,
    Raises,
    Reference,
    Simulated,
    affine_in_dtype,
    batch_stats,
    dtype_of,
    eps_in,
    eps_underflows,
    groups_where,
    half,
    half_rsqrt_jvp_groups,
    half_rsqrt_jvp_overflows,
    huge,
    param,
    parameter_sums_in_float16,
    running_sums,
    squares_overflow,
    standardized_as,
    statistic_held,
    statistic_mask,
    statistic_view,
    uses_batch_stats,
    values_per_statistic,
    xhat_rounding,
)


def _statistics_dtype(case: Case, dtype: str) -> str:
    """The dtype mlx.nn computes a case's statistics in: float32 in mx.fast's CPU fallback (LayerNorm,
    InstanceNorm, RMSNorm, GroupNorm(pytorch_compatible=True)), the input dtype in mx.mean / mx.var."""
    fast = case.norm in ("layer_norm", "instance_norm", "rms_norm") or (
        case.norm == "group_norm" and param(case, "assignment") == "contiguous"
    )
    return "float32" if fast else dtype


def _interleaved_xhat(view, axes, eps, dtype, placement):
    """GN.D8: mlx.nn.GroupNorm's interleaved path as MLX computes it in a half dtype: mx.mean is the sum
    (accumulated in float32, rounded to the dtype) times 1/n rounded to the dtype; mx.var the same of
    the squared deviations, each rounded; then (x - mean) * rsqrt(var + eps), every step rounded, rsqrt
    as 1 / sqrt with the root rounded first (bit for bit against mx.rsqrt on 2e4 float16 values)
    (measured against mlx 0.32.4: a float16 group of six values near 1 has mean 0.999, where the sum
    divided by n gives 0.9995, and var 1.13e-6 from it)."""
    kind = np.dtype(dtype_of(dtype))
    n = int(np.prod([view.shape[a] for a in axes]))
    inverse = kind.type(1.0 / n)

    def mean(values):
        total = np.sum(values.astype(np.float32), axis=axes, keepdims=True).astype(kind)
        return (total * inverse).astype(kind)

    with np.errstate(all="ignore"):
        x = view.astype(kind)
        centred = (x - mean(x)).astype(kind)
        var = mean((centred * centred).astype(kind))
        root = (kind.type(1) / np.sqrt((var + kind.type(eps)).astype(kind)).astype(kind)).astype(kind)
        return (centred * root).astype(kind).astype(np.float64)


def _float32_range(case: Case, dtype: str) -> bool:
    """LN.D9 / RMS.D3: float32-range statistics v (variance, or mean square for RMSNorm) beyond ~1e25,
    where the backward's rsqrt(v)/v underflows (and beyond ~1e38, where the squares overflow)."""
    if _statistics_dtype(case, dtype) not in ("float32", "bfloat16") or not case.x.size:
        return False
    if case.norm == "batch_norm" and not uses_batch_stats(case.params):
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    centred = view if case.norm == "rms_norm" else view - view.mean(axis=axes, keepdims=True)
    return float(np.max(np.mean(centred**2, axis=axes))) > 1e25


def _half_sum_overflows(case: Case, dtype: str) -> bool:
    """BN.D14 (mlx): a float16 sum over one statistic's values beyond float16's range."""
    if dtype != "float16" or not case.x.size or not batch_stats(case):
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    return float(np.max(np.abs(view.sum(axis=axes)))) > huge(dtype)


_HUGE = np.array([1e20, -3e20])


# The models: what MLX computes where each divergence holds (vocabulary/models.py).
def _float32_range_affected(case: Case, dtype: str, which: str):
    """LN.D9: forward, the groups whose mean square leaves float32's range; backward, those whose
    variance is beyond ~1e25, where rsqrt(v)/v underflows."""
    limit = float(np.finfo(np.float32).max) if which == "y" else 1e25
    mask = statistic_mask(case, lambda view, axes: np.mean(view * view, axis=axes, keepdims=True) > limit)
    return np.any(mask) if which in ("scale", "offset") else mask


def _half_sum_groups(view, axes, case: Case, dtype: str):
    """BN.D14 (mlx): the groups whose float16 sum leaves float16's range."""
    return np.abs(view.sum(axis=axes, keepdims=True)) > huge(dtype)


KNOWN: list[Divergence] = [
    Divergence(
        adapters="mlx.nn",
        norm="batch_norm",
        clause="BN.D6",
        reason=(
            "mlx.nn.BatchNorm raises 'BatchNorm training requires more than one value per channel' in "
            "training"
        ),
        applies=lambda case, dtype: param(case, "training") and values_per_statistic(case) == 1,
        example=lambda: (
            Case("batch_norm", np.array([[0.5, -1.0]]), {"channel_axis": -1, "training": True}, "standard"),
            "float64",
        ),
        model=Raises(pattern="more than one value per channel"),
    ),
    *(
        Divergence(
            adapters="mlx.nn",
            norm=norm,
            clause="BN.D13",
            reason="mlx.nn's normalization layers raise ValueError for eps <= 0 when constructed",
            applies=lambda case, dtype: param(case, "eps") == 0,
            example=lambda norm=norm, x=x, extra=extra: (
                Case(norm, np.array(x), {"eps": 0.0, **extra}, "standard"),
                "float64",
            ),
            model=Raises(pattern="eps"),
        )
        for norm, x, extra in (
            ("batch_norm", [[0.5], [-1.0]], {"channel_axis": -1}),
            ("layer_norm", [[0.5, -1.0]], {"axes": (-1,)}),
            ("instance_norm", [[[0.5], [-1.0]]], {"channel_axis": -1}),
            ("group_norm", [[0.5, -1.0]], {"groups": 1, "channel_axis": -1}),
            ("rms_norm", [[0.5, -1.0]], {"axes": (-1,)}),
        )
    ),
    Divergence(
        adapters="mlx.nn",
        norm="batch_norm",
        clause="BN.D14",
        reason="mlx.nn.BatchNorm keeps float16 statistics (mx.var) and adds eps in float16: "
        "eps below ~3e-8 rounds to 0",
        applies=eps_underflows,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5], [0.5]]),
                {"channel_axis": -1, "eps": 1e-12, "training": True},
                "constant_channel",
            ),
            "float16",
        ),
        model=Reference(eps_in(), kind="special"),
    ),
    Divergence(
        adapters="mlx.nn",
        norm="batch_norm",
        clause="BN.D14",
        reason="mlx.nn.BatchNorm's float16 mean divides a float16 sum: past 65504 it is inf",
        applies=_half_sum_overflows,
        example=lambda: (
            Case(
                "batch_norm",
                np.full((12, 1), 1e4),
                {"channel_axis": -1, "eps": 1.0, "training": True},
                "offset",
            ),
            "float16",
        ),
        model=Envelope(groups_where(_half_sum_groups)),
    ),
    *(
        Divergence(
            adapters="mlx.nn",
            norm=norm,
            clause="GN.D6",
            reason="mlx.nn applies the affine in the half input dtype after rounding x̂ to it",
            applies=lambda case, dtype: half(dtype) and case.params.get("offset") is not None,
            example=lambda norm=norm, x=x, scale=scale, offset=offset, extra=extra: (
                Case(
                    norm,
                    np.array(x),
                    {"eps": 2.0**-20, "scale": np.array(scale), "offset": np.array(offset), **extra},
                    "standard",
                ),
                "float16",
            ),
            model=Computes(affine_in_dtype, absolute=xhat_rounding),
        )
        for norm, x, scale, offset, extra in (
            (
                "layer_norm",
                [[-0.0557861328125, 2.068359375, 0.300537109375, -1.025390625, 0.174072265625]],
                [1.1259765625, 0.86767578125, 1.640625, 1.1044921875, 0.46435546875],
                [0.361572265625, 1.3037109375, 0.947265625, -0.70361328125, -1.265625],
                {"axes": (-1,)},
            ),
            (
                "instance_norm",
                [[[-1.125, 0.75], [1.5, -0.375], [0.75, -0.375]]],
                [1.375, 1.5],
                [-1.40625, -0.75],
                {"channel_axis": -1},
            ),
            (
                "group_norm",
                [[[-0.75, 0.125], [0.0, 0.875], [-0.375, -0.625]]],
                [1.25, 0.375],
                [-0.859375, 0.34375],
                {"groups": 1, "channel_axis": -1},
            ),
        )
    ),
    Divergence(
        adapters="mlx.nn",
        norm="group_norm",
        clause="GN.D8",
        reason="mlx.nn.GroupNorm's interleaved (default) path computes mean, variance and eps "
        "in the half input dtype",
        applies=lambda case, dtype: param(case, "assignment") == "interleaved" and half(dtype),
        example=lambda: (
            Case(
                "group_norm",
                np.array([[0.5, 0.5]]),
                {"groups": 1, "channel_axis": -1, "eps": 1e-12, "assignment": "interleaved"},
                "constant_channel",
            ),
            "float16",
        ),
        model=Simulated(standardized_as(_interleaved_xhat)),
    ),
    *(
        Divergence(
            adapters="mlx.nn",
            norm=norm,
            clause="LN.D9",
            reason="MLX's norms square and differentiate rsqrt in float32: "
            "variances beyond ~1e25 underflow the backward, "
            "beyond ~1e38 overflow the forward",
            applies=_float32_range,
            example=lambda norm=norm, x=x, extra=extra, dtype=dtype: (
                Case(norm, x, {"eps": 1e-12, **extra}, "large"),
                dtype,
            ),
            model=OneOf(
                (
                    Envelope(_float32_range_affected, allowed="non_finite_or_zero", kind="precision"),
                    RSQRT_HELD,
                )
            ),
        )
        for norm, x, extra, dtype in (
            ("layer_norm", _HUGE.reshape(1, 2), {"axes": (-1,)}, "float64"),
            ("instance_norm", _HUGE.reshape(1, 2, 1), {"channel_axis": -1}, "float64"),
            ("group_norm", _HUGE.reshape(1, 2), {"groups": 1, "channel_axis": -1}, "float64"),
            ("batch_norm", _HUGE.reshape(2, 1), {"channel_axis": -1, "training": True}, "float32"),
        )
    ),
    Divergence(
        adapters="mlx.nn",
        norm="group_norm",
        clause="LN.D10",
        reason="mlx.nn.GroupNorm's interleaved path differentiates rsqrt in float16 (GN.D8): -rsqrt(v)/(2v) "
        "overflows for v < ~6.1e-4",
        applies=lambda case, dtype: (
            param(case, "assignment") == "interleaved" and half_rsqrt_jvp_overflows(case, dtype)
        ),
        example=lambda: (
            Case(
                "group_norm",
                np.array([[0.5], [0.75]]),
                {"groups": 1, "channel_axis": -1, "eps": 1e-12, "assignment": "interleaved"},
                "constant_channel",
                cotangent=np.array([[0.5], [-0.25]]),
            ),
            "float16",
        ),
        shows_in="gradient",
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
    Divergence(
        adapters="mlx.nn",
        norm="batch_norm",
        clause="LN.D10",
        reason="MLX differentiates rsqrt in float16 (BN.D14): -rsqrt(v)/(2v) overflows for v < ~6.1e-4",
        applies=half_rsqrt_jvp_overflows,
        example=lambda: (
            Case(
                "batch_norm",
                np.array(
                    [
                        [0.125732421875, -0.132080078125, 0.640625],
                        [0.10491943359375, -0.53564453125, 0.361572265625],
                    ]
                ),
                {"channel_axis": -1, "eps": 2.0**-20, "training": True},
                "standard",
                cotangent=np.array([[0.5, -0.25, 0.75], [0.125, 0.375, -0.5]]),
            ),
            "float16",
        ),
        shows_in="gradient",
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
    Divergence(
        adapters="mlx.nn",
        norm="rms_norm",
        clause="RMS.D3",
        reason="mx.fast.rms_norm's CPU backward differentiates rsqrt(mean(x^2)) in float32: "
        "-1/2 m^(-3/2) underflows",
        applies=_float32_range,
        example=lambda: (
            Case("rms_norm", np.array([1.25e18]), {"axes": (0,), "eps": 1e-12}, "large"),
            "float32",
        ),
        shows_in="gradient",
        model=Computes(statistic_held, either=True),
    ),
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("mlx.nn", ("batch_norm",), half_in_half=True, channel_axis=-1),
    *parameter_sums_in_float16("mlx.nn", ("batch_norm",), channel_axis=-1),
    *squares_overflow("mlx.nn", ("instance_norm",), channel_axis=-1),
    # GN.D8: the interleaved (default) GroupNorm squares a float16 input in float16
    *squares_overflow("mlx.nn", ("group_norm",), half_in_half=True, channel_axis=-1),
    *squares_overflow("mlx.nn", ("layer_norm", "rms_norm")),
]

# NUM.D3: MLX's CPU reductions (mx.mean, mx.sum, and the float32 fallbacks of mx.fast.layer_norm and
# rms_norm built on them) are running sums: 2 x 10^4 float32 values near 10^4 + 7/16 come out -0.371 off
# in the mean (a one-lane running sum: -0.370; NumPy's pairwise sum: 2e-4), measured with mlx 0.32.4 -
# not bit for bit, so bounded, not simulated. RMSNorm's same-sign mean square drifts too, but within
# its budget (measured: 0.06 x on the example), so it has no entry
KNOWN += running_sums(
    "mlx.nn",
    ("batch_norm", "layer_norm", "instance_norm", "group_norm"),
    "MLX's CPU reductions are running sums: the statistics' error grows as n u",
    acc_of=lambda dtype: "float32",
)
