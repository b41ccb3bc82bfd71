"""Keras' known divergences on non-trailing axes: the torch backend normalizes the trailing axes instead
(LN.D8, RMS.D6), and RMSNormalization multiplies an unreshaped scale (RMS.D5). known.py lists them in
the family's order."""

from __future__ import annotations

import dataclasses

import numpy as np

from normconf import reference as R
from normconf.vocabulary import (
    Case,
    Computes,
    Divergence,
    OneOf,
    Raises,
    Reference,
    param,
    reference_value,
    trailing_axes,
)


def _axes_of(case: Case) -> list[int]:
    return sorted(a % case.x.ndim for a in param(case, "axes"))


def non_trailing(case: Case) -> bool:
    axes = _axes_of(case)
    return axes != list(range(case.x.ndim - len(axes), case.x.ndim))


def contiguous_non_trailing(case: Case) -> bool:
    axes = _axes_of(case)
    return non_trailing(case) and axes == list(range(axes[0], axes[0] + len(axes)))


_WIDE = np.arange(18.0).reshape(2, 3, 3) / 7.0


# The models: what each backend computes where a divergence holds (vocabulary/models.py).
def _summed_to(array: np.ndarray, shape: tuple) -> np.ndarray:
    """`array` summed onto `shape` (the reverse of broadcasting `shape` to array's shape)."""
    lead = array.ndim - len(shape)
    array = array.sum(axis=tuple(range(lead))) if lead else array
    return array.sum(
        axis=tuple(a for a, n in enumerate(shape) if n == 1 and array.shape[a] != 1), keepdims=True
    )


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
        "Mismatch in shape",  # torch autograd refusing a cotangent of x's shape for the broadcast product
        "Input to reshape is a tensor with",  # TF's bfloat16 gradient of the broadcast product
    ),
    kind="semantic",
)


# LN.D8: the torch backend normalizes LayerNorm's trailing axes
LN_D8: list[Divergence] = [
    Divergence(
        adapters="keras[torch]",
        norm="layer_norm",
        clause="LN.D8",
        reason="Keras' torch backend normalizes the trailing axes instead",
        applies=lambda case, dtype: contiguous_non_trailing(case),
        example=lambda: (Case("layer_norm", _WIDE, {"axes": (1,), "eps": 2.0**-20}, "standard"), "float32"),
        bug=(
            "LayerNormalization(axis=[1]) on the torch backend normalizes the trailing axes "
            "(ops.layer_normalization hands contiguous axes to F.layer_norm as a normalized_shape); the "
            "other backends normalize axis 1; upstream: not found reported"
        ),
        model=OneOf((Reference(trailing_axes), _REFUSES_SHAPE)),
    ),
]

# RMS.D5, RMS.D6: RMSNormalization's scale on the last axis, and the torch backend's trailing axes
RMS_D5_D6: list[Divergence] = [
    Divergence(
        adapters="keras*",
        norm="rms_norm",
        clause="RMS.D5",
        reason="Keras RMSNormalization multiplies an unreshaped scale on non-trailing axes",
        applies=lambda case, dtype: non_trailing(case),
        example=lambda: (
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
        adapters="keras[torch]",
        norm="rms_norm",
        clause="RMS.D6",
        reason="Keras' torch backend normalizes the trailing axes instead",
        applies=lambda case, dtype: contiguous_non_trailing(case),
        example=lambda: (Case("rms_norm", _WIDE, {"axes": (1,), "eps": 2.0**-20}, "standard"), "float32"),
        bug=(
            "RMSNormalization(axis=[1]) on the torch backend normalizes the trailing axes "
            "(ops.rms_normalization hands contiguous axes to F.rms_norm as a normalized_shape); the other "
            "backends normalize axis 1; upstream: not found reported"
        ),
        model=OneOf((Reference(trailing_axes), _REFUSES_SHAPE)),
    ),
]
