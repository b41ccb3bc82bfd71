"""PyTorch's known divergences (torch.functional, torch.nn, torchvision), sorted by clause: each a model of
what the framework does instead, checked by conformance/meta/test_divergences.py. Those of the mixed policy
(spec MP: torch.*@mixed) stand in known_mixed.py."""

from __future__ import annotations

import numpy as np

from normconf import reference as R
from normconf.vocabulary import (
    LP_GRADIENT_OUT_OF_RANGE,
    Case,
    Computes,
    Divergence,
    Envelope,
    OneOf,
    Raises,
    Reference,
    Simulated,
    batch_stats,
    groups_where_var_below,
    half_square_windows,
    half_squares_overflow,
    huge,
    lp_in_dtype,
    lrn_power_derivative_underflows,
    max_abs,
    min_norm,
    one_value_per_statistic,
    param,
    power_sum_out_of_range,
    rows_below_eps,
    rows_out_of_range,
    squares_overflow,
    statistic_held,
    statistic_mask,
    statistic_view,
    underflowing_derivative_windows,
    zero_over_zero,
)

from . import known_mixed


def _half_rstd_overflows(case: Case, dtype: str) -> bool:
    """BN.D11 / LN.D5: 1/sqrt(var + eps) kept in float16 is inf when var + eps < 2^-32."""
    return dtype == "float16" and param(case, "eps") < 2.0**-32


def _group_check(case: Case) -> bool:
    """GN.D5: F.group_norm's check N*(C/G)*spatial == 1."""
    x, groups = case.x, case.params["groups"]
    spatial = int(
        np.prod([s for i, s in enumerate(x.shape) if i not in (0, param(case, "channel_axis") % x.ndim)])
    )
    return x.shape[0] * (x.shape[param(case, "channel_axis") % x.ndim] // groups) * spatial == 1


def _rstd_scaled_input_overflows(case: Case, dtype: str) -> bool:
    """LN.D6: (|x| * rstd)^2 beyond the input dtype's range (float32 or narrower)."""
    if dtype == "float64":
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    rstd = 1.0 / np.sqrt(view.var(axis=axes) + param(case, "eps"))
    return (max_abs(case) * float(np.max(rstd, initial=0.0))) ** 2 > huge(dtype)


# The models: what PyTorch computes where each divergence holds (vocabulary/models.py).
_RSTD_OVERFLOW = Envelope(groups_where_var_below(lambda dtype: 2.0**-32))  # 1/sqrt(v + eps) = inf in half


def _rstd_scaled_input_affected(case: Case, dtype: str, which: str):
    """LN.D6: the groups where (|x| * rstd)^2 overflows the input dtype (all of dscale / doffset)."""
    eps = param(case, "eps")
    mask = statistic_mask(
        case,
        lambda view, axes: (
            (
                np.max(np.abs(view), axis=axes, keepdims=True)
                / np.sqrt(view.var(axis=axes, keepdims=True) + eps)
            )
            ** 2
            > huge(dtype)
        ),
    )
    return np.any(mask) if which in ("scale", "offset") else mask


KNOWN: list[Divergence] = [
    Divergence(
        adapters="torch.*",
        norm="batch_norm",
        clause="BN.D6",
        reason=(
            "PyTorch raises 'Expected more than 1 value per channel when training' for one value per channel"
        ),
        applies=one_value_per_statistic,
        example=lambda: (
            Case("batch_norm", np.array([[0.5, -1.0]]), {"training": True}, "standard"),
            "float64",
        ),
        model=Raises(pattern="more than 1 value per channel"),
    ),
    Divergence(
        adapters="torch.*",
        norm="batch_norm",
        clause="BN.D11",
        reason="PyTorch half-precision BatchNorm stores invstd in float16: inf when var + eps < 2^-32",
        applies=_half_rstd_overflows,
        example=lambda: (
            Case("batch_norm", np.array([[[1e4, 1e4]]]), {"eps": 1e-12}, "constant_channel"),
            "float16",
        ),
        model=_RSTD_OVERFLOW,
    ),
    Divergence(
        adapters="torch.*",
        norm="instance_norm",
        clause="BN.D11",
        reason="PyTorch's InstanceNorm runs the BatchNorm kernel: "
        "in float16 invstd overflows when var + eps < 2^-32",
        applies=_half_rstd_overflows,
        example=lambda: (
            Case("instance_norm", np.array([[[1e4, 1e4]]]), {"eps": 1e-12}, "constant_channel"),
            "float16",
        ),
        model=_RSTD_OVERFLOW,
    ),
    Divergence(
        adapters="torch.nn",
        norm="instance_norm",
        clause="IN.D5",
        reason="torch.nn.InstanceNorm takes momentum=None as 0.0: its running statistics never move",
        applies=lambda case, dtype: (
            case.params.get("momentum", 0.1) is None and case.params.get("state") is not None
        ),
        example=lambda: (
            Case(
                "instance_norm",
                np.array([[[1.0, 3.0]], [[5.0, 9.0]]]),
                {"eps": 2.0**-20, "momentum": None, "training": True, "state": R.RunningStats.initial(1)},
                "integers",
            ),
            "float64",
        ),
        shows_in="state",
        model=Reference(lambda case, dtype: {"momentum": 0.0}),
    ),
    Divergence(
        adapters="torch.*",
        norm="batch_norm",
        clause="BN.D13",
        reason="PyTorch raises 'batch_norm eps must be positive during training' for eps = 0",
        applies=lambda case, dtype: param(case, "eps") == 0 and batch_stats(case),
        example=lambda: (
            Case("batch_norm", np.array([[[0.5, -1.0, 2.0]]]), {"eps": 0.0, "training": True}, "standard"),
            "float64",
        ),
        model=Raises(pattern="eps must be positive"),
    ),
    Divergence(
        adapters="torch.*",
        norm="group_norm",
        clause="GN.D5",
        reason=(
            "PyTorch's F.group_norm raises 'Expected more than 1 value per channel' when N*(C/G)*spatial == 1"
        ),
        applies=lambda case, dtype: _group_check(case),
        example=lambda: (Case("group_norm", np.array([[0.5, -1.0]]), {"groups": 2}, "standard"), "float64"),
        model=Raises(pattern="more than 1 value per channel"),
    ),
    Divergence(
        adapters="torch.*",
        norm="instance_norm",
        clause="IN.D3",
        reason="PyTorch raises 'Expected more than 1 spatial element when training' for one spatial value",
        applies=one_value_per_statistic,
        example=lambda: (
            Case("instance_norm", np.array([[[0.5], [-1.0]]]), {"training": True}, "standard"),
            "float64",
        ),
        model=Raises(pattern="more than 1 spatial element"),
    ),
    Divergence(
        adapters="torch.*",
        norm="layer_norm",
        clause="LN.D5",
        reason="PyTorch saves rstd in float16 for the backward: inf (NaN gradient) when var + eps < 2^-32",
        applies=_half_rstd_overflows,
        example=lambda: (
            Case("layer_norm", np.array([[0.125]]), {"axes": (-1,), "eps": 1e-12}, "standard"),
            "float16",
        ),
        shows_in="gradient",
        model=_RSTD_OVERFLOW,
    ),
    Divergence(
        adapters="torch.*",
        norm="group_norm",
        clause="LN.D5",
        reason="PyTorch saves rstd in float16 for the backward: inf (NaN gradient) when var + eps < 2^-32",
        applies=_half_rstd_overflows,
        example=lambda: (
            Case("group_norm", np.array([[[1e4, 1e4]]]), {"groups": 1, "eps": 1e-12}, "constant_channel"),
            "float16",
        ),
        shows_in="gradient",
        model=_RSTD_OVERFLOW,
    ),
    Divergence(
        adapters="torch.*",
        norm="layer_norm",
        clause="LN.D6",
        reason="PyTorch's float32 LayerNorm backward overflows to inf where |x| * rstd is beyond ~1e19",
        applies=_rstd_scaled_input_overflows,
        example=lambda: (
            Case("layer_norm", np.array([1.25e18]), {"axes": (0,), "eps": 1e-12}, "large"),
            "float32",
        ),
        shows_in="gradient",
        model=Envelope(_rstd_scaled_input_affected),
    ),
    Divergence(
        adapters="torch.*",
        norm="group_norm",
        clause="LN.D6",
        reason="PyTorch's float32 GroupNorm backward overflows to inf/NaN where |x| * rstd is beyond ~1e19",
        applies=_rstd_scaled_input_overflows,
        example=lambda: (
            Case("group_norm", np.array([[[1.25e18, 1.25e18]]]), {"groups": 1, "eps": 1e-12}, "large"),
            "float32",
        ),
        shows_in="gradient",
        model=Envelope(_rstd_scaled_input_affected),
    ),
    Divergence(
        adapters="torch.functional",
        norm="lp_normalize",
        clause="LP.D4",
        reason="PyTorch's p-norm raises |x| to p (and squares the norm in the backward) in the input dtype: "
        "it over- or underflows",
        applies=lambda case, dtype: power_sum_out_of_range(case, dtype, norm_power=2),
        example=lambda: (
            Case("lp_normalize", np.array([3e19, 4e19]), {"axes": (0,), "eps": 0.0}, "large"),
            "float32",
        ),
        model=OneOf(
            (Simulated(lp_in_dtype), Envelope(rows_out_of_range(norm_power=2), LP_GRADIENT_OUT_OF_RANGE))
        ),
    ),
    Divergence(
        adapters="torch.functional",
        norm="lp_normalize",
        clause="LP.D5",
        reason="PyTorch casts eps to the input dtype: "
        "in float16 eps below 3e-8 becomes 0, and rows of norm below it divide by 0",
        applies=lambda case, dtype: (
            dtype == "float16"
            and float(np.float16(param(case, "eps"))) != param(case, "eps")
            and min_norm(case) < param(case, "eps")
        ),
        example=lambda: (
            Case("lp_normalize", np.zeros((1, 2)), {"axes": (-1,), "eps": 1e-12}, "integers"),
            "float16",
        ),
        model=Envelope(rows_below_eps),
    ),
    Divergence(
        adapters="torch.*",
        norm="local_response_norm",
        clause="LRN.D3",
        reason="PyTorch squares in the input dtype: float16 x*x overflows for |x| > 255.9",
        applies=half_squares_overflow,
        example=lambda: (
            Case("local_response_norm", np.array([[[300.0], [1.0]]]), {"size": 2}, "large"),
            "float16",
        ),
        model=Envelope(half_square_windows, allowed="non_finite_or_zero", kind="precision"),
    ),
    Divergence(
        adapters="torch.*",
        norm="local_response_norm",
        clause="LRN.D5",
        reason="PyTorch's derivative of base^-beta, -beta base^(-beta-1), "
        "underflows in the input dtype for large |x|",
        applies=lrn_power_derivative_underflows,
        example=lambda: (
            Case("local_response_norm", np.array([[[1.25e18]]]), {"size": 1}, "large"),
            "float32",
        ),
        shows_in="gradient",
        # measured: 0.28% off the reference on the example (the term is not lost, it loses bits)
        model=Envelope(underflowing_derivative_windows, allowed="any", kind="precision"),
    ),
    Divergence(
        adapters="torch.*",
        norm="rms_norm",
        clause="RMS.D3",
        reason=(
            "PyTorch differentiates rsqrt(mean(x^2)) in float32: the -1/2 m^(-3/2) term underflows for m "
            "> ~1e25"
        ),
        applies=lambda case, dtype: dtype != "float64" and max_abs(case) > 1e12,
        example=lambda: (
            Case("rms_norm", np.array([1.25e18]), {"axes": (0,), "eps": 1e-12}, "large"),
            "float32",
        ),
        shows_in="gradient",
        model=Computes(statistic_held, either=True),
    ),
]

# -- under the mixed policy (spec MP): known_mixed.py -----------------------------------------------
KNOWN += known_mixed.KNOWN

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow(
        "torch.*",
        ("batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "local_response_norm"),
    ),
]

# NUM.D2: a constant group at eps = 0 - ATen's InvStd defines 1/sqrt(0 + 0) as 0
KNOWN += zero_over_zero(
    "torch.*",
    ("instance_norm",),
    "non_finite_or_offset",
    "ATen's InvStd returns invstd = 0 where var = 0 and eps = 0, so a constant channel normalizes to its "
    "offset instead of 0/0 = NaN (F.instance_norm runs the BatchNorm kernel, whose training check "
    "refuses eps = 0 for F.batch_norm itself, BN.D13)",
)
