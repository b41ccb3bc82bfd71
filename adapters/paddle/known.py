"""Paddle's known divergences (paddle.functional, paddle.nn), sorted by clause: each a model of what the
framework does instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf import reference as R
from normconf.reference.lp_normalize import lp_norm
from normconf.vocabulary import (
    LP_GRADIENT_OUT_OF_RANGE,
    OFFSET_ROWS,
    Case,
    Computes,
    Divergence,
    Envelope,
    OneOf,
    Simulated,
    dtype_of,
    finfo,
    lp_in_dtype,
    lrn_power_derivative_underflows,
    min_norm,
    one_pass_exceeds_budget,
    one_pass_gradient_absolute,
    one_pass_model,
    one_value_per_statistic,
    param,
    power_sum_out_of_range,
    reference_value,
    rows_out_of_range,
    scale_along,
    squares_overflow,
    statistic_held,
    statistic_view,
    underflowing_derivative_windows,
    zero_over_zero,
)


def _p_norm_backward(case: Case, dtype: str) -> bool:
    """LP.D7: Paddle's p-norm backward divides by norm^(p-1) + eps; visible once eps / norm^(p-1)
    passes u/16."""
    p, eps = param(case, "p"), param(case, "eps")
    with np.errstate(divide="ignore", invalid="ignore"):
        # NumPy floats: a zero row's norm gives inf here, where Python floats raise ZeroDivisionError
        return eps > 0 and bool(
            np.float64(eps) / np.float64(min_norm(case)) ** (p - 1.0) > float(finfo(dtype).eps) / 16
        )


def _power_of_two(size: int) -> bool:
    return size & (size - 1) == 0


# The models: what Paddle computes where each divergence holds (vocabulary/models.py).
def _unchanged(case: Case, dtype: str, which: str):
    """BN.D16: y = x, the running statistics as they were, dx = g - and no affine applied, so dscale
    and doffset are 0 (measured with paddle 3.3.1: doffset 0 where the spec's is the cotangent)."""
    state = case.params.get("state")
    if which in ("mean", "var"):
        return None if state is None else getattr(state, which)
    if which in ("x", "scale", "offset") and not param(case, "training"):
        # eval (no tracked state: batch statistics) runs the backward with is_test (BN.D19), which reads
        # the layer's running statistics - mean 0, variance 1 as initialized, the forward having computed
        # none: dx = g scale / sqrt(1 + eps), dscale = sum g x / sqrt(1 + eps), doffset = sum g
        # (measured with paddle 3.3.1)
        rstd = 1.0 / np.sqrt(1.0 + param(case, "eps"))
        if which == "x":
            return case.cotangent * scale_along(case) * rstd
        axis = param(case, "channel_axis") % case.x.ndim
        others = tuple(i for i in range(case.x.ndim) if i != axis)
        terms = case.cotangent * case.x * rstd if which == "scale" else case.cotangent
        return None if case.params.get(which) is None else np.sum(terms, axis=others)
    if which in ("scale", "offset"):
        learned = case.params.get(which)
        return None if learned is None else np.zeros(np.shape(learned))
    return {"y": case.x, "x": case.cotangent}.get(which)


def _fresh_running_variance(case: Case, dtype: str, which: str):
    """BN.D19: dx = scale * g / sqrt(v + eps) with v the layer's own running variance after this call,
    (1 - momentum) * 1 + momentum * the batch's biased variance: a constant of the backward."""
    if which not in ("x", "scale"):
        return None
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    momentum = param(case, "momentum")
    running = (1.0 - momentum) + momentum * view.var(axis=axes, keepdims=True)
    if which == "scale":  # dscale = sum of g (x - m) / sqrt(v + eps), m and v the fresh running ones
        running_mean = momentum * view.mean(axis=axes, keepdims=True)  # from the initial 0
        xhat = back((view - running_mean) / np.sqrt(running + param(case, "eps")))
        channel = param(case, "channel_axis") % case.x.ndim
        return np.sum(case.cotangent * xhat, axis=tuple(i for i in range(case.x.ndim) if i != channel))
    g = np.broadcast_to(case.cotangent * scale_along(case), case.x.shape)
    return np.asarray(
        back(statistic_view(case.norm, g, case.params)[0] / np.sqrt(running + param(case, "eps")))
    )


def _p_norm_backward_model(case: Case, dtype: str, which: str):
    """LP.D7: y = x / n differentiated with dn/dx = x |x|^(p-2) / (n^(p-1) + eps) instead of / n^(p-1)
    (eps as a float32; below eps the clamp's own g/eps)."""
    if which != "x":
        return None
    p, eps = param(case, "p"), param(case, "eps")
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    x, g = case.x, case.cotangent
    norm = lp_norm(x, p, axes)
    n = np.maximum(norm, eps)
    with np.errstate(all="ignore"):
        # below eps the max selects eps: nothing flows back through the norm (the reference's g/eps)
        # the backward's eps is the op's float32 attribute (measured: float64 runs match it, not eps)
        held = float(np.float32(eps))
        # d|x|^p / p dx = sign(x) |x|^(p-1): 0 at x = 0 for p >= 1 (x |x|^(p-2) is 0 * inf there for p = 1)
        dn = np.where(norm >= eps, np.sign(x) * np.abs(x) ** (p - 1.0) / (n ** (p - 1.0) + held), 0.0)
        return g / n - np.sum(g * x, axis=axes, keepdims=True) / n**2 * dn


def _without_mean_term(case: Case, dtype: str, which: str):
    """GN.D9: without weight, dx lacks the -mean(g)/divisor term of the group's mean."""
    if which != "x":
        return None
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    gview = statistic_view(case.norm, case.cotangent, case.params)[0]
    divisor = R.NORMS[case.norm].standardized(view, axes, case.params).divisor
    with np.errstate(all="ignore"):
        return reference_value(case, "x") + np.asarray(back(gview.mean(axis=axes, keepdims=True) / divisor))


def _group_norm_backward(case: Case, dtype: str, which: str):
    """GN.D10: Paddle's CPU GroupNorm backward as its kernel writes it, in the input dtype: x̂ recovered
    from the output as (y - bias) / scale, the group's sums of (y - bias)·dy and dy·scale accumulated
    value by value (channel-major, as the kernel walks them), the one-pass variance of its forward (GN.D7),
    and without weight no mean(dy) term (GN.D9)."""
    if which not in ("x", "scale", "offset"):
        return None
    kind = dtype_of(dtype)
    axis = param(case, "channel_axis") % case.x.ndim
    groups, eps = param(case, "groups"), param(case, "eps")
    n, channels = case.x.shape[0], case.x.shape[axis]
    # (N, C, spatial): the kernel's walk over a group is channel by channel, each channel's positions in order
    x = np.moveaxis(case.x, axis, 1).reshape(n, channels, -1)
    g = np.moveaxis(np.broadcast_to(case.cotangent, case.x.shape), axis, 1).reshape(n, channels, -1)
    ones = np.ones(channels)
    scale = case.params.get("scale")
    bias = case.params.get("offset")
    with np.errstate(all="ignore"):
        # the forward's statistics as GN.D7 has them: E[x] and E[x^2] summed value by value in the input
        # dtype, max(E[x^2] - mean^2, 0) in it
        grouped = x.reshape(n, groups, -1).astype(kind)
        count = np.asarray(grouped.shape[-1], dtype=kind)
        mean = np.cumsum(grouped, axis=-1, dtype=kind)[..., -1:] / count
        square = np.cumsum(grouped * grouped, axis=-1, dtype=kind)[..., -1:] / count
        var = np.maximum(square - mean * mean, np.asarray(0, dtype=kind))
        y = (
            ((grouped - mean) / np.sqrt(var + np.asarray(eps, dtype=kind)))
            .astype(np.float64)
            .reshape(x.shape)
        )
        y = (
            y * (ones if scale is None else scale)[None, :, None]
            + (0.0 if bias is None else bias)[None, :, None]
        )
        y, dy = y.astype(kind), g.astype(kind)
        b = (np.zeros(channels) if bias is None else bias).astype(kind)[None, :, None]
        sc = (ones if scale is None else scale).astype(kind)[None, :, None]
        val = y - b
        recovered = np.where(sc != 0, val / sc, val)
        size = channels // groups
        by_group = lambda a: a.reshape(n, groups, -1)  # noqa: E731
        dp_scale = np.cumsum(by_group(val * dy), axis=-1, dtype=kind)[..., -1:]
        dp_bias = (
            np.cumsum(by_group(dy * sc), axis=-1, dtype=kind)[..., -1:]
            if scale is not None
            else np.zeros_like(dp_scale)
        )
        inverse = (1.0 / np.sqrt(var + np.asarray(eps, dtype=kind))).astype(kind)
        number = np.asarray(1.0 / (size * x.shape[-1]), dtype=kind)
        dx = (by_group(dy * sc) - number * dp_scale * by_group(recovered) - number * dp_bias) * inverse
        if which == "x":
            dx = np.moveaxis(dx.reshape(n, channels, *np.moveaxis(case.x, axis, 1).shape[2:]), 1, axis)
            return dx.astype(np.float64)
        if which == "scale":
            return np.sum(recovered * dy, axis=(0, 2), dtype=kind).astype(np.float64)
        return np.sum(dy, axis=(0, 2), dtype=kind).astype(np.float64)


def _float32_pool_scale(case: Case, dtype: str, which: str):
    """LRN.D8: the window term of dx scaled by fl32(1/size) * size instead of 1."""
    if which != "x":
        return None
    size = int(case.params["size"])
    factor = float(np.float32(1.0 / size)) * size
    held, reference = statistic_held(case, dtype, "x"), reference_value(case, "x")
    return held + factor * (reference - held)


KNOWN: list[Divergence] = [
    Divergence(
        adapters="paddle.*",
        norm="batch_norm",
        clause="BN.D16",
        reason=(
            "Paddle's CPU batch_norm returns x unchanged (no affine, no running update) when N*spatial == 1"
        ),
        applies=one_value_per_statistic,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5, -1.0]]),
                {"training": True, "running_var": "biased", "eps": 2.0**-20, "momentum": 0.125},
                "standard",
            ),
            "float64",
        ),
        bug=(
            "a training batch_norm call with one value per channel returns x unchanged (no normalization, "
            "scale, offset or running update) instead of the offset its own formula gives; upstream: not "
            "found reported"
        ),
        model=Computes(_unchanged, kind="special"),
    ),
    Divergence(
        adapters="paddle.nn",
        norm="batch_norm",
        clause="BN.D19",
        reason="Paddle's eval-mode BatchNorm with use_global_stats=False differentiates "
        "the batch statistics as constants",
        applies=lambda case, dtype: case.params.get("state") is None and not param(case, "training"),
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5], [-1.0], [2.0]]),
                {"training": False, "running_var": "biased", "eps": 2.0**-20, "momentum": 0.125},
                "standard",
            ),
            "float64",
        ),
        shows_in="gradient",
        model=Computes(_fresh_running_variance, kind="semantic"),
    ),
    Divergence(
        adapters="paddle.*",
        norm="group_norm",
        clause="GN.D7",
        reason="Paddle's CPU group_norm computes max(E[x^2] - mean^2, 0) in the input dtype",
        applies=lambda case, dtype: one_pass_exceeds_budget(case, dtype, clip=True, acc=dtype),
        example=lambda: (
            Case("group_norm", OFFSET_ROWS.copy(), {"groups": 1, "eps": 2.0**-20}, "offset"),
            "float32",
        ),
        model=one_pass_model(clip=True),
    ),
    Divergence(
        adapters="paddle.*",
        norm="group_norm",
        clause="GN.D9",
        reason="Paddle's group_norm backward gives a wrong dx when weight is None",
        applies=lambda case, dtype: case.params.get("scale") is None,
        example=lambda: (Case("group_norm", np.array([[0.3, 0.7]]), {"groups": 1}, "standard"), "float64"),
        shows_in="gradient",
        bug=(
            "group_norm_grad without a weight returns a wrong input gradient (passing weight = ones gives "
            "the right one); upstream: not found reported"
        ),
        model=Computes(
            _without_mean_term, kind="semantic", absolute=one_pass_gradient_absolute()
        ),  # with GN.D7
    ),
    Divergence(
        adapters="paddle.*",
        norm="group_norm",
        clause="GN.D10",
        reason=(
            "Paddle's CPU GroupNorm backward recovers x-hat from y as (y - bias) / scale and sums each group "
            "value by value: its error grows with n and with 1/|scale|"
        ),
        applies=lambda case, dtype: case.cotangent is not None and dtype in ("float32", "float64"),
        example=lambda: (
            Case(
                "group_norm",
                np.linspace(-1.0, 1.0, 12).reshape(1, 12) ** 3,
                {"groups": 1, "eps": 2.0**-20, "scale": np.full(12, 2.0**-40), "offset": np.full(12, 0.75)},
                "standard",
                cotangent=np.linspace(1.0, -0.5, 12).reshape(1, 12),
            ),
            "float64",
        ),
        shows_in="gradient",
        # GN.D7's one-pass variance on top, its sums in Paddle's order, not NumPy's
        model=Simulated(_group_norm_backward, kind="precision", absolute=one_pass_gradient_absolute()),
    ),
    Divergence(
        adapters="paddle.functional",
        norm="lp_normalize",
        clause="LP.D4",
        reason="Paddle's p-norm raises |x| to p in the input dtype: it over- or underflows",
        applies=power_sum_out_of_range,
        example=lambda: (
            Case("lp_normalize", np.array([[3e19, 4e19]]), {"axes": (-1,), "eps": 0.0}, "large"),
            "float32",
        ),
        model=OneOf((Simulated(lp_in_dtype), Envelope(rows_out_of_range(), LP_GRADIENT_OUT_OF_RANGE))),
    ),
    Divergence(
        adapters="paddle.functional",
        norm="lp_normalize",
        clause="LP.D7",
        reason="Paddle's p-norm backward divides by norm^(p-1) + eps: not the derivative of the forward",
        applies=_p_norm_backward,
        example=lambda: (
            Case("lp_normalize", np.array([[0.6, 0.8]]), {"axes": (-1,), "eps": 1e-6}, "standard"),
            "float64",
        ),
        shows_in="gradient",
        model=Computes(_p_norm_backward_model, kind="semantic"),
    ),
    Divergence(
        adapters="paddle.*",
        norm="local_response_norm",
        clause="LRN.D5",
        reason="Paddle's derivative of base^-beta underflows in the input dtype for large |x|",
        applies=lrn_power_derivative_underflows,
        example=lambda: (
            Case("local_response_norm", np.array([[[1.25e18]]]), {"size": 1}, "large"),
            "float32",
        ),
        shows_in="gradient",
        model=Envelope(underflowing_derivative_windows, allowed="any", kind="precision"),
    ),
    Divergence(
        adapters="paddle.*",
        norm="local_response_norm",
        clause="LRN.D8",
        reason=(
            "Paddle's average-pool backward scales by 1/size in float32: float64 LRN gradients are off "
            "by ~1e-8"
        ),
        applies=lambda case, dtype: dtype == "float64" and not _power_of_two(case.params["size"]),
        example=lambda: (
            Case(
                "local_response_norm",
                np.arange(1.0, 7.0).reshape(1, 6, 1),
                {"size": 3, "alpha": 1.0},
                "standard",
            ),
            "float64",
        ),
        shows_in="gradient",
        model=Computes(_float32_pool_scale),
    ),
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("paddle.*", ("batch_norm",), running_var="biased"),
    *squares_overflow(
        "paddle.*", ("instance_norm", "layer_norm", "group_norm", "rms_norm", "local_response_norm")
    ),
]

# NUM.D2: a constant group at eps = 0, as measured (Paddle 3.3.1)
KNOWN += zero_over_zero(
    "paddle.*",
    ("layer_norm",),
    "any",
    "Paddle's layer_norm answers a constant row's 0/0 at eps = 0 with finite values, neither NaN nor "
    "the offset (measured: -1 on rows of 1.5s) - what rounding in its statistics gives",
    (2, 5, 3),
    axes=(1, 2),
)
