"""Shared float64 machinery of the reference: clause-citing validation and accurate moments.

Every check raises `ClauseError`, which names the offending parameter and the spec clause that
forbids the value, before anything is computed: the reference is pure, so nothing partial exists.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np


class ClauseError(ValueError):
    """An input that a constraint clause (`*.C<n>`) of the spec forbids."""

    def __init__(self, clause: str, parameter: str, message: str):
        self.clause = clause
        self.parameter = parameter
        super().__init__(f"[{clause}] {parameter}: {message}")


ClauseError.__module__ = "normconf.reference"  # its public home, as tracebacks should show it


# ---------------------------------------------------------------------------------------------
# Validation. Each helper takes the clause it enforces, so an error always cites the spec.


def as_input(x, clause: str, *, min_rank: int = 1, name: str = "x") -> np.ndarray:
    """The input as a float64 array; real numbers only, rank at least `min_rank`."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise ClauseError(clause, name, f"is not an array ({exc})") from None
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ClauseError(clause, name, f"must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim < min_rank:
        raise ClauseError(clause, name, f"must have rank >= {min_rank}, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def as_axis(axis, ndim: int, clause: str, name: str) -> int:
    """A single axis in [-ndim, ndim), returned non-negative."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ClauseError(clause, name, f"must be an integer axis, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ClauseError(clause, name, f"axis {axis} is out of range for rank {ndim}")
    return axis % ndim


def as_axes(axes, ndim: int, clause: str, name: str = "axes") -> tuple[int, ...]:
    """A non-empty set of distinct axes, returned sorted and non-negative."""
    if isinstance(axes, numbers.Integral) and not isinstance(axes, bool):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise ClauseError(clause, name, f"must be an axis or a sequence of axes, got {axes!r}") from None
    if not axes:
        raise ClauseError(clause, name, "must name at least one axis")
    normalized = tuple(as_axis(a, ndim, clause, name) for a in axes)
    if len(set(normalized)) != len(normalized):
        raise ClauseError(clause, name, f"names an axis twice: {axes!r}")
    return tuple(sorted(normalized))


def as_real(value, clause: str, name: str, *, low=None, low_open=False, high=None) -> float:
    """A finite real number within [low, high] (or (low, high] when `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ClauseError(clause, name, f"must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ClauseError(clause, name, f"must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ClauseError(clause, name, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ClauseError(clause, name, f"must be <= {high}, got {value}")
    return value


def as_count(value, clause: str, name: str, *, low: int = 1) -> int:
    """An integer >= low."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ClauseError(clause, name, f"must be an integer, got {value!r}")
    if value < low:
        raise ClauseError(clause, name, f"must be >= {low}, got {value}")
    return int(value)


def as_choice(value, choices, clause: str, name: str):
    if value not in choices:
        raise ClauseError(clause, name, f"must be one of {sorted(choices)!r}, got {value!r}")
    return value


def as_param(value, shape: tuple[int, ...], clause: str, name: str) -> np.ndarray | None:
    """An optional learned parameter (scale, offset, running statistic) of exactly `shape`."""
    if value is None:
        return None
    arr = as_input(value, clause, min_rank=0, name=name)
    if arr.shape != tuple(shape):
        raise ClauseError(clause, name, f"must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def as_required_param(value, shape: tuple[int, ...], clause: str, name: str) -> np.ndarray:
    """A parameter that must be given (a running statistic the call reads)."""
    arr = as_param(value, shape, clause, name)
    if arr is None:
        raise ClauseError(clause, name, f"must be an array of shape {tuple(shape)}, got None")
    return arr


# ---------------------------------------------------------------------------------------------
# Numerics.


def ieee(fn):
    """Run a reference function with IEEE-754 results and no warnings: 0/0 is NaN, x/0 is inf.

    The spec defines those outcomes (e.g. eps = 0 on a constant channel); a warning adds nothing.
    """

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return quiet


def kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the reduced `axes` set to 1, for broadcasting statistics back."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def along(values: np.ndarray, ndim: int, axes) -> np.ndarray:
    """A parameter laid out over `axes` (an int for one channel axis), shaped to broadcast in rank `ndim`."""
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    shape = [1] * ndim
    for a, size in zip(axes, values.shape, strict=True):
        shape[a] = size
    return values.reshape(shape)


def affine(xhat: np.ndarray, scale, offset, axes) -> np.ndarray:
    """xhat * scale + offset, the parameters laid out over `axes`; either may be absent."""
    y = xhat if scale is None else xhat * along(scale, xhat.ndim, axes)
    return y if offset is None else y + along(offset, xhat.ndim, axes)


def affine_vjp(g: np.ndarray, xhat: np.ndarray, scale, offset, axes):
    """(dL/dxhat, dL/dscale, dL/doffset) for y = xhat * scale + offset."""
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    summed = other_axes(g.ndim, axes)
    g_hat = g if scale is None else g * along(scale, g.ndim, axes)
    dscale = None if scale is None else np.sum(g * xhat, axis=summed)
    doffset = None if offset is None else np.sum(g, axis=summed)
    return g_hat, dscale, doffset


def as_cotangent(g, x: np.ndarray, clause: str) -> np.ndarray:
    g = as_input(g, clause, min_rank=0, name="g")
    if g.shape != x.shape:
        raise ClauseError(clause, "g", f"must have the shape of x {x.shape}, got {g.shape}")
    return g


def count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    return math.prod(shape[a] for a in axes)


def require_values(x: np.ndarray, axes: tuple[int, ...], clause: str, what: str = "row") -> None:
    """A statistic over no values is undefined (NUM.N9): each row over `axes` must hold one at least."""
    if count(x.shape, axes) == 0:
        raise ClauseError(clause, "x", f"has no values per {what} over axes {axes} (shape {x.shape})")


@dataclass(frozen=True)
class Moments:
    """Mean, centred values and biased variance over some axes, computed so that offsets do not hurt.

    The mean is found in two steps: a first estimate m0, then the mean m1 of x - m0. The centred
    values (x - m0) - m1 are accurate to a few ulps of the spread even when |mean| >> spread,
    because x - m0 is exact or nearly so (Sterbenz) and m1 is small. `mean` = m0 + m1 is rounded
    once, as any float64 result must be.
    """

    mean: np.ndarray  # keepdims
    centred: np.ndarray
    var: np.ndarray  # keepdims, biased (divide by n)
    n: int


def moments(x: np.ndarray, axes: tuple[int, ...]) -> Moments:
    m0 = np.mean(x, axis=axes, keepdims=True)
    centred = x - m0
    m1 = np.mean(centred, axis=axes, keepdims=True)
    centred -= m1  # the second step, in place: one array less to allocate and fill
    var = np.mean(centred * centred, axis=axes, keepdims=True)
    return Moments(mean=m0 + m1, centred=centred, var=var, n=count(x.shape, axes))


# Below this a sum of squares may have lost digits to underflow; above, it overflowed.
_SQUARES_SAFE_LOW = 2.0**-900


def root_mean_square(
    v: np.ndarray, axes: tuple[int, ...], eps: float, mean_sq: np.ndarray | None = None, factor: float = 1.0
) -> np.ndarray:
    """sqrt(factor * mean(v^2 over axes) + eps), keepdims, correct even where v^2 over- or underflows.

    The plain formula is used when its mean of squares is safely in range; otherwise v is first
    divided by its largest magnitude, which changes no digit of the exact result. `mean_sq`, when
    given, is the already scaled factor * mean(v^2).
    """
    if mean_sq is None:
        mean_sq = factor * np.mean(v * v, axis=axes, keepdims=True)
    risky = (mean_sq < _SQUARES_SAFE_LOW) | (mean_sq == np.inf)
    if not np.any(risky):
        return np.sqrt(mean_sq + eps)
    big = np.max(np.abs(v), axis=axes, keepdims=True)
    big = np.where((big > 0) & np.isfinite(big), big, 1.0)
    scaled = factor * np.mean(np.square(v / big), axis=axes, keepdims=True)
    eps_scaled = eps / big / big
    # eps / big^2 overflows only when eps dwarfs every v^2: then the root is sqrt(eps).
    return np.where(np.isfinite(eps_scaled), big * np.sqrt(scaled + eps_scaled), np.sqrt(eps))


def bessel(var_biased: np.ndarray, n: int) -> np.ndarray:
    """Unbiased variance from the biased one; n == 1 has none (callers check the clause first)."""
    return var_biased * (n / (n - 1))


# BN.P8: how a standardizing norm forms its divisor. Canonical: biased variance, eps inside the square
# root (BN.N1, BN.N2). The alternatives are parameters so that an implementation declaring one of them
# is checked against it; one that does not declare it is a finding under BN.N1/BN.N2.
NORMALIZE_VARS = ("biased", "unbiased")
EPS_PLACEMENTS = ("inside_sqrt", "outside_sqrt")


def check_divisor(normalize_var, eps_placement, n: int, clause: str) -> None:
    """The divisor conventions are known names, and an unbiased variance has at least two values."""
    as_choice(normalize_var, NORMALIZE_VARS, clause, "normalize_var")
    as_choice(eps_placement, EPS_PLACEMENTS, clause, "eps_placement")
    if normalize_var == "unbiased" and n < 2:
        raise ClauseError(
            clause, "x", f"an unbiased normalizing variance needs >= 2 values per statistic, got {n}"
        )


@dataclass(frozen=True)
class Standardized:
    """x̂ = (x − mean) / divisor over some axes, and what its VJP needs.

    `slope` is 2·k·d·D'(v) for divisor d = D(v), v = k·(biased variance): the weight of the x̂ term in
    the VJP; 1 for the canonical divisor sqrt(v + eps).
    """

    xhat: np.ndarray
    divisor: np.ndarray
    moments: Moments | None  # None where the statistics are running ones (BN eval)
    slope: np.ndarray | float


def standardized(
    x: np.ndarray,
    axes: tuple[int, ...],
    eps: float,
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> Standardized:
    """(x − mean) / sqrt(v + eps) over `axes` (or / (sqrt(v) + eps) with eps outside), v the biased
    variance (or Bessel-corrected with `normalize_var="unbiased"`)."""
    m = moments(x, axes)
    k = m.n / (m.n - 1) if normalize_var == "unbiased" else 1.0
    if eps_placement == "inside_sqrt":
        divisor = root_mean_square(m.centred, axes, eps, mean_sq=k * m.var, factor=k)
        slope: np.ndarray | float = k
    else:
        root = root_mean_square(m.centred, axes, 0.0, mean_sq=k * m.var, factor=k)
        divisor = root + eps
        # d / sqrt(v) times k; where v = 0 every x − mean is 0 and the term vanishes
        slope = np.where(root > 0, k * divisor / np.where(root > 0, root, 1.0), 0.0)
    return Standardized(m.centred / divisor, divisor, m, slope)


def standardized_vjp(g_hat: np.ndarray, s: Standardized, axes: tuple[int, ...]) -> np.ndarray:
    """Input cotangent of x̂ = (x − mean(x)) / D(v(x)) over `axes`, given dL/dx̂.

    dL/dx = (g − mean(g) − slope · x̂ · mean(g · x̂)) / d, the means over `axes` (slope as in Standardized).
    """
    mean_g = np.mean(g_hat, axis=axes, keepdims=True)
    mean_gx = np.mean(g_hat * s.xhat, axis=axes, keepdims=True)
    return (g_hat - mean_g - s.slope * s.xhat * mean_gx) / s.divisor


@dataclass(frozen=True)
class Grads:
    """Cotangents of a norm's differentiable inputs; None where the input was absent."""

    x: np.ndarray
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None


def other_axes(ndim: int, keep: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i not in keep)
