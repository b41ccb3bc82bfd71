"""The per-norm case builders (a norm record's `strategy` names one, _BUILDERS) and the shape, axis,
state and affine draws they share, shapes from a bounded pool per rank (SHAPE_POOL)."""

from __future__ import annotations

import functools
import math

import numpy as np
from hypothesis import strategies as st

from normconf.adapters import _repro
from normconf.reference import NORMS, RunningStats
from normconf.reference.rms_norm import default_eps
from normconf.vocabulary.case import Case

from .forcing import composite
from .value_draws import (
    AFFINE_SEEDS,
    ASSIGNMENTS,
    BOOLEANS,
    ESTIMATORS,
    LONG,
    LONGS,
    LP_EPS,
    LP_PLACEMENTS,
    MOMENTA,
    POSITIVE_EPS,
    POWERS,
    SEEDS,
    STATE_KINDS,
    WEIGHTINGS,
    _integers,
    _sampled,
    _values,
)

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
