"""The one tolerance model of normconf (spec/numerics.md). Every budget in every test comes from here.

Errors are measured elementwise against the float64 reference and budgets are elementwise too, so
one badly placed eps cannot hide behind large values elsewhere in the array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# NUM.N3: a computed result may be off by a small multiple of its analysed error; this is that
# multiple. 4 absorbs the constants a first-order analysis drops (a few roundings per element:
# subtract, divide or rsqrt, multiply, add) without admitting a changed formula, whose effect is
# O(1) relative (biased vs unbiased variance at n=2), or O(eps / var) (eps placement).
SAFETY = 4.0


def finfo(dtype):
    """np.finfo, including bfloat16 (which NumPy knows only through ml_dtypes)."""
    if str(dtype) == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(np.dtype(dtype))


def unit_roundoff(dtype) -> float:
    """u = 2^-p for a p-bit significand: half the gap between 1 and the next number (NUM.N1)."""
    return float(finfo(dtype).eps) / 2.0


def output_roundoff(acc_dtype, out_dtype) -> float:
    """NUM.N5's u_out: the unit roundoff of the output's last rounding - the output dtype's, or the
    statistics dtype's where that is coarser (a float64 output computed in float32 is rounded to
    float32 before its cast)."""
    return max(unit_roundoff(acc_dtype), unit_roundoff(out_dtype))


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


def conditioning(x: np.ndarray, axes: tuple[int, ...], eps: float = 0.0, divisor=None) -> np.ndarray:
    """NUM.N5: kappa = 1 + |mean| / divisor over `axes` (keepdims), the divisor sqrt(var + eps) unless
    given (a declared divisor convention, BN.P8): how much an error in the mean is magnified in the
    output; inf only where the divisor is exactly zero."""
    x = np.asarray(x, dtype=np.float64)
    mean = np.mean(x, axis=axes, keepdims=True)
    if divisor is None:
        divisor = np.sqrt(np.mean((x - mean) ** 2, axis=axes, keepdims=True) + eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(divisor > 0, 1.0 + np.abs(mean) / divisor, np.where(mean == 0, 1.0, np.inf))


def standardizing_budget(*, acc_dtype, out_dtype, n: int, kappa, xhat, scale, y_ref) -> np.ndarray:
    """NUM.N5: the elementwise budget of a standardizing norm (BN, LN, IN, GN); kappa = 1 without centring."""
    scale = 1.0 if scale is None else np.abs(scale)
    first_order = unit_roundoff(acc_dtype) * growth(n) * (kappa + np.abs(xhat)) * scale
    return SAFETY * (first_order + output_roundoff(acc_dtype, out_dtype) * np.abs(y_ref))


def lp_exponent_budget(*, acc_dtype, x: np.ndarray, p: float, axes: tuple[int, ...], y_ref) -> np.ndarray:
    """NUM.N11: S^(1/p) with 1/p rounded to `acc_dtype` moves the norm by |ln S| u / p relative (S =
    Σ|x|^p, its log exact in float64); 0 where 1/p is a power of two, or the norm is 0 or not finite."""
    if not np.isfinite(p) or p <= 0 or math.frexp(1.0 / p)[0] == 0.5:
        return np.zeros(np.shape(y_ref))
    magnitude = np.abs(np.asarray(x, dtype=np.float64))
    big = np.max(magnitude, axis=axes, keepdims=True)
    with np.errstate(all="ignore"):
        log_sum = p * np.log(big) + np.log(np.sum((magnitude / big) ** p, axis=axes, keepdims=True))
    log_sum = np.where(np.isfinite(log_sum), np.abs(log_sum), 0.0)
    return SAFETY * unit_roundoff(acc_dtype) * log_sum / p * np.abs(y_ref)


def perturbation_spread(fn, arrays: dict, rel: float, samples: int = 4, seed: int = 0) -> dict:
    """NUM.N8: how far fn's outputs move when each input array in turn is perturbed elementwise by a
    relative `rel` (random signs), maximized over a few samples and summed over the inputs: the
    first-order error of any backward-stable implementation whose operations round with relative
    error `rel`.

    `fn(**arrays)` returns a dict of arrays (None entries are skipped).
    """
    base = fn(**arrays)
    spread = {k: np.zeros_like(v) for k, v in base.items() if v is not None}
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        # one input at a time: perturbing the factors of a product together can cancel their moves
        for name, value in arrays.items():
            if not isinstance(value, np.ndarray):
                continue
            moves = {k: np.zeros_like(v) for k, v in spread.items()}
            for _ in range(samples):
                out = fn(
                    **{**arrays, name: value * (1 + rel * rng.choice([-1.0, 1.0], size=np.shape(value)))}
                )
                for k in moves:
                    moves[k] = np.fmax(moves[k], np.abs(out[k] - base[k]))
            for k in spread:
                spread[k] = spread[k] + moves[k]
    return spread


def running_stat_budget(*, acc_dtype, out_dtype, n: int, batch_error_scale, y_ref, previous) -> np.ndarray:
    """NUM.N5 for running statistics: the batch statistic's error (u_acc * growth(n) times its natural
    scale: max|x| for a mean, 2 max|x - mean| max|x| for a variance) plus the roundings of the blend
    (1 - w) * previous + w * batch, each at most the size of its terms."""
    blend = np.abs(y_ref) + np.abs(previous)
    return SAFETY * (
        unit_roundoff(acc_dtype) * growth(n) * batch_error_scale + 2 * unit_roundoff(out_dtype) * blend
    )


def standardized_in_dtype(
    x: np.ndarray,
    axes: tuple[int, ...],
    eps: float,
    dtype,
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
    breakdown: bool = True,
) -> np.ndarray:
    """NUM.N6: (x - mean) / sqrt(var + eps) computed two-pass in `dtype`, as the spec writes it (with the
    declared divisor convention, BN.P8: Bessel's n - 1, eps outside the root). `breakdown`: a statistic
    that overflowed gives NaN (the yardstick excuses nothing there); False: what the arithmetic gives.

    The honest-arithmetic yardstick: the float64 reference's equations with every operation rounded
    to `dtype`, returned as float64.
    """
    if str(dtype) == "bfloat16":
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):  # overflow in a narrow dtype is part of the honest answer
        xd = np.asarray(x).astype(dtype)
        n = dtype.type(np.prod([xd.shape[a] for a in axes]))
        mean = (np.sum(xd, axis=axes, keepdims=True, dtype=dtype) / n).astype(dtype)
        centred = (xd - mean).astype(dtype)
        count = n - dtype.type(1) if normalize_var == "unbiased" else n
        var = (np.sum(centred * centred, axis=axes, keepdims=True, dtype=dtype) / count).astype(dtype)
        divisor = (
            np.sqrt(var + dtype.type(eps))
            if eps_placement == "inside_sqrt"
            else np.sqrt(var) + dtype.type(eps)
        )
        result = (centred / divisor).astype(np.float64)
    # a statistic that overflowed is a breakdown, not an answer: it must excuse nothing (NaN)
    broken = ~(np.isfinite(mean) & np.isfinite(var)) if breakdown else np.zeros(np.shape(result), dtype=bool)
    return np.where(broken, np.nan, result)


def spacing(value, dtype) -> np.ndarray:
    """NUM.N7: the gap between the representable numbers of `dtype` around |value| (subnormals
    included; the gap at the largest finite number beyond it): what one rounding to `dtype` may move."""
    info = finfo(dtype)
    magnitude = np.minimum(
        np.maximum(np.abs(np.asarray(value, dtype=np.float64)), float(info.tiny)), float(info.max)
    )
    with np.errstate(all="ignore"):
        return np.exp2(np.floor(np.log2(np.nan_to_num(magnitude, nan=float(info.tiny))))) * float(info.eps)


def ulps(actual: np.ndarray, expected: np.ndarray, dtype) -> np.ndarray:
    """NUM.N7: |actual - expected| in units of the last place of `dtype` at the expected value."""
    expected = np.asarray(expected, dtype=np.float64)
    tiny = float(finfo(dtype).smallest_subnormal)
    spacing = np.maximum(np.abs(expected), float(finfo(dtype).tiny)) * unit_roundoff(dtype) * 2.0
    spacing = np.maximum(spacing, tiny)
    return np.abs(np.asarray(actual, dtype=np.float64) - expected) / spacing


@dataclass(frozen=True)
class Comparison:
    """NUM.N7: the worst element of a comparison: its error, its budget, their ratio and its ulps."""

    worst_error: float
    budget: float
    ratio: float
    ulps: float
    index: tuple[int, ...]
    expected: float = math.nan  # the reference value there (a budget far beyond it tells nothing)

    @property
    def passed(self) -> bool:
        return self.ratio <= 1.0


# dtype -> the float dtypes with fewer significand bits (a result's ulps are counted in the narrower one)
NARROWER = {
    "float64": ("float32", "bfloat16", "float16"),
    "float32": ("bfloat16", "float16"),
    "float16": ("bfloat16",),
}


def compare(actual, expected, budget, dtype, ulps_in: str | None = None) -> Comparison:
    """Elementwise |actual - expected| against an elementwise budget; where the reference is not finite,
    any non-finite result matches, and where it overflows `dtype` - or its budget reaches the overflow
    threshold - the infinity of its sign (NUM.N7).
    Ulps are counted in `ulps_in` (the declared statistics dtype where narrower than `dtype`)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if (
        actual.shape != expected.shape
    ):  # a wrongly shaped answer is wrong everywhere, not a crash of the suite
        return Comparison(math.inf, 0.0, math.inf, math.nan, ())
    # no budget below the rounding of the reference value itself in `dtype` (NUM.N7)
    budget = np.maximum(
        np.broadcast_to(np.asarray(budget, dtype=np.float64), expected.shape), spacing(expected, dtype)
    )
    error = np.abs(actual - expected)
    # beyond the dtype's largest finite number the correctly rounded answer is the infinity of its sign;
    # within the budget of the overflow threshold (max + half its spacing) a result may round there too
    threshold = float(finfo(dtype).max) + spacing(np.asarray(finfo(dtype).max), dtype) / 2
    overflows = (
        np.isfinite(expected)
        & ((np.abs(expected) > float(finfo(dtype).max)) | (np.abs(expected) + budget >= threshold))
        & (actual == np.sign(expected) * np.inf)
    )
    same_nonfinite = (~np.isfinite(actual) & ~np.isfinite(expected)) | (actual == expected) | overflows
    error = np.where(same_nonfinite, 0.0, np.where(np.isnan(error), np.inf, error))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / budget)
    if ratio.size == 0:
        return Comparison(0.0, 0.0, 0.0, 0.0, ())
    index = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return Comparison(
        float(error[index]),
        float(budget[index]),
        float(ratio[index]),
        float(ulps(actual[index], expected[index], ulps_in or dtype)),
        tuple(int(i) for i in index),
        float(expected[index]),
    )
