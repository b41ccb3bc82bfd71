"""Canonical parameters as Paddle's arguments, shared by both adapters: the data format for the channel
axis, the 32-bit float attributes (epsilon, momentum, beta), and the checks that refuse what Paddle
cannot express. Its own module so that `adapters.py` holds the adapters; nothing here imports paddle."""

from __future__ import annotations

from fractions import Fraction

from ..base import channel_axis_of, f32, float32_attribute, require, trailing

LAYOUT_FIRST = {2: "NC", 3: "NCL", 4: "NCHW", 5: "NCDHW"}
LAYOUT_LAST = {2: "NC", 3: "NLC", 4: "NHWC", 5: "NDHWC"}


def _attribute32(name: str, value: float, dtype: str) -> float:
    return float32_attribute(value, dtype, f"Paddle's {name} attribute (BN.D17)")


def _paddle_momentum(params, dtype: str) -> float:
    """BN.D2: Paddle weights the old value by `momentum`; canonical w weights the new batch."""
    momentum = params["momentum"]
    require(momentum is not None, "Paddle has no cumulative average (momentum=None) (BN.D7)")
    decay = 1.0 - float(momentum)
    exact = f32(decay) == decay and 1 - Fraction(decay) == Fraction(momentum)
    require(
        dtype != "float64" or exact,
        f"Paddle's momentum is a 32-bit float attribute: {decay!r} (canonical {momentum!r}) is not exact in "
        f"float32, so a float64 run cannot use it exactly (BN.D17)",
    )
    return decay


def _layout(x, params, norm: str) -> str:
    """data_format for the canonical channel axis: channels first (axis 1) or last."""
    require(2 <= x.ndim <= 5, f"{norm}: Paddle's data formats cover rank 2 to 5")
    axis = channel_axis_of(x, params)
    require(axis in (1, x.ndim - 1), f"{norm}: Paddle's channel axis is 1 or the last axis")
    return LAYOUT_FIRST[x.ndim] if axis == 1 else LAYOUT_LAST[x.ndim]


def _bn_checks(x, params, dtype):
    require(params["running_var"] == "biased", "Paddle's running variance is biased (BN.D1)")
    return (
        _layout(x, params, "batch_norm"),
        _attribute32("epsilon", params["eps"], dtype),
        _paddle_momentum(params, dtype),
    )


def _in_checks(x, params, dtype):
    require(3 <= x.ndim <= 5, "instance_norm: Paddle's InstanceNorm takes rank 3 to 5")
    require(channel_axis_of(x, params) == 1, "instance_norm: Paddle's channel axis is dim 1")
    require(params.get("state") is None, "Paddle's InstanceNorm keeps no running statistics (IN.D4)")
    return _attribute32("epsilon", params["eps"], dtype)


def _ln_checks(x, params, dtype):
    count = trailing(params["axes"], x.ndim)
    require(count is not None, "normalized_shape covers trailing axes only (LN.D3)")
    require(
        count < x.ndim, "Paddle's layer_norm needs begin_norm_axis > 0: it cannot normalize over every axis"
    )
    eps = _attribute32("epsilon", params["eps"], dtype)
    require(eps <= 1e-3, "Paddle's layer_norm refuses epsilon outside [0, 0.001] (InferMeta check)")
    return list(x.shape[x.ndim - count :]), eps


def _gn_checks(x, params):
    require(params["assignment"] == "contiguous", "Paddle groups contiguous channels (GN.D1)")
    require(x.ndim >= 3 or channel_axis_of(x, params) == 1, "group_norm: rank 2 is channels-first only")
    axis = channel_axis_of(x, params)
    require(axis in (1, x.ndim - 1), "group_norm: Paddle's channel axis is 1 or the last axis")
    require(2 <= x.ndim <= 5, "group_norm: Paddle's data formats cover rank 2 to 5")
    return "NCHW" if axis == 1 else "NHWC"


def _lrn_checks(x, params, dtype):
    require(3 <= x.ndim <= 5, "local_response_norm: Paddle's data formats cover rank 3 to 5")
    axis = channel_axis_of(x, params)
    require(axis in (1, x.ndim - 1), "local_response_norm: Paddle's channel axis is 1 or the last axis")
    require(params["alpha_over_size"], "Paddle always divides alpha by size (LRN.D1)")
    require(
        params["size"] % 2 == 1 or params["extra"] == "before",
        "Paddle puts an even window's extra channel before c (LRN.D2)",
    )
    beta = params["beta"]
    require(
        dtype != "float64" or f32(beta) == beta,
        f"Paddle raises to beta as a 32-bit float: {beta!r} would become {f32(beta)!r} (LRN.D8)",
    )
    return LAYOUT_FIRST[x.ndim] if axis == 1 else LAYOUT_LAST[x.ndim]
