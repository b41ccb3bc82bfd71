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

import copy

import numpy as np

from normconf.adapters import _repro
from normconf.adapters.base import DIVISOR_CONVENTIONS, DIVISOR_NORMS
from normconf.reference import NORMS, RunningStats
from normconf.vocabulary.case import Case

from .case_builders import _BUILDERS, SHAPE_POOL
from .forcing import _FORCED, _KINDS, _POOLED, Cover, _simplest, composite, covering, programs
from .regimes import COVERS, POOL, PROGRAM_LABEL
from .value_draws import _remembered, _sampled, cotangent, derived, representable, values


def program_case(name: str, norm: str, declaration, dtype: str) -> Case:
    """The simplest case of pool entry `name` for `norm`: its configuration is what every pooled draw
    of that entry compiles (tests/test_strategies.py holds the pool to the regimes)."""
    with programs(pooled=True):
        return copy.deepcopy(_simplest(case(norm, declaration, dtype), f"program {name}", POOL[name]))


@composite
def case(draw, norm: str, declaration, dtype: str, kinds: tuple | None = None) -> Case:
    """One example for `norm`, respecting what the adapter's declaration fixes. Every array parameter
    (scale, offset, running statistics, mean, std) is rounded to the dtype the adapter holds it in -
    `dtype`, as the input is, or float32 under a mixed policy (MP.S1) - so the framework and the
    reference start from the same numbers."""
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
    held = declaration.parameter_dtype(dtype) if declaration is not None else dtype  # float32: MP.S1
    for key, value in drawn.params.items():
        if key == "scale" and one_plus and isinstance(value, np.ndarray):
            # the implementation holds weight = scale - 1 in the dtype: that is what rounds (RMS.N3)
            drawn.params[key] = 1.0 + representable(value - 1.0, held)
        elif isinstance(value, np.ndarray):
            drawn.params[key] = _remembered(representable(value, held), _repro.source_of(value), held)
        elif isinstance(value, RunningStats):
            drawn.params[key] = RunningStats(
                representable(value.mean, held), representable(value.var, held), value.num_batches_tracked
            )
    return drawn


__all__ = [
    "COVERS",
    "SHAPE_POOL",
    "Case",
    "Cover",
    "case",
    "cotangent",
    "covering",
    "derived",
    "program_case",
    "programs",
    "representable",
    "values",
]
