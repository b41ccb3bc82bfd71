"""The JAX family's known divergences (flax.linen, flax.nnx, haiku, equinox and its batch mode), sorted by
model of what the library does instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf import reference as R
from normconf.reference import RunningStats
from normconf.vocabulary import (
    HALF_SQUARE_LIMIT,
    HUGE_ROW,
    OFFSET_ROWS,
    RSQRT_EXAMPLES,
    RSQRT_HELD,
    SAFETY,
    Bounded,
    Case,
    Computes,
    CpuDependency,
    Divergence,
    Envelope,
    OneOf,
    Reference,
    Simulated,
    batch_stats,
    eps_in,
    eps_underflows,
    float64_state_read,
    groups_where,
    groups_where_any,
    groups_where_var_below,
    half_rsqrt_jvp_groups,
    half_rsqrt_jvp_overflows,
    half_rsqrt_jvp_underflows,
    half_squares_overflow,
    huge,
    offset_along,
    one_pass_exceeds_budget,
    one_pass_gradient_amplified,
    one_pass_in,
    one_pass_model,
    param,
    parameter_sums_in_float16,
    reference_value,
    rounded,
    rsqrt_jvp_underflows,
    scale_along,
    squares_overflow,
    state_in_float32,
    statistic_view,
    tiny,
    zero_over_zero,
)


def _flax_one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=True, acc="float32")


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


def _half_cotangent_times_rstd_overflows(case: Case, dtype: str) -> bool:
    """LN.D5 (flax): |g| * rsqrt(var + eps) beyond float16's range."""
    if dtype != "float16" or case.cotangent is None or not case.x.size:
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    smallest = float(np.min(view.var(axis=axes))) + param(case, "eps")
    return float(np.max(np.abs(case.cotangent))) / np.sqrt(smallest) > huge(dtype)


_CONSTANT_30 = np.full((30, 1), 1.5)  # mean(x) and mean(x²) multiplied by fl(1/30): var comes out < 0
_NEAR_ONE = 1.0 + 1e-5 * np.array([[0.3, -1.2, 0.7, 0.2]])
# a constant channel (1.5) beside a varied one: with eps = 1e-12, mean(x²) - mean² in float64 is off by
# ~u * 2.25 against var + eps = 1e-12, and the gradient through 1/sqrt(var + eps) carries it (haiku, BN.D8)
_CONSTANT_1_5 = np.array([[1.5, -0.13], [1.5, -0.54], [1.5, 0.95], [1.5, -0.62], [1.5, -0.22], [1.5, -0.54]])
_CONSTANT_1_5_COTANGENT = np.array(
    [[0.13, -0.13], [0.1, -0.54], [1.3, 0.95], [-1.27, -0.62], [-2.33, -0.22], [-0.73, -0.54]]
)

# equinox's BatchNorm gradient where the batch variance is ~1e35 (drawn by the quick profile, as found)
_EQX_HUGE = np.array(
    [
        [
            [
                [-7.720282054763479e17, -6.073974360962499e17, 7.280617033039872e15],
                [7.544476845631078e16, -4.596612813522207e17, -1.0060976009164882e18],
            ]
        ],
        [
            [
                [9.668968674702131e16, -2.301425068414075e17, -8.450446423731732e17],
                [5.663297490858803e17, 8.723883283248579e17, 2.29102987316822e17],
            ]
        ],
    ]
)
_EQX_HUGE_COTANGENT = np.array(
    [
        [
            [
                [-1.3758431673049927, -0.8541995286941528, -1.262688159942627],
                [-0.3357083201408386, -0.024902762845158577, 0.37274956703186035],
            ]
        ],
        [
            [
                [-0.3915764093399048, -0.6178653836250305, -0.10967652499675751],
                [1.0256526470184326, -0.7968522906303406, -1.2155134677886963],
            ]
        ],
    ]
)

# haiku's BatchNorm float16 backward overflows only where XLA promotes float16 arithmetic to float32 per
# operation (no AVX512-FP16 in force); with native float16 it stays finite and within NUM.N8's budget
# (measured on an AVX512-FP16 Xeon: 351 against a budget of 3.3e7; the same CPU capped to AVX2 overflows).
_XLA_PROMOTED_HALF = CpuDependency("xla", "avx512_fp16", present=False)


# The models: what each JAX library computes where a divergence holds (vocabulary/models.py).
def _ema_normalized(case: Case, dtype: str, which: str):
    """BN.D10: a training batch normalized by the running averages after this step's update; the first
    step (equinox's first_time) replaces the running state by the batch's statistics (momentum 1).
    Elsewhere (eval, or no state) the reference holds."""
    if not param(case, "training") or case.params.get("state") is None:
        return None
    first = case.params["state"].num_batches_tracked == 0
    if which in ("mean", "var"):
        return reference_value(case, which, {"momentum": 1.0}) if first else None
    if first:
        return None
    if which in ("x", "scale", "offset"):
        return _ema_normalized_vjp(case, which)
    updated = R.batch_norm(case.x, **case.params).state
    return reference_value(case, "y", {"training": False, "state": updated})


def _ema_normalized_vjp(case: Case, which: str, flushed: bool = False):
    """BN.D10's gradient: y = w (x - m) / sqrt(v + eps) + b with m = c mean_B + (1 - c) m0 and
    v = c var_B + (1 - c) v0 (canonical momentum c, biased batch variance), the running averages not
    stopped: dx = w/s [g - c/n sum g] - c/n (x - mean_B) K / s with K = sum (g w / s^2) (x - m).
    `flushed`: instead, the most dx can move as float32's flush to zero drops the terms g w / s^2 of K
    below its smallest normal, or the variance's whole term where its cotangent is (_flushed_terms)."""
    params, g = case.params, case.cotangent
    axis, c, state = param(case, "channel_axis") % case.x.ndim, param(case, "momentum"), params["state"]
    x, g = np.moveaxis(case.x, axis, -1), np.moveaxis(np.asarray(g, dtype=np.float64), axis, -1)
    rows, grads = x.reshape(-1, x.shape[-1]), g.reshape(-1, x.shape[-1])
    n, batch_mean = rows.shape[0], rows.mean(axis=0)
    batch_var = ((rows - batch_mean) ** 2).mean(axis=0)
    m, v = c * batch_mean + (1 - c) * state.mean, c * batch_var + (1 - c) * state.var
    w = params["scale"] if params.get("scale") is not None else np.ones(x.shape[-1])
    with np.errstate(all="ignore"):
        s = np.sqrt(v + param(case, "eps"))
        if which == "offset":
            return grads.sum(axis=0)
        if which == "scale":
            return (grads * (rows - m)).sum(axis=0) / s
        terms = grads * w / s**2
        k = (terms * (rows - m)).sum(axis=0)
        if flushed:
            lost = np.where(np.abs(terms) < tiny("float32"), np.abs(terms * (rows - m)), 0.0).sum(axis=0)
            # the variance's cotangent per value, c K / (2 s n): flushed whole below float32's normals
            dropped = np.where(c * np.abs(k) / (2 * s * n) < 2 * tiny("float32"), np.abs(k), 0.0)
            dx = c / n * np.abs(rows - batch_mean) * (lost + dropped) / s
        else:
            dx = w / s * (grads - c / n * grads.sum(axis=0)) - c / n * (rows - batch_mean) * k / s
    return np.moveaxis(dx.reshape(x.shape), -1, axis)


def _flushed_terms(case: Case, dtype: str, which: str):
    """BN.D10's dx in float32 (bfloat16 too: XLA's CPU computes it in float32): equinox divides by
    sqrt(v + eps), but JAX's chain rule forms g w s^-2 elementwise and then the variance's cotangent per
    value, c K / (2 s n); for values ~1e18 either can fall below float32's smallest normal, and XLA's CPU
    flushes subnormals to zero - a term of K, or the variance's whole term of its channel, drops out or
    not as the compiled program orders the products (measured, default profile seed 1: one cotangent of
    0.0045 left every dx of its channel ~1e-3 off; another draw lost a channel's variance term, 2.5%)."""
    if which != "x" or dtype not in ("float32", "bfloat16") or not _ema_step(case):
        return None
    return _ema_normalized_vjp(case, "x", flushed=True)


def _ema_step(case: Case) -> bool:
    return case.norm == "batch_norm" and case.params["state"].num_batches_tracked != 0


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


def _near_zero_one_pass_groups(view, axes, case: Case, dtype: str):
    """BN.D8 (haiku): the groups where var + eps is within 4 ulps of mean(x²) (the unclipped one-pass
    variance can come out below 0 there) - batch statistics only: an eval step computes no variance."""
    unit = 2.0**-8 if dtype == "bfloat16" else 2.0**-11 if dtype == "float16" else float(np.finfo(dtype).eps)
    mean_square = np.mean(view * view, axis=axes, keepdims=True)
    return batch_stats(case) & (
        view.var(axis=axes, keepdims=True) + param(case, "eps") <= 4 * unit * mean_square
    )


KNOWN: list[Divergence] = [
    Divergence(
        "flax.*",
        "batch_norm",
        "BN.D8",
        "flax computes the variance in one pass (use_fast_variance=True)",
        _flax_one_pass,
        lambda: (
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
    Divergence(
        "equinox",
        "batch_norm",
        "BN.D10",
        "equinox BatchNorm ('ema' mode) normalizes training batches with its running averages",
        lambda case, dtype: param(case, "training") and case.params.get("state") is not None,
        lambda: (
            Case(
                "batch_norm",
                np.array([[0.1, 2.0], [0.7, -1.0], [1.3, 0.5]]),
                {
                    "channel_axis": -1,
                    "momentum": 0.01,
                    "running_var": "biased",
                    "training": True,
                    "state": RunningStats(np.array([5.0, -3.0]), np.array([4.0, 0.25]), 3),
                },
                "standard",
            ),
            "float64",
        ),
        model=Computes(_ema_normalized, kind="semantic", conditioned=True, absolute=_flushed_terms),
    ),
    *(
        Divergence(
            name,
            norm,
            "BN.D14",
            "float16 statistics: eps below ~3e-8 rounds to 0 and a zero variance gives 0/0",
            eps_underflows,
            lambda norm=norm, x=x, extra=extra: (
                Case(norm, x, {"eps": 1e-12, **extra}, "constant_channel"),
                "float16",
            ),
            # eps rounded to 0; the gradient of a zero variance is then non-finite
            model=OneOf(
                (
                    Reference(eps_in(), kind="special"),
                    Envelope(groups_where_var_below(lambda dtype: 2.0**-24)),
                )
            ),
        )
        for name, norms in (
            ("haiku", ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")),
            ("equinox*", ("batch_norm",)),  # both modes: the same statistics and normalization
        )
        for norm, x, extra in (
            ("batch_norm", np.array([[0.5, 0.5]]), {"channel_axis": -1, "training": True}),
            ("layer_norm", np.array([[0.5, 0.5]]), {"axes": (-1,)}),
            ("instance_norm", np.array([[[0.5], [0.5]]]), {"channel_axis": -1}),
            ("group_norm", np.array([[0.5, 0.5]]), {"groups": 1, "channel_axis": -1}),
            ("rms_norm", np.zeros((1, 2)), {"axes": (-1,)}),
        )
        if norm in norms
    ),
    Divergence(
        "flax.nnx",
        "batch_norm",
        "BN.D15",
        "flax.nnx stores float64 running statistics in float32 (param_dtype): the state after a step, and "
        "what reads it (eval), carry float32 rounding",
        float64_state_read,
        lambda: (
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
        "state",
        model=OneOf((Simulated(state_in_float32), Bounded(absolute=_float32_bookkeeping))),
    ),
    *(
        Divergence(
            "flax.*",
            norm,
            "LN.D4",
            "flax computes the variance in one pass (use_fast_variance=True)",
            _flax_one_pass,
            lambda norm=norm, shape=shape, extra=extra: (
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
            "flax.*",
            norm,
            "LN.D4",
            "flax's one-pass variance (use_fast_variance=True) carries its error into the gradient",
            one_pass_gradient_amplified,
            lambda norm=norm, x=x, extra=extra: (
                Case(
                    norm,
                    x,
                    {"eps": 1e-5, **extra},
                    "tiny_spread",
                    cotangent=np.array([0.7, -0.3, 0.2, -0.5]).reshape(x.shape),
                ),
                "float32",
            ),
            "gradient",
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
            "flax.*",
            norm,
            "LN.D5",
            "flax's float16 backward multiplies the cotangent by rsqrt(var + eps) in float16",
            _half_cotangent_times_rstd_overflows,
            lambda norm=norm, x=x, extra=extra: (
                Case(norm, x, {"eps": 1e-12, **extra}, "constant_channel", cotangent=np.full_like(x, 0.7)),
                "float16",
            ),
            "gradient",
            model=Envelope(groups_where(_half_cotangent_groups)),
        )
        for norm, x, extra in (
            ("layer_norm", np.array([[0.125], [-0.25]]), {"axes": (-1,)}),
            ("group_norm", np.array([[[0.125]], [[-0.25]]]), {"groups": 1, "channel_axis": -1}),
            ("instance_norm", np.array([[[0.125]], [[-0.25]]]), {"channel_axis": -1}),
        )
    ),
    *(
        Divergence(
            name,
            norm,
            "LN.D10",
            "JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
            rsqrt_jvp_underflows,
            lambda norm=norm: (
                Case(
                    norm,
                    *RSQRT_EXAMPLES[norm],
                    "large",
                    cotangent=np.array([0.7, 0.3, 0.3]).reshape(RSQRT_EXAMPLES[norm][0].shape),
                ),
                "float32",
            ),
            "gradient",
            model=RSQRT_HELD,
        )
        for name, norms in (
            ("flax.*", ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")),
            ("haiku", ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")),
            ("equinox", ("layer_norm", "rms_norm")),
        )
        for norm in norms
    ),
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
            ("batch_norm", np.full((3, 1), 1e4), {"channel_axis": -1, "training": True}, _XLA_PROMOTED_HALF),
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
    Divergence(
        "flax.linen",
        "batch_norm",
        "LN.D10",
        "flax.linen's BatchNorm differentiates rsqrt through XLA's float16: -rsqrt(v)/(2v) overflows for "
        "v < ~6.1e-4 (measured with statistics near eps)",
        half_rsqrt_jvp_overflows,
        lambda: (
            Case(
                "batch_norm",
                np.array([[1.0, -1.0, 5.5], [1.0, -4.5, 3.0]]) * 2.0**-23,
                {"eps": 1e-12, "channel_axis": 1, "training": False, "running_var": "biased"},
                "near_eps",
                cotangent=np.array([[0.125, -0.132, 0.64], [0.5, 0.25, -0.75]]),
            ),
            "float16",
        ),
        "gradient",
        cpu=_XLA_PROMOTED_HALF,
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
    Divergence(
        "equinox*",
        "batch_norm",
        "LN.D10",
        "JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
        rsqrt_jvp_underflows,
        lambda: (
            Case(
                "batch_norm",
                _EQX_HUGE,
                {"channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=_EQX_HUGE_COTANGENT,
            ),
            "float32",
        ),
        "gradient",
        model=RSQRT_HELD,
    ),
    Divergence(
        "equinox*",
        "batch_norm",
        "LN.D10",
        "equinox's BatchNorm differentiates rsqrt in the input dtype: in float16 -rsqrt(v)/(2v) overflows "
        "for v < ~6.1e-4",
        half_rsqrt_jvp_overflows,
        lambda: (
            Case(
                "batch_norm",
                np.full((3, 1), 1e4),
                {"eps": 2.0**-20, "channel_axis": 1, "training": True},
                "constant_channel",
                cotangent=np.array([0.125, -0.132, 0.64]).reshape(3, 1),
            ),
            "float16",
        ),
        "gradient",
        cpu=_XLA_PROMOTED_HALF,
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
    Divergence(
        "equinox",
        "group_norm",
        "LN.D10",
        "JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
        rsqrt_jvp_underflows,
        lambda: (
            Case(
                "group_norm",
                HUGE_ROW.reshape(1, 1, 3),
                {"groups": 1, "channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=np.array([[[0.7, 0.3, 0.3]]]),
            ),
            "float32",
        ),
        "gradient",
        model=RSQRT_HELD,
    ),
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

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("flax.*", ("batch_norm", "instance_norm", "group_norm"), channel_axis=-1),
    *squares_overflow("flax.*", ("layer_norm", "rms_norm")),
    *squares_overflow(
        "haiku", ("batch_norm", "instance_norm", "group_norm"), half_in_half=True, channel_axis=-1
    ),
    *squares_overflow("haiku", ("layer_norm", "rms_norm"), half_in_half=True),
    # both modes; 'ema' (BN.D10) replaces the state by the batch's on the first step, and its own
    # statistics hold where none overflows
    *squares_overflow("equinox", ("batch_norm",), half_in_half=True, base=Computes(_ema_normalized)),
    *squares_overflow("equinox[batch]", ("batch_norm",), half_in_half=True),
    *parameter_sums_in_float16("haiku", ("batch_norm", "instance_norm", "group_norm"), channel_axis=-1),
    *parameter_sums_in_float16("haiku", ("layer_norm",)),
    *parameter_sums_in_float16("haiku", ("rms_norm",), offset=None),
    *parameter_sums_in_float16("equinox*", ("batch_norm",)),
    *squares_overflow("equinox", ("layer_norm", "group_norm", "rms_norm")),
]

# NUM.D2: a constant group at eps = 0, as measured (flax 0.12.7)
KNOWN += [
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

# LN.D10 in float16 for equinox's BatchNorm: unlike its LayerNorm and GroupNorm it does not upcast, so
# the derivative of (y - m) / sqrt(v + eps) runs in float16 (equinox v0.13.8 nn/_batch_norm.py, _norm):
# Σ g (x - m) / (v + eps) times 1 / (2 sqrt(v + eps)) overflows where the group's spread is small and
# long (the quick gate once seeded by identity: 2 x 10^4 values of spread 0.03)
_SMALL_SPREAD = np.random.default_rng(5).normal(size=(64, 1)) * 0.005
KNOWN += [
    Divergence(
        "equinox",
        "batch_norm",
        "LN.D10",
        "equinox's BatchNorm differentiates 1/sqrt(v) in float16: with the cotangent reaching it, "
        "Σ g (x - m) v^-1.5 / 2 overflows for small v",
        half_rsqrt_jvp_overflows,
        lambda: (
            Case(
                "batch_norm",
                rounded(_SMALL_SPREAD, "float16"),
                {"channel_axis": -1, "eps": 2.0**-20, "training": True, "running_var": "biased"},
                "tiny_spread",
                cotangent=rounded(np.random.default_rng(6).normal(size=(64, 1)), "float16"),
            ),
            "float16",
        ),
        "gradient",
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
]
