"""Keras 3's known divergences under the mixed policy (keras[...]@mixed, spec MP): RMSNormalization's
scale read in the half type (MP.D10) and its gradient rounded to it (MP.D11), and NUM.D1 where the
policy's output rounds the offset (a group whose squares overflow normalizes to its float32 offset, cast
to the half type). Every plain keras[...] entry names its @mixed sibling too (vocabulary/records.py);
known.py lists these with them."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    Case,
    Computes,
    Divergence,
    Reference,
    half,
    param,
    reference_value,
    rounded,
    tiny,
)
from normconf.vocabulary.builders import squares_overflow_mixed


# The models: what Keras computes under the policy where a divergence holds (vocabulary/models.py).
def scale_read_in(case: Case, dtype: str) -> dict:
    """MP.D10: the reference with RMSNormalization's float32 scale as the autocast scope reads it - rounded
    to the half type (±inf past its largest number, a subnormal's few bits or 0 below its normal range)."""
    return {"scale": rounded(param(case, "scale"), dtype)}


def scale_leaves_half_range(case: Case, dtype: str) -> bool:
    """MP.D10: a half-type run with a scale that rounding to the half type overflows or takes below its
    normal range (within it the rounding is one of the output's own roundings, inside the budget)."""
    scale = case.params.get("scale")
    if not half(dtype) or scale is None:
        return False
    with np.errstate(all="ignore"):
        held = rounded(scale, dtype)
        scale = np.asarray(scale, dtype=np.float64)
        return bool(np.any(~np.isfinite(held) | ((scale != 0) & (np.abs(held) < tiny(dtype)))))


def scale_gradient_in_half(case: Case, dtype: str, which: str):
    """MP.D11: dscale as the cast back from the half type leaves it - the reference's rounded to it;
    the other quantities the reference's."""
    if which != "scale":
        return None
    return rounded(reference_value(case, "scale"), dtype)


def scale_gradient_taken(case: Case, dtype: str) -> bool:
    """MP.D11: a half-type gradient example of an RMSNormalization with a scale."""
    return half(dtype) and case.params.get("scale") is not None and case.cotangent is not None


MIXED: list[Divergence] = [
    Divergence(
        adapters="keras*@mixed",
        norm="rms_norm",
        clause="MP.D10",
        reason=(
            "RMSNormalization's float32 scale is read through the mixed policy's autocast scope: rounded "
            "to the half type - inf past float16's 65504, a few bits or 0 below its normal range - before "
            "the float32 product (and its gradient rounded to the half type on the way back)"
        ),
        applies=scale_leaves_half_range,
        example=lambda: (
            Case(
                "rms_norm",
                np.array([[4.0, 1.0]]),
                {"axes": (-1,), "eps": 1e-6, "scale": np.array([1.0, 7e4])},
                "large",
            ),
            "float16",
        ),
        model=Reference(scale_read_in, kind="precision"),
    ),
    Divergence(
        adapters="keras*@mixed",
        norm="rms_norm",
        clause="MP.D11",
        reason="RMSNormalization's scale gradient comes back through the autocast scope's cast: the float32 "
        "variable's gradient is the half type's, rounded to it (2^-11 or 2^-8 relative, far past MP.N1's "
        "float32 budget)",
        applies=scale_gradient_taken,
        example=lambda: (
            Case(
                "rms_norm",
                np.array([[0.5, -1.25, 2.0], [3.0, 0.75, -0.5]]),
                {"axes": (-1,), "eps": 1e-6, "scale": np.array([0.3, 1.7, -0.9])},
                "standard",
                cotangent=np.array([[0.25, 1.5, -0.75], [1.0, -2.0, 0.5]]),
            ),
            "bfloat16",
        ),
        shows_in="gradient",
        # measured: 0 of 1 400 dscale elements differ from the reference's rounded to the half type
        # (keras[jax]@mixed and keras[torch]@mixed, float16 and bfloat16, 20 draws each)
        model=Computes(scale_gradient_in_half, either=True),
    ),
    *squares_overflow_mixed("keras*@mixed", ("batch_norm",), running_var="biased"),
    *squares_overflow_mixed("keras*@mixed", ("layer_norm", "group_norm")),
]
