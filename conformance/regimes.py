"""The regimes the draws must reach: the covering examples (COVERS) every property runs first, and the
program pool (PROGRAMS) that compiled frameworks draw their configurations from (see strategies.py)."""

from __future__ import annotations

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


class Entry(dict):
    """A pool entry's forced labels (a cover's are a plain dict: a cover forces them as they are)."""


POOL = {name: Entry(labels) for name, labels in PROGRAMS.items()}
