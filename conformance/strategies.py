"""Hypothesis strategies: labelled draws of shapes, layouts, parameters and values for each norm.

Every draw is labelled (`draw(..., label=...)`) so a failing example reads as its parameters. Shapes
break symmetry (N != C, odd sizes, size-1 axes) and values include what numerics fear: offsets large
relative to spread, tiny or zero variance, constant channels, statistics comparable to eps, magnitudes
whose squares overflow float32 or float16, long reductions, mixed signs. A strategy draws only what the
adapter's declaration allows for parameters the framework fixes.

Random draws may miss a regime in a quick run, so every property also runs the COVERS first: explicit
examples (`@covering`) that force the labels of one regime each and take the simplest draw for the rest.

For frameworks that compile a program per configuration and shape (`Adapter.compiles`), a program is a
budget: their random draws take the configuration (every labelled draw but VALUE_LABELS: shape, axes,
eps, momentum, mode, affine, groups, window...) from a pool of six entries, PROGRAMS, and draw only the
values freely, so every property and dtype reuses the same compiled programs; their covers run on the
pool's entries too (COVER_PROGRAMS). The suite turns it on per cell for such adapters
(`programs(pooled=True)`).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math

import numpy as np
from hypothesis import HealthCheck, Phase, example, find, settings
from hypothesis import strategies as st
from hypothesis.internal.escalation import current_pytest_item

from normconf.adapters import _repro
from normconf.adapters.base import DIVISOR_CONVENTIONS, DIVISOR_NORMS
from normconf.reference import NORMS, RunningStats
from normconf.reference.rms_norm import default_eps
from normconf.vocabulary.case import OVERFLOW_MAGNITUDE, Case

from . import clock

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


# --- covering examples: each regime at least once per property, whatever the random draws do -------

_FORCED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("forced", default=None)
# the value kinds a property asked `case` for (None: all of VALUE_KINDS)
_KINDS: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("kinds", default=None)
_SIMPLEST = settings(
    database=None,
    derandomize=True,
    max_examples=1,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# regime -> the labels it forces; every other draw takes its simplest value. Shape index 0 of each
# pool rank has N != C and every size above 1, index 1 a size-1 axis (tests/test_strategies.py).
COVERS = {
    "code_paths": dict(
        affine=True,
        size=3,
        shape=0,
        rank=3,
        normalized_axes=2,
        trailing=True,
        channels_per_group=2,
        groups=2,
        training=True,
        tracked=True,
        state="drawn",
    ),
    "size_1_axes_cumulative": dict(
        shape=1,
        rank=3,
        channels=1,
        groups=1,
        channels_per_group=1,
        training=True,
        tracked=True,
        momentum=None,
    ),
    # p = 2: with p = 1 every Lp eps placement that clamps the norm or its power agrees
    "near_eps": dict(values="near_eps", eps=1e-3, p=2.0, affine=True, rank=3, shape=0, trailing=True),
    "near_large_eps": dict(
        values="near_eps", eps=1.0, p=2.0, rank=3, shape=0, trailing=True, channels_per_group=2
    ),
    "long": dict(long=True, affine=True, rank=3, training=True, trailing=True),
    "overflow": dict(values="overflow", rank=4, shape=0, training=True, trailing=True),
}


# Labelled draws that are values (the arrays and their kind): in a pooled draw they stay free, while
# every other labelled draw is configuration, forced by the pool entry or else its simplest value.
# Unlabelled draws (the affine's and the state's seeds, the state's counter) are values too.
VALUE_LABELS = frozenset({"values", "seed", "offset", "spread", "near_eps_ratio", "state", "state_seed"})
PROGRAM_LABEL = "program"  # the pool entry a pooled draw takes (drawn freely too)

# The program pool of compiled frameworks: each entry forces the configuration labels it names (labels a
# norm's strategy does not draw are ignored; a value its strategy cannot take falls back to the nearest
# integer in range, or else the simplest value) and the others take their simplest value. The entries
# hold every code path the strategies exist for: N != C, size-1 axes, channels first and last, several
# channels per group (contiguous and interleaved), 1-d and 2-d normalized axes, trailing and not, ranks
# 2 to 5, 10^4-value reductions, training with and without running statistics, eval, cumulative and
# constant momentum, both running-variance estimators, every Lp power and four eps placements, LRN
# windows narrower and wider than the channels, replicas of equal and unequal batches under both
# weightings (tests/test_strategies.py). Each cover runs on one of them (COVER_PROGRAMS).
PROGRAMS = {
    "code_paths": dict(
        constants_seed=1,
        affine=True,
        size=3,
        shape=0,
        rank=3,
        channels=3,
        normalized_axes=2,
        trailing=True,
        channels_per_group=2,
        groups=2,
        training=True,
        tracked=True,
        eps=1e-3,
        momentum=0.1,
        p=2.0,
        alpha=1e-4,
        beta=0.75,
        k=2.0,
        alpha_over_size=True,
        replicas=2,
        equal_batches=True,
    ),
    "size_1_axes_cumulative": dict(
        shape=1,
        rank=3,
        channels=1,
        groups=1,
        channels_per_group=1,
        training=True,
        tracked=True,
        momentum=None,
        eps=1e-5,
    ),
    "near_large_eps_eval": dict(
        constants_seed=2,
        eps=1.0,
        p=2.0,
        rank=3,
        shape=0,
        channel_axis=2,
        trailing=True,
        channels_per_group=2,
        training=False,
        tracked=True,
        momentum=0.9,
        affine=True,
        eps_placement="add_norm",
        size=2,
        alpha=0.1,
        beta=1.0,
        k=0.5,
        extra="after",
    ),
    "long": dict(long=True, affine=True, rank=3, training=True, trailing=True, eps=1e-5, momentum=0.01),
    "channels_last_rank5": dict(
        constants_seed=3,
        rank=5,
        shape=1,
        channels=6,
        channel_axis=4,
        training=True,
        tracked=True,
        running_var="unbiased",
        affine=True,
        eps=1e-6,
        momentum=0.75,
        normalized_axes=2,
        trailing=False,
        axes_order=(2, 0, 3, 1),
        groups=3,
        channels_per_group=2,
        assignment="interleaved",
        size=5,
        alpha=2.0,
        beta=0.5,
        k=1.0,
        p=1.0,
        eps_placement="none_or_zero",
        std_floor=1e-7,
        replicas=4,
        equal_batches=True,
        weighting="equal",
    ),
    "rank2_unequal_replicas": dict(
        constants_seed=4,
        rank=2,
        shape=0,
        channels=6,
        eps=0.1,
        momentum=0.5,
        running_var="unbiased",
        training=True,
        tracked=True,
        normalized_axes=1,
        trailing=True,
        groups=4,
        channels_per_group=1,
        size=6,
        alpha=2.0,
        beta=0.5,
        k=1.0,
        p=3.0,
        eps_placement="max_power_sum",
        replicas=3,
        equal_batches=False,
        replica_sizes=[1, 3, 2],
        weighting="equal",
    ),
}
# regime -> the pool entry its cover runs on for a compiled framework (with the regime's value labels)
COVER_PROGRAMS = {
    "code_paths": "code_paths",
    "size_1_axes_cumulative": "size_1_axes_cumulative",
    "near_eps": "code_paths",
    "near_large_eps": "near_large_eps_eval",
    "long": "long",
    "overflow": "code_paths",
}

_POOLED: contextvars.ContextVar[bool] = contextvars.ContextVar("pooled", default=False)


@contextlib.contextmanager
def programs(*, pooled: bool):
    """Draw configurations from the program pool (`pooled`: the adapter compiles a program per
    configuration and shape) or freely, within the block."""
    token = _POOLED.set(pooled)
    try:
        yield
    finally:
        _POOLED.reset(token)


class Entry(dict):
    """A pool entry's forced labels (a cover's are a plain dict: a cover forces them as they are)."""


POOL = {name: Entry(labels) for name, labels in PROGRAMS.items()}


def _cover_labels(regime: str) -> dict:
    """What a cover forces: its regime's labels, or for a compiled framework (pooled) the configuration
    of its pool entry with the regime's value labels."""
    if not _POOLED.get():
        return COVERS[regime]
    values = {k: v for k, v in COVERS[regime].items() if k in VALUE_LABELS}
    return Entry({**POOL[COVER_PROGRAMS[regime]], **values})


def _fitted(strategy, value):
    """(True, what `strategy` draws for a forced `value`) where that is cheap to tell (sampled_from:
    the value itself; integers: the nearest in range; permutations: a permutation of its values), or
    (False, None) where it cannot draw it."""
    inner = getattr(strategy, "wrapped_strategy", strategy)
    if hasattr(inner, "elements"):
        found = any(value == element and type(value) is type(element) for element in inner.elements)
        return found, value if found else None
    if hasattr(inner, "start") and hasattr(inner, "end"):
        return isinstance(value, int), min(max(value, inner.start), inner.end)
    if hasattr(inner, "values"):  # permutations
        found = sorted(value) == sorted(inner.values)
        return found, value if found else None
    return True, value


_FIRST: dict = {}


def _first(strategy):
    """The simplest value of a primitive strategy (cached by what it draws)."""
    key = _identity(strategy)
    if key not in _FIRST:
        with current_pytest_item.with_value(None):
            _FIRST[key] = find(strategy, _anything, settings=_SIMPLEST)
    return copy.deepcopy(_FIRST[key])


class Cover:
    """The `data` of one covering example: each draw is the strategy's simplest example with the
    regime's labels forced (deterministic and cached, so a cover costs one call of the property)."""

    def __init__(self, regime: str):
        self.regime = regime

    def __repr__(self) -> str:
        return f"Cover({self.regime!r})"

    def draw(self, strategy, label=None):
        with clock.timed("draw"):
            key = f"{self.regime} (pooled)" if _POOLED.get() else self.regime
            return copy.deepcopy(_simplest(strategy, key, _cover_labels(self.regime)))


_SIMPLE: dict = {}


def _anything(_) -> bool:
    """find()'s condition: a named function, not a lambda - hypothesis describes a lambda by parsing its
    source with `ast`, and a Ctrl-C arriving inside that parse surfaces as a SystemError, not an
    interrupt (seen: "AST constructor recursion depth mismatch")."""
    return True


def _identity(strategy):
    """A cache key naming what `strategy` draws: a builder and its arguments (a declaration by identity,
    as adapters are loaded once) - repr() of a strategy with a declaration costs milliseconds."""
    function = getattr(strategy, "function", None)
    if function is None:
        return repr(strategy)
    parts = (*strategy._LazyStrategy__args, *sorted(strategy._LazyStrategy__kwargs.items()))
    plain = (str, int, float, tuple, type(None))
    return (function, tuple(p if isinstance(p, plain) else id(p) for p in parts))


def program_case(name: str, norm: str, declaration, dtype: str) -> Case:
    """The simplest case of pool entry `name` for `norm`: its configuration is what every pooled draw
    of that entry compiles (tests/test_strategies.py holds the pool to the regimes)."""
    with programs(pooled=True):
        return copy.deepcopy(_simplest(case(norm, declaration, dtype), f"program {name}", POOL[name]))


def _simplest(strategy, regime: str, forced: dict):
    """The strategy's first (simplest) example under the `forced` labels (of `regime`), once per
    strategy."""
    key = (_identity(strategy), regime)
    if key not in _SIMPLE:
        token = _FORCED.set(forced)
        try:
            # outside the running pytest item: find() stops by raising, and hypothesis formats that
            # through the item's failure report (pytest parsing source with ast, slow, and a Ctrl-C in
            # that parse surfaced as SystemError instead of an interrupt)
            with current_pytest_item.with_value(None):
                _SIMPLE[key] = find(strategy, _anything, settings=_SIMPLEST)
        finally:
            _FORCED.reset(token)
    return _SIMPLE[key]


def covering(test):
    """Run `test` (a @given(data=st.data()) property) on every regime of COVERS before its random
    draws: the quick profile then reaches each regime in every property, norm and dtype."""
    for regime in reversed(COVERS):
        test = example(data=Cover(regime))(test)
    return test


def composite(builder):
    """st.composite whose labelled draws a covering example or a pool entry can force (COVERS, PROGRAMS).
    `draw(inner, name=...)` names a configuration draw for the pool only: hypothesis sees it unlabelled,
    so naming it leaves the random draws as they were."""

    @st.composite
    @functools.wraps(builder)
    def strategy(draw, *args, **kwargs):
        forced = _FORCED.get() or {}
        pooled = _POOLED.get()

        def drawing(inner, label=None, name=None):
            key = label or name
            if key in forced:
                if not isinstance(forced, Entry):
                    return forced[key]
                fits, value = _fitted(inner, forced[key])
                if fits:
                    return value
            if pooled and key is not None and key not in VALUE_LABELS and key != PROGRAM_LABEL:
                return _first(inner)
            return draw(inner, label=label)

        with clock.timed("draw"):
            return builder(drawing, *args, **kwargs)

    return strategy


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
        x = rng.normal(size=shape)
        if channel_axis is not None and x.size:
            index = [slice(None)] * len(shape)
            index[channel_axis] = 0
            x[tuple(index)] = 1.5
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


# Shapes come from a bounded pool per rank: compiled frameworks (JAX, XLA, TF graphs) compile once per
# shape, so a few hundred distinct shapes would cost minutes of compilation and no coverage. The pool
# still breaks symmetry: N differs from C, odd sizes, a size-1 axis in every position, 1-d to 3-d spatial.
# Index 0 of each rank has every size above 1 and N != C, index 1 a size-1 axis (COVERS rely on it).
SHAPE_POOL = {
    1: ((3,), (1,), (5,)),
    2: ((2, 3), (3, 1), (1, 5)),
    3: ((2, 3, 4), (3, 1, 2), (1, 5, 3)),
    4: ((2, 3, 2, 3), (3, 2, 1, 4), (1, 4, 3, 2)),
    5: ((2, 3, 2, 2, 3), (1, 2, 2, 3, 2), (3, 1, 2, 2, 1)),
}
CHANNELS = st.sampled_from([3, 1, 4, 6])


def shapes(draw, min_rank: int, max_rank: int, channels_at: int | None):
    """A shape of rank in [min_rank, max_rank] from the pool; the channel size (if any) drawn separately."""
    rank = _rank(draw, min_rank, max_rank)
    shape = list(SHAPE_POOL[rank][draw(_integers(0, len(SHAPE_POOL[rank]) - 1), label="shape")])
    if channels_at is not None:
        shape[channels_at % rank] = draw(CHANNELS, label="channels")
    return tuple(shape)


@functools.lru_cache(maxsize=None)
def _permutations(rank: int):
    return st.permutations(range(rank))


def _rank(draw, lowest: int, highest: int) -> int:
    """A rank in [lowest, highest]; a covering example's forced rank is moved into the range."""
    return min(max(draw(_integers(lowest, highest), label="rank"), lowest), highest)


def _lengthened(shape, axes, keep=()) -> tuple:
    """A long reduction (LONG_REDUCTIONS): the last of `axes` made LONG long, the rest of `axes` 1, the
    other axes (channels, batch) at most 2 unless in `keep` - few channels keep it cheap."""
    axes = sorted(axes)
    return tuple(
        LONG if i == axes[-1] else 1 if i in axes else size if i in keep else min(size, 2)
        for i, size in enumerate(shape)
    )


def _channel_axis(draw, declaration, rank):
    fixed = declaration.fixed() if declaration else {}
    if "channel_axis" in fixed:
        return fixed["channel_axis"] % rank
    default = declaration.defaults().get("channel_axis", 1) if declaration else 1
    return draw(_sampled(tuple(sorted({1, rank - 1, default % rank}))), label="channel_axis")


def running_state(draw, channels: int):
    kind = draw(STATE_KINDS, label="state")
    if kind == "initial":
        return RunningStats.initial(channels)
    seed = draw(SEEDS, label="state_seed")
    rng = np.random.default_rng(seed)
    return RunningStats(
        rng.normal(size=channels), rng.uniform(0.2, 3.0, size=channels), draw(_integers(0, 5))
    )  # short (one value per channel): no source to remember


def _affine(draw, rng_seed, shape, label="affine"):
    if not draw(BOOLEANS, label=label):
        return {}
    rng = np.random.default_rng(rng_seed)
    scale, offset = rng.normal(size=shape) + 1.0, rng.normal(size=shape)
    both = f"(lambda r: (r.normal(size={tuple(shape)!r}) + 1.0, r.normal(size={tuple(shape)!r})))"
    both += f"(np.random.default_rng({rng_seed}))"
    # remembered unrounded: case() rounds them to the run's dtype and remembers the rounded ones
    return {"scale": _repro.remember(scale, f"{both}[0]"), "offset": _repro.remember(offset, f"{both}[1]")}


def _pick(draw, declaration, key, strategy, label=None):
    fixed = declaration.fixed() if declaration else {}
    return fixed[key] if key in fixed else draw(strategy, label=label or key)


def _eps_root(eps, dtype: str) -> float:
    """The magnitude per element whose mean square is eps (RMS.D1's default where eps is None; 1e-3
    where an implementation fixes eps at 0 and no statistic can be comparable to it, as Lp's rows)."""
    return math.sqrt(default_eps(dtype) if eps is None else eps or 1e-3)


@composite
def case(draw, norm: str, declaration, dtype: str, kinds: tuple | None = None) -> Case:
    """One example for `norm`, respecting what the adapter's declaration fixes. Every array parameter
    (scale, offset, running statistics, mean, std) is rounded to `dtype`, as the input is, so the
    framework and the reference start from the same numbers."""
    token = _KINDS.set(kinds)  # values drawn only of these kinds (a property that needs them, not a filter)
    entry = None
    if _POOLED.get() and _FORCED.get() is None:  # a random draw for a compiled framework: one pool entry
        entry = _FORCED.set(POOL[draw(_sampled(tuple(POOL)), label=PROGRAM_LABEL)])
    try:
        drawn = draw(_BUILDERS[NORMS[norm].strategy](norm, declaration, dtype))
    finally:
        _KINDS.reset(token)
        if entry is not None:
            _FORCED.reset(entry)
    if declaration is not None and norm in DIVISOR_NORMS:  # a declared divisor convention (BN.P8) is checked
        fixed = declaration.fixed()
        drawn.params.update(
            {
                key: fixed[key]
                for key, canonical in DIVISOR_CONVENTIONS.items()
                if fixed.get(key, canonical) != canonical
            }
        )
    one_plus = declaration is not None and declaration.scale_form == "one_plus"
    for key, value in drawn.params.items():
        if key == "scale" and one_plus and isinstance(value, np.ndarray):
            # the implementation holds weight = scale - 1 in the dtype: that is what rounds (RMS.N3)
            drawn.params[key] = 1.0 + representable(value - 1.0, dtype)
        elif isinstance(value, np.ndarray):
            drawn.params[key] = _remembered(representable(value, dtype), _repro.source_of(value), dtype)
        elif isinstance(value, RunningStats):
            drawn.params[key] = RunningStats(
                representable(value.mean, dtype), representable(value.var, dtype), value.num_batches_tracked
            )
    return drawn


@composite
def _running_norm(draw, norm, declaration, dtype):
    record = NORMS[norm]
    min_rank = 3 if record.statistics == "sample_channel" else 2  # per-sample statistics need a spatial axis
    rank = _rank(draw, min_rank, 5)
    axis = _channel_axis(draw, declaration, rank)
    shape = shapes(draw, rank, rank, axis)
    if draw(LONGS, label="long"):  # the longest spatial axis (the batch when there is none)
        shape = _lengthened(shape, [i for i in range(rank) if i != axis and (rank == 2 or i != 0)])
    params = {"channel_axis": axis, "eps": _pick(draw, declaration, "eps", POSITIVE_EPS)}
    params["running_var"] = _pick(draw, declaration, "running_var", ESTIMATORS)
    params["momentum"] = _pick(draw, declaration, "momentum", MOMENTA)
    params["training"] = draw(BOOLEANS, label="training")
    if declaration is None or declaration.stateful:
        if draw(BOOLEANS, label="tracked"):
            params["state"] = running_state(draw, shape[axis])
    params.update(_affine(draw, draw(AFFINE_SEEDS), (shape[axis],)))
    if "replica_sizes" in record.parameters():
        shape = _replicated(draw, declaration, params, shape)
    n = record.reduction_length(np.empty(shape), params)
    kind, x = _values(draw, shape, dtype, axis, n, _eps_root(params["eps"], dtype))
    return Case(norm, x, params, kind)


def _replicated(draw, declaration, params, shape) -> tuple:
    """SBN.P1/P2: the replicas' batch sizes (all equal to shape[0], or each drawn from 1-3) and the
    pooling rule; the batch axis becomes their sum. The replica count is at most what the adapter's
    run provides (its declared `replicas`)."""
    most = declaration.convention("replicas").value if declaration is not None else 4
    count = draw(_integers(2, most), label="replicas")
    if draw(BOOLEANS, label="equal_batches"):
        sizes = (shape[0],) * count
    else:
        sizes = tuple(
            draw(st.lists(st.integers(1, 3), min_size=count, max_size=count), label="replica_sizes")
        )
    sizes = (tuple(sizes) + (1,) * count)[:count]  # a pool entry's, fitted to the count
    params["replica_sizes"] = sizes
    params["weighting"] = _pick(draw, declaration, "weighting", WEIGHTINGS)
    return (sum(sizes),) + tuple(shape[1:])


def _axes(draw, declaration) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, normalized axes): the axes the declaration fixes, or a drawn set (trailing or any); one
    draw in eight makes the normalized axes LONG values long."""
    fixed_axes = (declaration.fixed() if declaration else {}).get("axes")
    if fixed_axes is not None:  # the implementation normalizes these axes only: draw ranks that have them
        fixed_axes = (fixed_axes,) if isinstance(fixed_axes, int) else tuple(fixed_axes)
        rank = _rank(draw, max(1, *(a + 1 if a >= 0 else -a for a in fixed_axes)), 4)
        shape = shapes(draw, rank, rank, None)
        axes = tuple(sorted(a % rank for a in fixed_axes))
    else:
        rank = _rank(draw, 1, 4)
        shape = shapes(draw, rank, rank, None)
        count = min(draw(_integers(1, rank), label="normalized_axes"), rank)
        trailing = draw(BOOLEANS, label="trailing")
        if trailing:
            axes = tuple(range(rank - count, rank))
        else:
            axes = tuple(sorted(draw(_permutations(rank), name="axes_order")[:count]))
    if draw(LONGS, label="long"):
        shape = _lengthened(shape, axes)
    return shape, axes


@composite
def _axes_norm(draw, norm, declaration, dtype):
    shape, axes = _axes(draw, declaration)
    params = {"axes": axes, "eps": _pick(draw, declaration, "eps", POSITIVE_EPS)}
    affine = _affine(draw, draw(AFFINE_SEEDS), tuple(shape[a] for a in axes))
    params.update({key: value for key, value in affine.items() if key in NORMS[norm].affine})
    n = math.prod(shape[a] for a in axes)
    kind, x = _values(draw, shape, dtype, None, n, _eps_root(params["eps"], dtype))
    return Case(norm, x, params, kind)


@composite
def _lp(draw, norm, declaration, dtype):
    shape, axes = _axes(draw, declaration)
    params = {
        "axes": axes,
        "p": _pick(draw, declaration, "p", POWERS),
        "eps_placement": _pick(
            draw,
            declaration,
            "eps_placement",
            LP_PLACEMENTS,
        ),
        "eps": _pick(draw, declaration, "eps", LP_EPS),
    }
    p, eps, n = params["p"], params["eps"], math.prod(shape[a] for a in axes)
    # the row norm at eps (at eps^(1/p) where eps bounds the sum of |x|^p; 1e-3 without eps)
    at = (eps ** (1 / p) if params["eps_placement"] == "max_power_sum" else eps) if eps else 1e-3
    kind, x = _values(draw, shape, dtype, None, n, at / max(n, 1) ** (1 / p))
    return Case(norm, x, params, kind)


@composite
def _group_norm(draw, norm, declaration, dtype):
    rank = _rank(draw, 2, 5)
    axis = _channel_axis(draw, declaration, rank)
    groups = _pick(draw, declaration, "groups", _integers(1, 4))
    per_group = draw(_integers(1, 2), label="channels_per_group")
    shape = list(shapes(draw, rank, rank, None))
    shape[axis] = groups * per_group
    shape = tuple(shape)
    if draw(LONGS, label="long"):  # the longest spatial axis (the channels of a group when there is none)
        spatial = [i for i in range(1, rank) if i != axis]
        shape = (
            _lengthened(shape, spatial, keep=(axis,))
            if spatial
            else tuple(groups * LONG if i == axis else 2 for i in range(rank))
        )
    params = {
        "groups": groups,
        "channel_axis": axis,
        "eps": _pick(draw, declaration, "eps", POSITIVE_EPS),
        "assignment": _pick(draw, declaration, "assignment", ASSIGNMENTS),
    }
    params.update(_affine(draw, draw(AFFINE_SEEDS), (shape[axis],)))
    n = math.prod(shape) // (shape[0] * groups)
    kind, x = _values(draw, shape, dtype, axis, n, _eps_root(params["eps"], dtype))
    return Case("group_norm", x, params, kind)


@composite
def _lrn(draw, norm, declaration, dtype):
    rank = _rank(draw, 3, 4)
    axis = _channel_axis(draw, declaration, rank)
    shape = shapes(draw, rank, rank, axis)
    long = draw(LONGS, label="long")  # a window of LONG + 1 channels, as many as there are
    size = _pick(draw, declaration, "size", st.integers(1, 6) if not long else st.just(LONG + 1))
    if long:
        shape = tuple(size if i == axis else 1 for i in range(rank))
    params = {
        "size": size,
        "channel_axis": axis,
        "alpha": _pick(draw, declaration, "alpha", st.sampled_from([1e-4, 0.1, 1.0, 2.0])),
        "beta": _pick(draw, declaration, "beta", st.sampled_from([0.5, 0.75, 1.0])),
        "k": _pick(draw, declaration, "k", st.sampled_from([1.0, 2.0, 0.5])),
        "alpha_over_size": _pick(draw, declaration, "alpha_over_size", st.booleans()),
        "extra": _pick(draw, declaration, "extra", st.sampled_from(["before", "after"])),
    }
    # the window term alpha' * sum(x^2) at k: each square near k / (alpha' * size)
    alpha = params["alpha"] / (size if params["alpha_over_size"] else 1)
    kind, x = _values(draw, shape, dtype, axis, size, math.sqrt(params["k"] / (alpha * size)))
    return Case("local_response_norm", x, params, kind)


@composite
def _channel_normalize(draw, norm, declaration, dtype):
    rank = _rank(draw, 3, 4)
    default_axis = declaration.defaults().get("channel_axis", -3) if declaration else -3
    axis = default_axis % rank
    shape = shapes(draw, rank, rank, axis)
    # values, unless the call compiles them into its program (NormDeclaration.constants): configuration
    compiled = declaration is not None and "mean" in declaration.constants
    seed = draw(AFFINE_SEEDS, name="constants_seed" if compiled else None)
    rng = np.random.default_rng(seed)
    params = {
        "channel_axis": axis,
        "mean": rng.normal(size=shape[axis]),
        "std": rng.uniform(0.05, 2.0, size=shape[axis]),
        "std_floor": _pick(draw, declaration, "std_floor", st.sampled_from([0.0, 1e-7])),
    }
    kind, x = _values(draw, shape, dtype, axis, 1)
    return Case("channel_normalize", x, params, kind)


# a norm record's `strategy` -> the builder that draws its cases: (draw, norm, declaration, dtype) -> Case
_BUILDERS = {
    "running": _running_norm,
    "axes": _axes_norm,
    "lp": _lp,
    "groups": _group_norm,
    "window": _lrn,
    "channel_map": _channel_normalize,
}

__all__ = ["COVERS", "Case", "Cover", "case", "covering", "representable", "default_eps"]
