"""Element strategies and value arrays: the parameter and value pools the builders sample from, and the
input arrays of each value kind (VALUE_KINDS), rounded to the run's dtype and remembered for repros."""

from __future__ import annotations

import functools
import math

import numpy as np
from hypothesis import strategies as st

from normconf.adapters import _repro
from normconf.vocabulary.case import OVERFLOW_MAGNITUDE

from .forcing import _KINDS, composite

# float32-exact values too (2^-k), so frameworks with float32 attributes (ONNX) can run float64 draws
EPS = st.sampled_from([0.0, 1e-12, 1e-6, 1e-5, 1e-3, 0.1, 1.0, 2.0**-20, 2.0**-10])
POSITIVE_EPS = EPS.filter(lambda e: e > 0)
LP_EPS = st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 1.0])
# None: the cumulative average of every batch so far (BN.S5)
MOMENTA = st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0, 0.125, 0.75, None])
VALUE_KINDS = (
    "standard",
    "offset",
    "tiny_spread",
    "constant_channel",
    "large",
    "integers",
    "positive",
    "near_eps",  # the statistic (variance, mean square, norm, window term) comparable to eps (or k)
    "overflow",  # squares beyond float32's range (float16's in a float16 run): NUM.N6 excuses nothing
)
OFFSETS, SPREADS = st.sampled_from([1e2, 1e4, -3e3]), st.sampled_from([1e-3, 1e-5])
SEEDS, AFFINE_SEEDS, BOOLEANS = st.integers(0, 2**32 - 1), st.integers(0, 2**16), st.booleans()
STATE_KINDS, ESTIMATORS = st.sampled_from(["initial", "drawn"]), st.sampled_from(["biased", "unbiased"])
WEIGHTINGS, ASSIGNMENTS = st.sampled_from(["count", "equal"]), st.sampled_from(["contiguous", "interleaved"])
POWERS = st.sampled_from([1.0, 2.0, 3.0])
LP_PLACEMENTS = st.sampled_from(["max_norm", "max_power_sum", "add_norm", "none", "none_or_zero"])


# strategies are built once (module constants, or cached by their arguments here): hypothesis' own cache
# of st.integers(...) and st.sampled_from(...) costs ~20 us a lookup, a tenth of a case's drawing
@functools.lru_cache(maxsize=None)
def _sampled(choices: tuple):
    return st.sampled_from(choices)


@functools.lru_cache(maxsize=None)
def _integers(low: int, high: int):
    return st.integers(low, high)


# a long reduction (LONG values per statistic) in one draw of eight: kept cheap by few channels
LONG = 10_000
LONGS = st.sampled_from([False] * 7 + [True])
NEAR_EPS_RATIOS = st.sampled_from([1.0, 0.1, 10.0])


def representable(a: np.ndarray, dtype: str) -> np.ndarray:
    """a rounded to `dtype` and back, so the framework and the reference see the same numbers."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(a, dtype=np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float64).astype(dtype).astype(np.float64)


def _dtype_max(dtype: str) -> float:
    if dtype == "bfloat16":
        return 3.38e38
    return float(np.finfo(np.dtype(dtype)).max)


def _values(draw, shape, dtype: str, channel_axis: int | None, n: int, near: float | None = None):
    """An array of `shape` whose values are drawn from one of VALUE_KINDS (labelled). `n`: values per
    statistic; `near`: the magnitude per element that puts the statistic at eps (None where the norm
    has no eps-like term: "near_eps" is then not drawn)."""
    kinds = tuple(
        k for k in _KINDS.get() or VALUE_KINDS if k in VALUE_KINDS and (near is not None or k != "near_eps")
    )
    kind = draw(_sampled(kinds), label="values")
    kind = kind if kind in kinds else kinds[0]  # a cover's forced kind not drawable here: the first one
    seed = draw(SEEDS, label="seed")
    rng = np.random.default_rng(seed)
    gen, sized = f"np.random.default_rng({seed})", f"size={tuple(shape)!r}"
    source = None  # the NumPy source that regenerates x (a repro writes it for a long array)
    if kind == "standard":
        x, source = rng.normal(size=shape), f"{gen}.normal({sized})"
    elif kind == "offset":
        offset = draw(OFFSETS, label="offset")
        x, source = offset + rng.normal(size=shape), f"{offset!r} + {gen}.normal({sized})"
    elif kind == "tiny_spread":
        spread = draw(SPREADS, label="spread")
        x, source = (
            1.0 + spread * rng.normal(size=shape),
            f"1.0 + {spread!r} * {gen}.normal({sized})",
        )
    elif kind == "constant_channel":
        x, source = rng.normal(size=shape), f"{gen}.normal({sized})"
        if channel_axis is not None and x.size:
            index = [slice(None)] * len(shape)
            index[channel_axis] = 0
            x[tuple(index)] = 1.5
            along = [1] * len(shape)  # the channel axis, for broadcasting
            along[channel_axis] = shape[channel_axis]
            first = f"(np.arange({shape[channel_axis]}) == 0).reshape({tuple(along)!r})"
            source = f"np.where({first}, 1.5, {source})"
    elif kind == "large":
        # as large as the dtype allows without the sum of n squares overflowing in float32 statistics
        top = min(_dtype_max(dtype), 3.4e38) ** 0.5 / math.sqrt(max(n, 1)) / 4
        x, source = (
            top * rng.uniform(-1, 1, size=shape),
            f"{top!r} * {gen}.uniform(-1, 1, {sized})",
        )
    elif kind == "near_eps":
        size = draw(NEAR_EPS_RATIOS, label="near_eps_ratio") * near
        x, source = size * rng.normal(size=shape), f"{size!r} * {gen}.normal({sized})"
    elif kind == "overflow":
        top = OVERFLOW_MAGNITUDE.get(dtype, OVERFLOW_MAGNITUDE["default"])
        x, source = (
            top * rng.uniform(-1, 1, size=shape),
            f"{top!r} * {gen}.uniform(-1, 1, {sized})",
        )
    elif kind == "integers":
        x = rng.integers(-3, 4, size=shape).astype(float)
        source = f"{gen}.integers(-3, 4, size={tuple(shape)!r}).astype(float)"
    else:
        x, source = rng.uniform(0.1, 2.0, size=shape), f"{gen}.uniform(0.1, 2.0, {sized})"
    return kind, _remembered(representable(x, dtype), source, dtype)


def cotangent(seed: int, shape: tuple, dtype: str) -> np.ndarray:
    """A gradient property's output cotangent: standard normal from `seed`, rounded to `dtype`, and
    remembered as the draw that regenerates it (a repro writes one line for 10^4 values)."""
    source = f"np.random.default_rng({seed}).normal(size={tuple(shape)!r})"
    return _remembered(representable(np.random.default_rng(seed).normal(size=shape), dtype), source, dtype)


def derived(array: np.ndarray, drawn: np.ndarray, operation: str) -> np.ndarray:
    """`array`, computed from the long draw `drawn` by `operation` (an identity's "+ 3.0", "* 4.0"),
    noted for the repros as that draw's source with the operation applied (checked when written)."""
    source = _repro.source_of(drawn)
    if source is None or array.size <= _repro.LITERAL_LIMIT:
        return array
    return _repro.remember(array, f"(np.asarray({source}) {operation})")


def _remembered(array: np.ndarray, source: str | None, dtype: str) -> np.ndarray:
    """`array`, with the source that drew it (rounded to `dtype` as `representable` does) noted for the
    repros when it is long (adapters/_repro.remember)."""
    if source is None or array.size <= _repro.LITERAL_LIMIT:
        return array
    if dtype == "bfloat16":
        rounded = f"np.asarray({source}).astype(__import__('ml_dtypes').bfloat16)"
    elif dtype == "float64":
        rounded = source
    else:
        rounded = f"np.asarray({source}).astype('{dtype}')"
    return _repro.remember(array, rounded)


@composite
def values(draw, *args, **kwargs):
    """`_values` as a strategy, for a property that draws an input outside `case` (its labels forced by
    covering examples as inside it)."""
    return _values(draw, *args, **kwargs)
