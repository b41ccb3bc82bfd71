"""The one tolerance model of normconf (spec/numerics.md). Every budget in every test comes from here.

Errors are measured elementwise against the float64 reference and budgets are elementwise too, so
one badly placed eps cannot hide behind large values elsewhere in the array.
"""
from __future__ import annotations

import math

import numpy as np

# NUM.N3: a computed result may be off by a small multiple of its analysed error; this is that
# multiple. 4 absorbs the constants a first-order analysis drops (a few roundings per element:
# subtract, divide or rsqrt, multiply, add) without admitting a changed formula, whose effect is
# O(1) relative (biased vs unbiased variance at n=2), or O(eps / var) (eps placement).
SAFETY = 4.0


def unit_roundoff(dtype) -> float:
    """u = 2^-p for a p-bit significand: half the gap between 1 and the next number (NUM.N1)."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def growth(n: int) -> float:
    """NUM.N2: how rounding error in a sum of n terms grows, in units of u.

    sqrt(n) is the probabilistic bound for any summation order (Higham & Mary, 2019), which also
    dominates the worst case of pairwise or tree reductions (log2 n) for the n that matter; the
    1 covers the final rounding of the division by n.
    """
    return 1.0 + math.sqrt(max(int(n), 1))


def reference_budget(n: int) -> float:
    """NUM.N4: the float64 reference's error bound relative to the output's scale.

    The reference centres in two steps and reduces pairwise (NumPy), so its error grows as
    log2(n) rather than sqrt(n); the constant covers the elementwise operations after the sums.
    """
    return SAFETY * unit_roundoff(np.float64) * (4.0 + math.log2(max(int(n), 2)))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|, the error relative to the output's scale."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        scale = 1.0
    return float(np.max(np.abs(actual - expected)) / scale) if expected.size else 0.0
