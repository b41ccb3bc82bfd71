"""ONNX's known divergences (onnxruntime, onnx.reference), sorted by clause: each a model of what the
implementation does instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    HALF_SQUARE_LIMIT,
    MODERATE_ROWS,
    SAFETY,
    Bounded,
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
    groups_where,
    groups_where_any,
    half,
    half_square_windows,
    half_squares_overflow,
    huge,
    lp_in_dtype,
    offset_along,
    one_pass_exceeds_budget,
    one_pass_model,
    param,
    power_sum_out_of_range,
    rounded,
    scale_along,
    squares_overflow,
    state_held_in,
    state_past_half_example,
    statistic_view,
    xhat_rounding,
)

from .declarations import MVN_EPS


def _float32_inexact(value: float) -> bool:
    return float(np.float32(value)) != value


# The models: what each ONNX implementation computes where a divergence holds (vocabulary/models.py).
def _rms_in_input_dtype(case: Case, dtype: str, which: str):
    """RMS.D4: onnx.reference's RMSNormalization as NumPy computes it: the squares and their mean in the
    input dtype; eps a float32 scalar (the evaluator reads FLOAT attributes as np.float32), so under
    NumPy 2's promotion the sum with eps, the root, its reciprocal, the product with x and the scale
    run in float32 for a half input; the output rounded to the input dtype."""
    if which != "y":
        return None
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    kind = dtype_of(dtype)
    x = case.x.astype(kind)
    eps = np.float32(param(case, "eps"))  # a float64 run's eps is float32-representable (BN.D2)
    with np.errstate(all="ignore"):
        mean_square = np.mean(np.power(x, 2), axis=axes, keepdims=True)
        y = x * np.reciprocal(np.sqrt(mean_square + eps))
        if case.params.get("scale") is not None:
            y = y * scale_along(case).astype(kind)
        return y.astype(kind).astype(np.float64)


def _instance_norm_in_numpy(case: Case, dtype: str, which: str):
    """IN.D6: onnx.reference's InstanceNormalization as NumPy computes it: mean and variance in the input
    dtype (np.var squares and sums float16 in float16), eps a float32 scalar (FLOAT attributes are
    np.float32), so var + eps, the root and the division run in float32 for a half input; scale times
    (x - mean) in the input dtype, the offset added, the output rounded to the input dtype. Another
    norm's call beside it (GN.S3's G = C limit) is held to the reference."""
    if which != "y" or case.norm != "instance_norm":
        return None
    kind = dtype_of(dtype)
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    x = view.astype(kind)
    scale, offset = scale_along(case).astype(kind), offset_along(case).astype(kind)
    with np.errstate(all="ignore"):
        mean = np.mean(x, axis=axes, keepdims=True)
        var = np.var(x, axis=axes, keepdims=True)
        y = scale * (x - mean) / np.sqrt(var + np.float32(param(case, "eps"))) + offset
        return y.astype(kind).astype(np.float64)


def _layer_norm_in_numpy(case: Case, dtype: str, which: str):
    """LN.D7: onnx.reference's LayerNormalization as NumPy computes it on the (rows, normalized values)
    matrix: the row sums, mean, deviations and their squares in the input dtype; eps a float32 scalar
    (FLOAT attributes are np.float32), so var + eps, the root, its reciprocal and the standardized
    values run in float32 for a half input; scale and bias applied, the output cast back. Another
    norm's call beside it (GN.S3's G = 1 limit) is held to the reference."""
    if which != "y" or case.norm != "layer_norm":
        return None
    axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
    if axes != tuple(range(axes[0], case.x.ndim)):  # ONNX normalizes the axes from `axis` on
        return None
    kind = dtype_of(dtype)
    rows = int(np.prod(case.x.shape[: axes[0]], dtype=np.int64))
    x = case.x.astype(kind).reshape(rows, -1)
    with np.errstate(all="ignore"):
        mean = np.sum(x, axis=1, keepdims=True) / x.shape[1]
        diff = x - mean
        var = np.sum(diff * diff, axis=1, keepdims=True) / x.shape[1]
        y = (diff * np.reciprocal(np.sqrt(var + np.float32(param(case, "eps"))))).reshape(case.x.shape)
        y = y * scale_along(case).astype(kind)
        if case.params.get("offset") is not None:
            y = y + offset_along(case).astype(kind)
        return y.astype(kind).astype(np.float64)


def _signed_sum(case: Case, dtype: str, which: str):
    """LP.D3: p = 1 with the 'norm' a signed sum, sum(x) (none_or_zero: a zero sum gives 0), in the
    input dtype as NumPy takes it (float16 sums past 65504 are inf)."""
    if which != "y":
        return None
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    x = case.x.astype(dtype_of(dtype))
    with np.errstate(all="ignore"):
        total = np.sum(x, axis=axes, keepdims=True)
        return np.where(total == 0, 0.0, (x / total).astype(np.float64))


def _windows_below_batch(case: Case, dtype: str, which: str):
    """LRN.D4: channels c < N get their window (alpha / size a float32 number, LRN.D7); the rest none
    (base k): y = x * k^-beta there."""
    if which != "y":
        return None
    from normconf.reference.local_response_norm import window, window_sum

    axis = param(case, "channel_axis") % case.x.ndim
    size = int(case.params["size"])
    a = float(np.float32(param(case, "alpha") / size))  # LRN.D7: alpha / size a float32 number
    # the squares and their window sums in the input dtype (NumPy in that dtype: they overflow there)
    sums = rounded(
        window_sum(rounded(case.x * case.x, dtype), axis, *window(size, param(case, "extra"))), dtype
    )
    with np.errstate(all="ignore"):
        y = case.x * (param(case, "k") + a * sums) ** -param(case, "beta")
    beyond = np.arange(case.x.shape[axis]) >= case.x.shape[0]
    lone = case.x * param(case, "k") ** -param(case, "beta")
    shape = [-1 if i == axis else 1 for i in range(case.x.ndim)]
    return np.where(beyond.reshape(shape), lone, y)


def _running_sum_loss(case: Case, dtype: str):
    """LRN.D6: the relative error of y where the base is a running float32 sum along the channels
    (onnxruntime's kernel: bias, plus alpha/size times each square entering, minus each leaving): every
    one of its size + 2c updates up to channel c rounds at the running value, bias included, so
    beta * u * (size + 2c) * (k + alpha/size * all squares seen) / base, elementwise (1 or more: no
    digit left). With k = 1 and alpha/size = 1e-8 each update is absorbed whole: 10^4 of them move the
    base by 1e-4 relative (measured: y 344 ulps off over a 10001-channel window)."""
    from normconf.reference.local_response_norm import window, window_base

    axis = param(case, "channel_axis") % case.x.ndim
    size = int(case.params["size"])
    before, after = window(size, param(case, "extra"))
    # a NaN or ±inf square stays in the running sum: no digit left from it onward
    gone = _after_a_non_finite_square(case, dtype, "y")
    finite = np.where(np.isfinite(case.x), case.x, 0.0)
    squares = np.moveaxis(finite * finite, axis, 0)
    seen = np.cumsum(squares, axis=0)
    end = np.minimum(np.arange(squares.shape[0]) + after, squares.shape[0] - 1)
    seen = np.moveaxis(seen[end], 0, axis)
    a = param(case, "alpha") / (size if param(case, "alpha_over_size") else 1)
    base = window_base(finite, axis, (before, after), a, param(case, "k"))
    u = float(np.finfo(np.float32).eps)
    shape = [-1 if i == axis else 1 for i in range(case.x.ndim)]
    updates = (size + 2 * np.arange(case.x.shape[axis])).reshape(shape)
    with np.errstate(all="ignore"):
        running = abs(param(case, "k")) + a * seen
        return np.where(gone, np.inf, SAFETY * abs(param(case, "beta")) * u * updates * running / base)


def _after_a_non_finite_square(case: Case, dtype: str, which: str):
    """LRN.D6: a NaN or ±inf square enters the running sum for good: every channel whose window ends at
    or past it is NaN."""
    from normconf.reference.local_response_norm import window

    axis = param(case, "channel_axis") % case.x.ndim
    _, after = window(int(case.params["size"]), param(case, "extra"))
    bad = np.moveaxis(~np.isfinite(case.x), axis, 0)
    seen = np.maximum.accumulate(bad, axis=0)
    channels = bad.shape[0]
    reached = seen[np.minimum(np.arange(channels) + after, channels - 1)]
    return np.moveaxis(reached, 0, axis)


def _float32_alpha(case: Case, dtype: str) -> dict:
    """LRN.D7: alpha / size kept as a float32 number."""
    size = case.params["size"]
    return {"alpha": float(np.float32(param(case, "alpha") / size)) * size}


def _rms_half_groups(view, axes, case: Case, dtype: str):
    """RMS.D4: the rows whose float16 squares overflow, or whose mean square rounds eps away."""
    squares = view * view
    return np.any(squares > huge(dtype), axis=axes, keepdims=True) | (
        np.mean(squares, axis=axes, keepdims=True) < 2.0**-24
    )


KNOWN: list[Divergence] = [
    Divergence(
        adapters="onnx.reference",
        norm="batch_norm",
        clause="BN.D12",
        reason="onnx.reference takes float16 batch statistics with NumPy in float16: "
        "the variance overflows past |x| ~ 256",
        applies=lambda case, dtype: half_squares_overflow(case, dtype) and batch_stats(case),
        example=lambda: (
            Case("batch_norm", np.array([[-300.0], [300.0]]), {"eps": 2.0**-20, "training": True}, "large"),
            "float16",
        ),
        model=Envelope(
            groups_where_any(lambda x, dtype: np.abs(x) > HALF_SQUARE_LIMIT),
            allowed="non_finite_or_zero",
            kind="precision",
        ),
    ),
    Divergence(
        adapters="onnx*",
        norm="group_norm",
        clause="GN.D4",
        reason="ONNX's GroupNormalization function body computes E[x^2] - E[x]^2 (float32 stash): "
        "offsets lose every digit",
        applies=lambda case, dtype: one_pass_exceeds_budget(case, dtype, clip=False),
        example=lambda: (
            Case(
                "group_norm",
                MODERATE_ROWS.reshape(1, 16),
                {"groups": 1, "eps": 2.0**-20},
                "offset",
            ),
            "float32",
        ),
        model=one_pass_model("float32", clip=False, float64_too=True),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="group_norm",
        clause="GN.D6",
        reason="onnx.reference applies GroupNormalization's scale and bias in the input dtype",
        applies=lambda case, dtype: half(dtype),
        example=lambda: (
            Case(
                "group_norm",
                np.array([[[1.0, 3.0], [2.0, 2.5]]]),
                {
                    "groups": 1,
                    "eps": 2.0**-20,
                    "scale": np.array([1.0, 1.5]),
                    "offset": np.array([-0.9921875, 1.25]),
                },
                "standard",
            ),
            "float16",
        ),
        model=Computes(affine_in_dtype, absolute=xhat_rounding),
    ),
    Divergence(
        adapters="onnxruntime",
        norm="batch_norm",
        clause="BN.D25",
        reason=(
            "onnxruntime's half-precision BatchNormalization takes and returns its running statistics in the "
            "input's type: a variance past 65504 is held as inf; momentum 0 (canonical 1) makes 0 * inf = NaN"
        ),
        applies=lambda case, dtype: half(dtype) and case.params.get("state") is not None,
        example=state_past_half_example(),
        shows_in="state",
        model=Simulated(state_held_in(lambda dtype: dtype)),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="instance_norm",
        clause="IN.D6",
        reason=(
            "onnx.reference takes half-precision InstanceNormalization statistics with NumPy in the input "
            "dtype and adds its float32 eps: squares below the dtype's range vanish from the variance"
        ),
        applies=lambda case, dtype: half(dtype),
        example=lambda: (
            Case(
                "instance_norm",
                np.array(
                    [1.1920928955078125e-07, -1.1920928955078125e-07, 6.556510925292969e-07, 0.0]
                ).reshape(1, 1, 4),
                {
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "running_var": "biased",
                    "momentum": 0.0,
                    "training": False,
                },
                "near_eps",
            ),
            "float16",
        ),
        model=Simulated(_instance_norm_in_numpy),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="layer_norm",
        clause="LN.D7",
        reason=(
            "onnx.reference ignores stash_type: half-precision statistics are NumPy's in the input dtype, "
            "eps a float32 scalar added to them"
        ),
        applies=lambda case, dtype: half(dtype),
        example=lambda: (
            Case("layer_norm", np.array([[-300.0, 300.0]]), {"axes": (-1,), "eps": 2.0**-20}, "large"),
            "float16",
        ),
        bug=(
            "the ONNX reference evaluator ignores LayerNormalization's stash_type: the operator's own "
            "definition computes the statistics in float32 by default; upstream: not found reported"
        ),
        model=Simulated(_layer_norm_in_numpy),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="lp_normalize",
        clause="LP.D3",
        reason="onnx.reference's LpNormalization omits abs(): "
        "for p = 1 the 'norm' of mixed or negative values is a signed sum",
        applies=lambda case, dtype: param(case, "p") == 1.0 and bool(np.any(case.x < 0)),
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([[1.0, -1.0, 2.0]]),
                {"p": 1.0, "axes": (-1,), "eps": 0.0, "eps_placement": "none_or_zero"},
                "integers",
            ),
            "float64",
        ),
        bug=(
            "the ONNX reference evaluator's LpNormalization sums x^p, not |x|^p: for p = 1 a signed sum; "
            "upstream: onnx/onnx#8427 (merged 2026-09, after onnx 1.22.0)"
        ),
        model=Computes(_signed_sum, kind="semantic"),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="lp_normalize",
        clause="LP.D4",
        reason="onnx.reference sums |x|^p in the input dtype: it over- or underflows",
        applies=power_sum_out_of_range,
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([[300.0, 400.0]]),
                {"axes": (-1,), "eps": 0.0, "eps_placement": "none_or_zero"},
                "large",
            ),
            "float16",
        ),
        model=Simulated(lp_in_dtype),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="local_response_norm",
        clause="LRN.D4",
        reason="onnx.reference's LRN loops over the batch axis: "
        "with N != C channels get no window or it raises IndexError",
        applies=lambda case, dtype: (
            case.x.shape[0] != case.x.shape[param(case, "channel_axis") % case.x.ndim]
        ),
        example=lambda: (
            Case(
                "local_response_norm",
                np.arange(1.0, 13.0).reshape(1, 3, 2, 2),
                {"size": 3, "alpha": 0.5, "extra": "after"},
                "standard",
            ),
            "float64",
        ),
        model=OneOf(
            (Raises(pattern="IndexError", kind="semantic"), Computes(_windows_below_batch, kind="semantic"))
        ),
    ),
    Divergence(
        adapters="onnxruntime",
        norm="local_response_norm",
        clause="LRN.D6",
        reason=(
            "onnxruntime slides a running sum of squares along the channels: error grows with all "
            "squares seen"
        ),
        applies=lambda case, dtype: case.x.shape[param(case, "channel_axis") % case.x.ndim] > 1,
        example=lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1e18]], [[1.0]], [[1.0]], [[1.0]]]]),
                {"size": 1, "alpha": 1.0, "extra": "after"},
                "large",
            ),
            "float32",
        ),
        model=Bounded(rel=_running_sum_loss),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="local_response_norm",
        clause="LRN.D7",
        reason="onnx.reference keeps alpha/size in float32 and squares in the input dtype",
        applies=lambda case, dtype: (
            (dtype == "float64" and _float32_inexact(param(case, "alpha") / case.params["size"]))
            or half_squares_overflow(case, dtype)
        ),
        example=lambda: (
            Case(
                "local_response_norm",
                np.array([[[[0.75]]]]),
                {"size": 3, "alpha": 1.0, "beta": 0.5, "extra": "after"},
                "standard",
            ),
            "float64",
        ),
        model=OneOf(
            (
                Reference(_float32_alpha, kind="precision"),
                Envelope(half_square_windows, allowed="non_finite_or_zero", kind="precision"),
            )
        ),
    ),
    Divergence(
        adapters="onnx.reference",
        norm="rms_norm",
        clause="RMS.D4",
        reason="onnx.reference ignores stash_type: half-precision mean squares are NumPy's in the input "
        "dtype - float16 overflows past |x| ~ 256, bfloat16 (summed value by value) stagnates on long rows",
        applies=lambda case, dtype: half(dtype),
        example=lambda: (
            Case("rms_norm", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 2.0**-20}, "large"),
            "float16",
        ),
        bug=(
            "the ONNX reference evaluator ignores RMSNormalization's stash_type (float32 statistics by the "
            "operator's definition); upstream: not found reported"
        ),
        model=OneOf(
            (
                Envelope(groups_where(_rms_half_groups), allowed="non_finite_or_zero", kind="precision"),
                Reference(eps_in()),
                Simulated(_rms_in_input_dtype),
            )
        ),
    ),
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow(
        "onnx.reference", ("batch_norm", "instance_norm", "layer_norm", "rms_norm"), half_in_half=True
    ),
    *squares_overflow("onnx.reference", ("group_norm",)),
    *squares_overflow(
        "onnxruntime",
        (
            "batch_norm",
            "instance_norm",
            "layer_norm",
            "group_norm",
            "rms_norm",
            "local_response_norm",
        ),
    ),
    *squares_overflow("onnxruntime", ("lp_normalize",), eps_placement="none_or_zero"),
]

# LN.D4 in earlier onnxruntime releases: measured with `normconf run --versions onnxruntime=...`
KNOWN += [
    Divergence(
        adapters="onnxruntime",
        norm="layer_norm",
        clause="LN.D4",
        reason="onnxruntime's CPU LayerNormalization computed E[x^2] - E[x]^2 in float32 before 1.27 "
        "(PR #28743): offsets lose every digit",
        applies=lambda case, dtype: one_pass_exceeds_budget(case, dtype, clip=False),
        example=lambda: (
            Case("layer_norm", MODERATE_ROWS.reshape(1, 16), {"axes": (-1,), "eps": 2.0**-20}, "offset"),
            "float32",
        ),
        model=one_pass_model("float32", clip=False),
        releases="<1.27",
    ),
]

# LN.D11: MeanVarianceNormalization - no scale or bias, its fixed epsilon and placement
_MVN_REFERENCE = {"eps": MVN_EPS, "eps_placement": "outside_sqrt", "scale": None, "offset": None}
KNOWN += [
    Divergence(
        adapters="onnx.reference[mvn]",
        norm="layer_norm",
        clause="LN.D11",
        reason="MeanVarianceNormalization's function body computes Sqrt(E[x^2] - E[x]^2), unclamped, in the "
        "input dtype: offsets lose every digit, nearly constant slices give NaN",
        applies=lambda case, dtype: one_pass_exceeds_budget(case, dtype, clip=False),
        example=lambda: (
            Case(
                "layer_norm",
                MODERATE_ROWS.reshape(1, 16),
                {"axes": (-1,), "eps": MVN_EPS, "eps_placement": "outside_sqrt"},
                "offset",
            ),
            "float32",
        ),
        model=one_pass_model(clip=False),
    ),
    *squares_overflow("onnx.reference[mvn]", ("layer_norm",), **_MVN_REFERENCE),
    *squares_overflow(
        "onnxruntime[mvn]", ("layer_norm",), eps=0.0, eps_placement="outside_sqrt", scale=None, offset=None
    ),
]
