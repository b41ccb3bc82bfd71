"""Keras' known divergences of UnitNormalization (lp_normalize), by clause: the sum of squares in the
input dtype (LP.D4), an unclamped float16 1/eps (LP.D5) and rsqrt's derivative at a zero vector (LP.D6).
Its LN.D10 entries stand in known_rsqrt.py; known.py lists them all in the family's order."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    Case,
    Divergence,
    Envelope,
    Simulated,
    huge,
    norm_square_overflows,
    param,
    rounded,
    rows_where_norm_square_overflows,
    tiny,
)


# The models: what each backend computes where a divergence holds (vocabulary/models.py).
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


LP_D4_D6: list[Divergence] = [
    Divergence(
        adapters="keras*",
        norm="lp_normalize",
        clause="LP.D4",
        reason="Keras' UnitNormalization sums x^2 in the input dtype: float16 norms above 256 overflow",
        applies=norm_square_overflows,
        example=lambda: (
            Case("lp_normalize", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 1e-12}, "large"),
            "float16",
        ),
        model=Envelope(rows_where_norm_square_overflows, allowed="non_finite_or_zero", kind="precision"),
    ),
    Divergence(
        adapters="keras*",
        norm="lp_normalize",
        clause="LP.D5",
        reason=(
            "Keras computes x * min(rsqrt(sum x^2), 1/eps) in the input dtype: in float16 1/eps is inf for "
            "eps below ~1.5e-5, so a row whose float16 sum of squares underflows is not clamped: x * inf"
        ),
        applies=_unclamped_half_rows,
        example=lambda: (
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
            adapters=name,
            norm="lp_normalize",
            clause="LP.D6",
            reason=(
                "Keras 3.15 UnitNormalization's gradient is inf or NaN where rsqrt's derivative overflows: "
                "at a zero vector, and at norms below ~1e-13 in float32"
            ),
            applies=lambda case, dtype: bool(np.any(_rsqrt_derivative_overflows(case, dtype, "x"))),
            example=lambda: (
                Case("lp_normalize", np.zeros((3, 1)), {"axes": (0,), "eps": 1e-12}, "integers"),
                "float64",
            ),
            shows_in="gradient",
            model=Envelope(_rsqrt_derivative_overflows),
        )
        for name in ("keras[jax]", "keras[torch]")
    ),
]
