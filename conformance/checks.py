"""Comparing one framework outcome with the reference under the tolerance model (spec/numerics.md).

A check returns a Verdict: the worst element's error against its budget, the budget's basis, and
everything a report or a failure message needs (clause, adapter, dtype, the example, a repro).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normconf import adapters
from normconf.vocabulary import budgets
from normconf.vocabulary import tolerances as T

from . import clock

# the budgets, timed as the suite's "budget" phase (conformance/clock.py)
budget = clock.phase("budget")(budgets.budget)
gradient_budget = clock.phase("budget")(budgets.gradient_budget)


@dataclass
class Verdict:
    """One comparison: passed or not, and the numbers behind it (NUM.N7)."""

    clause: str
    adapter: str
    norm: str
    dtype: str
    what: str  # "y", "state.var", "dx", ...
    comparison: T.Comparison
    basis: str  # "NUM.N5" or "NUM.N6"
    example: dict = field(default_factory=dict)
    hint: str = ""  # on a failure: the convention that would explain it (diagnosis.py)
    # the arrays compared and the elementwise budget (a known divergence's model judges them; not written)
    actual: Any = field(default=None, repr=False, compare=False)
    bound: Any = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def message(self) -> str:
        c = self.comparison
        if not c.index and math.isinf(c.worst_error):  # no answer to compare: it raised, crashed or hung
            return f"[{self.clause}] {self.adapter} {self.norm} {self.dtype} {self.what} ({self.basis})"
        return (
            f"[{self.clause}] {self.adapter} {self.norm} {self.dtype} {self.what}: "
            f"worst error {c.worst_error:.3e} "
            f"at {c.index} vs budget {c.budget:.3e} ({self.basis}; {c.ratio:.3g}x budget, {c.ulps:.1f} ulps)"
            + _budget_words(c, self.dtype)
            + (f"; {self.hint}" if self.hint else "")
        )


ABSURD = 1e6  # a budget this many times the reference value (and above 1) bounds nothing there


def _budget_words(c: T.Comparison, dtype: str) -> str:
    """What a budget that is itself non-finite or far beyond the reference value means, in words."""
    if not math.isfinite(c.budget):
        return f"; the budget is not finite there: an intermediate it is computed from leaves {dtype}'s range"
    if math.isfinite(c.expected) and c.budget > 1.0 and c.budget > ABSURD * abs(c.expected):
        return (
            f"; the budget dwarfs the reference value {c.expected:.3g}: an intermediate it is computed from "
            f"(a running state, a statistic) is near the edge of {dtype}'s range, so it bounds nothing here"
        )
    return ""


def _ulps_dtype(adapter: str, norm: str, dtype: str) -> str:
    """The dtype a result's ulps are counted in: the declared statistics dtype where narrower than the
    input's (float64 computed in float32 is off by float32 ulps, not by billions of float64 ones)."""
    acc = adapters.accumulation(adapter, norm, dtype)
    return acc if acc in T.NARROWER.get(dtype, ()) else dtype


@clock.phase("judge")
def check(
    clause: str,
    adapter: str,
    norm: str,
    dtype: str,
    what: str,
    actual,
    expected,
    budget_and_basis,
    example: dict,
    diagnose=None,
) -> Verdict:
    """The comparison as a Verdict; on a failure, `diagnose(actual, bound)` may name what explains it."""
    bound, basis = budget_and_basis
    comparison = T.compare(actual, expected, bound, dtype, _ulps_dtype(adapter, norm, dtype))
    if np.shape(actual) != np.shape(expected):  # a protocol violation: say so, there is no element to show
        what = f"{what} has shape {tuple(np.shape(actual))}, not {tuple(np.shape(expected))}"
    verdict = Verdict(
        clause, adapter, norm, dtype, what, comparison, basis, example, actual=actual, bound=bound
    )
    if not comparison.passed and diagnose is not None:
        verdict.hint = diagnose(actual, bound)
    return verdict
