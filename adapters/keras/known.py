"""Keras 3's known divergences (keras[tensorflow], keras[jax], keras[torch], keras[numpy]), sorted by clause:
each a model of what a backend does instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import dataclasses

import numpy as np

from normconf import reference as R
from normconf.reference import RunningStats
from normconf.vocabulary import (
    HUGE_2X3,
    HUGE_ROW,
    LP_RSQRT_HELD,
    MODERATE_ROWS,
    RSQRT_EXAMPLES,
    RSQRT_HELD,
    SMALL_COTANGENT,
    Case,
    Computes,
    Divergence,
    Envelope,
    OneOf,
    Raises,
    Reference,
    Simulated,
    float64_state_read,
    half,
    huge,
    norm_square_overflows,
    one_pass_exceeds_budget,
    one_pass_gradient_amplified,
    one_pass_model,
    param,
    reference_value,
    rounded,
    rows_where_norm_square_overflows,
    rsqrt_jvp_underflows,
    rsqrt_jvp_underflows_in_float32,
    rsqrt_of_square_sum_underflows,
    sequential_sums,
    squares_overflow,
    state_held_in,
    state_in_float32,
    state_past_half_example,
    tiny,
    trailing_axes,
)


def _axes_of(case: Case) -> list[int]:
    return sorted(a % case.x.ndim for a in param(case, "axes"))


def _non_trailing(case: Case) -> bool:
    axes = _axes_of(case)
    return axes != list(range(case.x.ndim - len(axes), case.x.ndim))


def _contiguous_non_trailing(case: Case) -> bool:
    axes = _axes_of(case)
    return _non_trailing(case) and axes == list(range(axes[0], axes[0] + len(axes)))


def _one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=False, acc="float32")


def _sync_one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=True, acc="float32")


def _torch_manual_layer_norm(case: Case, dtype: str) -> bool:
    """BN.D4 for Keras' torch LayerNorm over non-contiguous axes: there it takes ops.moments (one pass,
    in float32, float64 inputs too) instead of F.layer_norm."""
    return (
        _non_trailing(case)
        and not _contiguous_non_trailing(case)
        and _one_pass(case, "float32" if dtype == "float64" else dtype)
    )


_WIDE = np.arange(18.0).reshape(2, 3, 3) / 7.0
# 16 values offset by 100 from a unit spread, exact in float32: one-pass float32 variance misses the
# budget here by ~10x, yet keeps all but ~1e-3 of y - a 1 % error elsewhere still shows
_ROWS = MODERATE_ROWS
# two replicas of 8 values 1 ± 3.5e-3 (float32-exact): the one-pass variance's error is ~2x the gradient
# budget, and still 2 % of dx
_rng = np.random.default_rng(3)
_SYNC_NEAR_ONE = (
    (1.0 + 3.5e-3 * _rng.normal(size=(16, 1))).astype(np.float32).astype(np.float64),
    {
        "channel_axis": -1,
        "eps": 1e-6,
        "training": True,
        "replica_sizes": (8, 8),
        "weighting": "count",
        "running_var": "biased",
    },
)
_SYNC_NEAR_ONE_COTANGENT = _rng.normal(size=(16, 1)).astype(np.float32).astype(np.float64)
# a nearly constant batch: the running variance is almost all blend, whose float32 rounding shows
_NEARLY_CONSTANT_BATCH = np.array(
    [
        [1.0001257302210933, 0.9998678951367087, 1.0006404226504433],
        [1.0001049001171531, 0.9994643306268389, 1.0003615950549094],
    ]
)


# The models: what each backend computes where a divergence holds (vocabulary/models.py).
def _summed_to(array: np.ndarray, shape: tuple) -> np.ndarray:
    """`array` summed onto `shape` (the reverse of broadcasting `shape` to array's shape)."""
    lead = array.ndim - len(shape)
    array = array.sum(axis=tuple(range(lead))) if lead else array
    return array.sum(
        axis=tuple(a for a, n in enumerate(shape) if n == 1 and array.shape[a] != 1), keepdims=True
    )


def replica_gradients_in_dtype(case: Case, dtype: str, which: str):
    """SBN.D4: each replica's tape returns its parameter gradients in the variable's dtype - its own rows'
    sum of g x̂ (dscale) or g (doffset) rounded to the layer's dtype (a float16 partial past 65504 is
    inf) - and the replicas' partials are then summed; dx and y are the reference's."""
    if which not in ("scale", "offset") or case.params.get(which) is None or case.cotangent is None:
        return None
    axis = param(case, "channel_axis") % case.x.ndim
    plain = dataclasses.replace(
        case, params={k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    )
    xhat = np.asarray(reference_value(plain, "y"), dtype=np.float64)
    terms = case.cotangent * xhat if which == "scale" else np.broadcast_to(case.cotangent, case.x.shape)
    others = tuple(i for i in range(case.x.ndim) if i != axis)
    rows = np.cumsum(param(case, "replica_sizes"))[:-1]
    return np.sum([rounded(np.sum(part, axis=others), dtype) for part in np.split(terms, rows)], axis=0)


def scale_on_last_axis(xhat_in: str | None):
    """RMS.D5: x̂ times the layer's scale (ones when the canonical call has none: the layer always holds
    one, shaped by the normalized axes) broadcast as it is, against the last axis - x̂ the reference's,
    or (`xhat_in` a dtype) x * rsqrt(mean(x²) + eps) computed in it (where its squares overflow, 0). Its
    gradients are that product's with the cotangent broadcast to it (as TF's tape broadcasts an
    output gradient of x's shape): dx the plain VJP of Σ(G scale) over the broadcast axes, dscale
    G x̂ summed onto the scale's shape."""

    def compute(case: Case, dtype: str, which: str):
        plain = dataclasses.replace(case, params={k: v for k, v in case.params.items() if k != "scale"})
        if xhat_in is None:
            xhat = np.asarray(reference_value(plain, "y"), dtype=np.float64)
        else:
            axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
            kind = np.dtype(xhat_in).type
            with np.errstate(all="ignore"):
                xd = case.x.astype(kind)
                mean_square = np.mean(xd * xd, axis=axes, keepdims=True, dtype=kind)
                xhat = (xd * (kind(1) / np.sqrt(mean_square + kind(param(case, "eps"))))).astype(np.float64)
        scale = case.params.get("scale")
        if scale is None:
            scale = np.ones(R.NORMS[case.norm].parameter_shape(case.x, case.params))
        scale = np.asarray(
            scale, dtype=np.float64
        )  # shaped by the normalized axes, aligned to the trailing ones
        if which == "y":
            return xhat * scale
        if which not in ("x", "scale") or xhat_in is not None:
            return None
        product = np.broadcast_shapes(xhat.shape, scale.shape)
        cotangent = np.broadcast_to(case.cotangent, product)
        if which == "x":
            return reference_value(
                dataclasses.replace(plain, cotangent=_summed_to(cotangent * scale, xhat.shape)), "x"
            )
        return _summed_to(cotangent * xhat, scale.shape)

    return compute


_ONE_PASS_FLOAT32 = one_pass_model("float32", clip=False, float64_too=True)  # float64 in float32 (LN.D10)
# shapes a layer's own arithmetic refuses (a scale against the wrong axis, F.layer_norm's trailing shape)
# the mis-broadcast output refused where shapes do not broadcast - or, where they do, given back with
# another shape than x, so that JAX's VJP refuses a cotangent of x's shape
_REFUSES_SHAPE = Raises(
    pattern=(
        "Incompatible shapes",
        "could not be broadcast",
        "normalized_shape",
        "must match the size",
        "argument to VJP function",
        "Input to reshape is a tensor with",  # TF's bfloat16 gradient of the broadcast product
    ),
    kind="semantic",
)


def _rsqrt_derivative_overflows(case: Case, dtype: str, which: str):
    """LP.D6: the rows whose sum of squares s (taken in the input dtype) makes rsqrt's derivative
    overflow it - s = 0 included; the gradient there is inf or NaN (0 * inf). The derivative is formed
    as s^(-3/2) before the factor -1/2 (JAX: rsqrt(s) / s, PyTorch: rsqrt(s)^3), so the threshold is
    s^(-3/2) itself (measured: keras[jax] float32 NaN at s = 1.9e-26, where s^(-3/2)/2 is still finite)."""
    with np.errstate(all="ignore"):
        return np.broadcast_to(_square_sums_in(case, dtype) ** -1.5 > huge(dtype), case.x.shape)


def _square_sums_in(case: Case, dtype: str) -> np.ndarray:
    """LP.D5: each row's sum of squares as Keras takes it in `dtype` (squares rounded, then summed)."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    return rounded(np.sum(rounded(case.x * case.x, dtype), axis=axes, keepdims=True), dtype)


def _unclamped_half_rows(case: Case, dtype: str) -> bool:
    """LP.D5: a float16 run whose 1/eps overflows, with a row whose float16 sum of squares is below
    float16's normal range (rsqrt of it unclamped, or inf)."""
    eps = param(case, "eps")
    return (
        dtype == "float16"
        and (eps == 0 or 1.0 / eps > huge("float16"))
        and bool(np.any(_square_sums_in(case, dtype) < tiny("float16")))
    )


def _unit_normalized_in_dtype(case: Case, dtype: str, which: str):
    """LP.D5: y = x * min(rsqrt(sum of squares), 1/eps), every step rounded to the input dtype."""
    if which != "y":
        return None
    eps = param(case, "eps")
    with np.errstate(all="ignore"):
        inverse = rounded(1.0 / np.sqrt(_square_sums_in(case, dtype)), dtype)
        clamp = rounded(np.float64(1.0) / np.float64(eps), dtype)
        return rounded(case.x * np.minimum(inverse, clamp), dtype)


KNOWN: list[Divergence] = [
    *(
        Divergence(
            name,
            norm,
            "BN.D4",
            "Keras' torch and numpy backends compute the variance in one pass, unclipped",
            _one_pass,
            lambda norm=norm, shape=shape, extra=extra: (
                Case(norm, _ROWS.reshape(shape), {"eps": 2.0**-20, **extra}, "offset"),
                "float32",
            ),
            model=_ONE_PASS_FLOAT32,
        )
        for name in ("keras[torch]", "keras[numpy]")
        for norm, shape, extra in (
            ("batch_norm", (16, 1), {"channel_axis": -1, "training": True, "running_var": "biased"}),
            ("layer_norm", (1, 16), {"axes": (-1,)}),
            ("group_norm", (1, 16), {"groups": 1, "channel_axis": -1}),
        )
        if not (name == "keras[torch]" and norm == "layer_norm")  # F.layer_norm there: two-pass (LN.D8)
    ),
    Divergence(
        "keras[torch]",
        "layer_norm",
        "BN.D4",
        "Keras' torch backend takes one-pass moments for non-contiguous LayerNorm axes",
        _torch_manual_layer_norm,
        lambda: (
            Case("layer_norm", _ROWS.reshape(2, 1, 8), {"axes": (0, 2), "eps": 2.0**-20}, "offset"),
            "float32",
        ),
        model=one_pass_model("float32", clip=False, float64_too=True),
    ),
    *(
        Divergence(
            name,
            "batch_norm",
            "BN.D15",
            "Keras keeps its moving statistics in float32 variables, float64 inputs too",
            float64_state_read,
            lambda: (
                Case(
                    "batch_norm",
                    _NEARLY_CONSTANT_BATCH,
                    {
                        "channel_axis": 1,
                        "eps": 1e-12,
                        "running_var": "biased",
                        "momentum": 0.01,
                        "training": True,
                        "state": RunningStats.initial(3),
                    },
                    "tiny_spread",
                ),
                "float64",
            ),
            "state",
            model=Simulated(state_in_float32),
        )
        for name in ("keras[jax]", "keras[torch]", "keras[numpy]")
    ),
    Divergence(
        "keras[torch]",
        "layer_norm",
        "LN.D8",
        "Keras' torch backend normalizes the trailing axes instead",
        lambda case, dtype: _contiguous_non_trailing(case),
        lambda: (Case("layer_norm", _WIDE, {"axes": (1,), "eps": 2.0**-20}, "standard"), "float32"),
        bug=(
            "LayerNormalization(axis=[1]) on the torch backend normalizes the trailing axes "
            "(ops.layer_normalization hands contiguous axes to F.layer_norm as a normalized_shape); the "
            "other backends normalize axis 1; upstream: not found reported"
        ),
        model=OneOf((Reference(trailing_axes), _REFUSES_SHAPE)),
    ),
    *(
        Divergence(
            name,
            norm,
            "LN.D10",
            "Keras computes in float32 here, float64 too: rsqrt's derivative underflows for v > ~2e25",
            rsqrt_jvp_underflows_in_float32,
            lambda norm=norm, example=example: (
                Case(norm, *example, "large", cotangent=np.array([0.7, 0.3, 0.3]).reshape(example[0].shape)),
                "float64",
            ),
            "gradient",
            model=RSQRT_HELD,
        )
        for name in ("keras[jax]", "keras[torch]")
        for norm in ("layer_norm", "rms_norm", "group_norm", "batch_norm")
        # Keras' torch backend hands trailing axes to F.layer_norm, whose backward is exact here: use others
        for example in (
            [HUGE_ROW.reshape(3, 1, 1), {"axes": (0, 2), "eps": 1e-12}]
            if norm == "layer_norm"
            else RSQRT_EXAMPLES[norm],
        )
    ),
    Divergence(
        "keras[tensorflow]",
        "group_norm",
        "LN.D10",
        "TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        rsqrt_jvp_underflows,
        lambda: (
            Case(
                "group_norm",
                np.array(
                    [
                        [
                            [
                                1.4220007074850406e17,
                                1.4181626044502508e18,
                                1.0295566435677635e18,
                                -1.6208742031441265e18,
                            ],
                            [
                                1.1649953792304087e18,
                                -1.520324964295639e18,
                                7.485851744631521e17,
                                -1.0572333441037107e18,
                            ],
                        ]
                    ]
                ),
                {
                    "groups": 1,
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "scale": np.array([-0.7522706389427185, 0.11860664188861847]),
                    "offset": np.array([0.5206981301307678, 0.1494448333978653]),
                },
                "large",
                cotangent=np.array(
                    [
                        [
                            [
                                0.3645724058151245,
                                0.2941325008869171,
                                0.028422242030501366,
                                0.5467129945755005,
                            ],
                            [
                                -0.7364540696144104,
                                -0.16290995478630066,
                                -0.4821193218231201,
                                0.5988461971282959,
                            ],
                        ]
                    ]
                ),
            ),
            "float32",
        ),
        "gradient",
        model=RSQRT_HELD,
    ),
    *(
        Divergence(
            name,
            "lp_normalize",
            "LN.D10",
            "Keras differentiates rsqrt(sum x^2) in the input dtype: "
            "rsqrt(v)/v under- or subflows for large v",
            rsqrt_of_square_sum_underflows,
            lambda example=example: example,
            "gradient",
            model=LP_RSQRT_HELD,
            indistinguishable={
                "scaled_gradient": "in float16, 1/norm^3 among the subnormals keeps a few bits: the "
                "projection term is off by up to half a subnormal spacing times |x (x.g)| - 40 % of dx "
                "on the example (norm 173), more than the 10 % perturbation"
            }
            if name == "keras[jax]"
            else {},
        )
        for name, example in (
            (
                "keras[jax]",
                (
                    Case(
                        "lp_normalize",
                        np.array([100.125, 99.875, 100.625]),
                        {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                        "offset",
                        cotangent=np.array([0.125732421875, -0.132080078125, 0.640625]),
                    ),
                    "float16",
                ),
            ),
            (
                "keras[torch]",
                (
                    Case(
                        "lp_normalize",
                        HUGE_ROW.reshape(-1),
                        {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                        "large",
                        cotangent=np.array([0.1257302165031433, -0.13210485875606537, 0.6404226422309875]),
                    ),
                    "float32",
                ),
            ),
        )
    ),
    # Keras on TF differentiates tf.math.rsqrt (RsqrtGrad) for every standardizing layer and for
    # UnitNormalization's ops.normalize: the same float32 underflow as its GroupNormalization (LN.D10)
    *(
        Divergence(
            "keras[tensorflow]",
            norm,
            "LN.D10",
            "TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
            rsqrt_jvp_underflows,
            lambda norm=norm, x=x, params=params, g=g: (
                Case(norm, x, params, "large", cotangent=g),
                "float32",
            ),
            "gradient",
            model=RSQRT_HELD,
        )
        for norm, x, params, g in (
            (
                "batch_norm",
                HUGE_2X3,
                {"channel_axis": 1, "eps": 1e-12, "running_var": "biased", "training": False},
                SMALL_COTANGENT,
            ),
            ("layer_norm", HUGE_2X3, {"axes": (0,), "eps": 1e-12}, SMALL_COTANGENT),
            (
                "rms_norm",
                np.array(
                    [
                        [
                            [3.443006588049162e17, 1.1787756959002788e18, 4.3824550926247526e17],
                            [-1.8627761071036826e17, -1.2481824361231155e17, -7.160974920803942e17],
                            [1.0370656895101829e18, 1.1239236721306501e18, 8.03800518106284e17],
                            [1.1649254228030915e18, 4.617789063875789e17, -7.087771498210918e17],
                            [8.833133507363471e17, 7.366934751724175e17, 2.0683299777150976e17],
                        ]
                    ]
                ),
                {"axes": (0, 1, 2), "eps": 1e-12},
                np.array(
                    [
                        [
                            [-0.5015294551849365, -0.2821129262447357, -0.47814905643463135],
                            [-1.6602836847305298, 0.6462036967277527, -0.1277744621038437],
                            [-1.2871307134628296, 0.20206326246261597, 0.5188384652137756],
                            [-0.2968858778476715, 1.8651530742645264, -0.05999547243118286],
                            [-0.14610053598880768, 0.840681791305542, -0.1843334585428238],
                        ]
                    ]
                ),
            ),
        )
    ),
    Divergence(
        "keras[tensorflow]",
        "lp_normalize",
        "LN.D10",
        "Keras differentiates rsqrt(sum x^2) in the input dtype: rsqrt(v)/v under- or subflows for large v",
        rsqrt_of_square_sum_underflows,
        lambda: (
            Case(
                "lp_normalize",
                np.array([2.3003341810806292e18, -2.3929039891684393e18, -1.94159281143441e18]),
                {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                "large",
                cotangent=SMALL_COTANGENT[0].copy(),
            ),
            "float32",
        ),
        "gradient",
        model=LP_RSQRT_HELD,
    ),
    Divergence(
        "keras*",
        "lp_normalize",
        "LP.D4",
        "Keras' UnitNormalization sums x^2 in the input dtype: float16 norms above 256 overflow",
        norm_square_overflows,
        lambda: (
            Case("lp_normalize", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 1e-12}, "large"),
            "float16",
        ),
        model=Envelope(rows_where_norm_square_overflows, allowed="non_finite_or_zero", kind="precision"),
    ),
    Divergence(
        "keras*",
        "lp_normalize",
        "LP.D5",
        "Keras computes x * min(rsqrt(sum x^2), 1/eps) in the input dtype: in float16 1/eps is inf for eps "
        "below ~1.5e-5, so a row whose float16 sum of squares underflows is not clamped: x * inf",
        _unclamped_half_rows,
        lambda: (
            Case(
                "lp_normalize",
                np.array([[0.0, 0.0], [2.0**-24, 0.0]]),
                {"axes": (-1,), "eps": 1e-12},
                "integers",
            ),
            "float16",
        ),
        model=Simulated(_unit_normalized_in_dtype),
    ),
    *(
        Divergence(
            name,
            "lp_normalize",
            "LP.D6",
            "Keras 3.15 UnitNormalization's gradient is inf or NaN where rsqrt's derivative overflows: "
            "at a zero vector, and at norms below ~1e-13 in float32",
            lambda case, dtype: bool(np.any(_rsqrt_derivative_overflows(case, dtype, "x"))),
            lambda: (
                Case("lp_normalize", np.zeros((3, 1)), {"axes": (0,), "eps": 1e-12}, "integers"),
                "float64",
            ),
            "gradient",
            model=Envelope(_rsqrt_derivative_overflows),
        )
        for name in ("keras[jax]", "keras[torch]")
    ),
    Divergence(
        "keras*",
        "rms_norm",
        "RMS.D5",
        "Keras RMSNormalization multiplies an unreshaped scale on non-trailing axes",
        lambda case, dtype: _non_trailing(case),
        lambda: (
            Case(
                "rms_norm",
                _WIDE,
                {"axes": (1,), "eps": 2.0**-20, "scale": np.array([1.0, 2.0, 3.0])},
                "standard",
            ),
            "float32",
        ),
        bug=(
            "RMSNormalization(axis=...) on a non-trailing axis multiplies by its scale without reshaping it "
            "to that axis: the output is wrong (or of another shape, or the call raises), against the "
            "layer's own docstring; upstream: not found reported (keras-team/keras#22201 is a related crash "
            "on the torch backend)"
        ),
        model=OneOf(
            (
                Computes(scale_on_last_axis(None), kind="semantic"),
                # where the squares overflow the float32 Keras computes float64 in on jax and torch
                # (NUM.D1), x̂ is 0 there: the two divergences in one example
                Computes(scale_on_last_axis("float32"), kind="semantic"),
                Reference(trailing_axes),
                _REFUSES_SHAPE,
            )
        ),
    ),
    Divergence(
        "keras[torch]",
        "rms_norm",
        "RMS.D6",
        "Keras' torch backend normalizes the trailing axes instead",
        lambda case, dtype: _contiguous_non_trailing(case),
        lambda: (Case("rms_norm", _WIDE, {"axes": (1,), "eps": 2.0**-20}, "standard"), "float32"),
        bug=(
            "RMSNormalization(axis=[1]) on the torch backend normalizes the trailing axes "
            "(ops.rms_normalization hands contiguous axes to F.rms_norm as a normalized_shape); the other "
            "backends normalize axis 1; upstream: not found reported"
        ),
        model=OneOf((Reference(trailing_axes), _REFUSES_SHAPE)),
    ),
    Divergence(
        "keras[tensorflow]",
        "sync_batch_norm",
        "SBN.D4",
        "Keras' replicas return their parameter gradients in the layer's half dtype before they are "
        "summed: a replica's float16 partial past 65504 is inf",
        lambda case, dtype: half(dtype) and case.cotangent is not None,
        lambda: (
            Case(
                "sync_batch_norm",
                np.array([[-28608.0, -24176.0, 37696.0], [-48960.0, 12016.0, 27424.0]]),
                {
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "running_var": "biased",
                    "momentum": 0.0,
                    "training": False,
                    "state": RunningStats.initial(3),
                    "scale": np.array([1.1259765625, 0.86767578125, 1.640625]),
                    "offset": np.zeros(3),
                    "replica_sizes": (1, 1),
                    "weighting": "count",
                },
                "overflow",
                cotangent=np.array([[0.5, 1.0, -2.5], [0.25, -1.0, 1.3]]),
            ),
            "float16",
        ),
        "gradient",
        model=Computes(replica_gradients_in_dtype),
    ),
    Divergence(
        "keras[tensorflow]",
        "sync_batch_norm",
        "SBN.D2",
        "Keras' synchronized BatchNorm pools E[x^2] - mean^2 (one pass, clipped at 0; SBN.N2)",
        _sync_one_pass,
        lambda: (
            Case(
                "sync_batch_norm",
                _ROWS.reshape(16, 1),
                {
                    "channel_axis": -1,
                    "eps": 2.0**-20,
                    "training": True,
                    "replica_sizes": (8, 8),
                    "weighting": "count",
                    "running_var": "biased",
                },
                "offset",
            ),
            "float32",
        ),
        model=one_pass_model("float32", clip=True),
    ),
    Divergence(
        "keras[tensorflow]",
        "sync_batch_norm",
        "SBN.D2",
        "Keras' synchronized BatchNorm's one-pass pooled variance carries its error into the gradient",
        one_pass_gradient_amplified,
        lambda: (
            Case("sync_batch_norm", *_SYNC_NEAR_ONE, "tiny_spread", cotangent=_SYNC_NEAR_ONE_COTANGENT),
            "float32",
        ),
        "gradient",
        model=one_pass_model("float32", clip=True),
    ),
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("keras*", ("batch_norm",), running_var="biased"),
    *squares_overflow("keras*", ("layer_norm", "group_norm", "rms_norm", "lp_normalize")),
]

# NUM.D3: Keras' TF backend takes BatchNormalization's moments with tf.nn.moments, half inputs cast to
# float32 first (keras/src/backend/tensorflow/nn.py, moments), measured with Keras 3.15.1 on TF 2.21
KNOWN += [
    sequential_sums(
        "keras[tensorflow]",
        "Keras' TF backend sums the batch axes as one running float32 (float64) sum: its error grows as n u",
        acc_of=lambda dtype: "float64" if dtype == "float64" else "float32",
        dtypes=("float16", "bfloat16", "float32", "float64"),
    ),
]

# BN.D25: a half-precision layer's moving statistics are variables of its dtype (add_weight with
# autocast=False takes the layer's variable dtype: keras/src/layers/normalization/batch_normalization.py)
KNOWN += [
    Divergence(
        "keras*",
        norm,
        "BN.D25",
        "Keras keeps a float16 (bfloat16) layer's moving statistics in float16 (bfloat16) variables: "
        "a variance past 65504 is held as inf, and momentum 0 (canonical 1) turns it into 0 * inf = NaN",
        lambda case, dtype: half(dtype) and case.params.get("state") is not None,
        state_past_half_example(norm, **extra),
        "state",
        model=Simulated(state_held_in(lambda dtype: dtype)),
    )
    for norm, extra in (
        ("batch_norm", {}),
        ("sync_batch_norm", {"replica_sizes": (2, 2), "weighting": "count"}),
    )
]
