"""ONNX's known divergences (onnxruntime, onnx.reference), sorted by clause: each a model of what the
implementation does instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf.conformance.divergences import (
    Divergence,
    batch_stats,
    eps_underflows,
    half,
    half_squares_overflow,
    one_pass_exceeds_budget,
    param,
    power_sum_out_of_range,
)
from normconf.conformance.strategies import Case


def _float32_inexact(value: float) -> bool:
    return float(np.float32(value)) != value


def _float16_statistics(case: Case, dtype: str) -> bool:
    """stash_type ignored: float16 statistics round eps away (BN.D14) or overflow the squares."""
    return eps_underflows(case, dtype) or half_squares_overflow(case, dtype)


KNOWN: list[Divergence] = [
    Divergence(
        "onnx.reference",
        "batch_norm",
        "BN.D12",
        "onnx.reference takes float16 batch statistics with NumPy in float16: "
        "the variance overflows past |x| ~ 256",
        lambda case, dtype: half_squares_overflow(case, dtype) and batch_stats(case),
        lambda: (
            Case("batch_norm", np.array([[-300.0], [300.0]]), {"eps": 2.0**-20, "training": True}, "large"),
            "float16",
        ),
    ),
    Divergence(
        "onnx*",
        "group_norm",
        "GN.D4",
        "ONNX's GroupNormalization function body computes E[x^2] - E[x]^2 (float32 stash): "
        "offsets lose every digit",
        lambda case, dtype: one_pass_exceeds_budget(case, dtype, clip=False),
        lambda: (
            Case(
                "group_norm",
                1e4 + np.array([[0.5, -0.25, 0.125, -0.5]]),
                {"groups": 1, "eps": 2.0**-20},
                "offset",
            ),
            "float32",
        ),
    ),
    Divergence(
        "onnx.reference",
        "group_norm",
        "GN.D6",
        "onnx.reference applies GroupNormalization's scale and bias in the input dtype",
        lambda case, dtype: half(dtype),
        lambda: (
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
    ),
    Divergence(
        "onnx.reference",
        "layer_norm",
        "LN.D7",
        "onnx.reference ignores stash_type: float16 statistics (and eps) are computed and rounded in float16",
        _float16_statistics,
        lambda: (
            Case("layer_norm", np.array([[-300.0, 300.0]]), {"axes": (-1,), "eps": 2.0**-20}, "large"),
            "float16",
        ),
    ),
    Divergence(
        "onnx.reference",
        "lp_normalize",
        "LP.D3",
        "onnx.reference's LpNormalization omits abs(): "
        "for p = 1 the 'norm' of mixed or negative values is a signed sum",
        lambda case, dtype: param(case, "p") == 1.0 and bool(np.any(case.x < 0)),
        lambda: (
            Case(
                "lp_normalize",
                np.array([[1.0, -1.0, 2.0]]),
                {"p": 1.0, "axes": (-1,), "eps": 0.0, "eps_placement": "none_or_zero"},
                "integers",
            ),
            "float64",
        ),
    ),
    Divergence(
        "onnx.reference",
        "lp_normalize",
        "LP.D4",
        "onnx.reference sums |x|^p in the input dtype: it over- or underflows",
        power_sum_out_of_range,
        lambda: (
            Case(
                "lp_normalize",
                np.array([[300.0, 400.0]]),
                {"axes": (-1,), "eps": 0.0, "eps_placement": "none_or_zero"},
                "large",
            ),
            "float16",
        ),
    ),
    Divergence(
        "onnx.reference",
        "local_response_norm",
        "LRN.D4",
        "onnx.reference's LRN loops over the batch axis: "
        "with N != C channels get no window or it raises IndexError",
        lambda case, dtype: case.x.shape[0] != case.x.shape[param(case, "channel_axis") % case.x.ndim],
        lambda: (
            Case(
                "local_response_norm",
                np.arange(1.0, 13.0).reshape(1, 3, 2, 2),
                {"size": 3, "alpha": 0.5, "extra": "after"},
                "standard",
            ),
            "float64",
        ),
    ),
    Divergence(
        "onnxruntime",
        "local_response_norm",
        "LRN.D6",
        "onnxruntime slides a running sum of squares along the channels: error grows with all squares seen",
        lambda case, dtype: case.x.shape[param(case, "channel_axis") % case.x.ndim] > 1,
        lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1e18]], [[1.0]], [[1.0]], [[1.0]]]]),
                {"size": 1, "alpha": 1.0, "extra": "after"},
                "large",
            ),
            "float32",
        ),
    ),
    Divergence(
        "onnx.reference",
        "local_response_norm",
        "LRN.D7",
        "onnx.reference keeps alpha/size in float32 and squares in the input dtype",
        lambda case, dtype: (
            (dtype == "float64" and _float32_inexact(param(case, "alpha") / case.params["size"]))
            or half_squares_overflow(case, dtype)
        ),
        lambda: (
            Case(
                "local_response_norm",
                np.array([[[[0.75]]]]),
                {"size": 3, "alpha": 1.0, "beta": 0.5, "extra": "after"},
                "standard",
            ),
            "float64",
        ),
    ),
    Divergence(
        "onnx.reference",
        "rms_norm",
        "RMS.D4",
        "onnx.reference ignores stash_type: float16 mean squares overflow past |x| ~ 256",
        _float16_statistics,
        lambda: (
            Case("rms_norm", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 2.0**-20}, "large"),
            "float16",
        ),
    ),
]
