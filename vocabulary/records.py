"""The known-divergence record: which adapter differs from the spec where, by which clause, and what it
computes instead (its model). Each framework family keeps its entries in `adapters/<family>/known.py`;
the suite gathers them through the adapters' registry (conformance/divergences.py)."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import levels
from .case import Case
from .cpu import CpuDependency
from .models import (
    Judged,
    Model,
)


@dataclass(frozen=True, kw_only=True)
class Divergence:
    adapters: str  # fnmatch pattern over adapter names
    norm: str
    clause: str  # the spec's D clause describing it
    reason: str
    applies: Callable[[Case, str], bool]  # (case, dtype) -> does this entry explain a failure there?
    example: Callable[[], tuple[Case, str]]  # a minimal (case, dtype) that shows the divergence
    shows_in: str = "forward"  # where the example diverges: "forward" output, "gradient", or running "state"
    non_finite: bool = False  # explains how NaN / ±inf inputs come out (NUM.N9): judged on the input as run
    # occurs only on CPUs where this holds (NUM.N10); elsewhere the adapter conforms
    cpu: CpuDependency | None = None
    # what the framework computes instead (models.py): a failure is this divergence only if it agrees
    model: Model | None = None
    # the masking meta-test's perturbations (by name) this divergence's own uncertainty covers, each with
    # the measured reason: below that size no comparison can tell a bug from the divergence
    indistinguishable: dict = field(default_factory=dict)
    # the releases of the adapter's framework it occurs in (a PEP 440 specifier set, "<1.27"; "" = every
    # one): outside them the adapter must conform (`normconf run --versions` measures other releases)
    releases: str = ""
    # a framework bug, not a convention (spec NUM.L6): what is wrong, as an upstream report would state it,
    # and where it stands upstream; the report and the matrix mark it, `normconf bugs` prints its repro
    bug: str = ""

    @property
    def level(self) -> str:
        """The conformance level it is counted at (NUM.L5): range for NUM.D1, else its model's kind."""
        return levels.of_divergence(self)

    @property
    def severity(self) -> str:
        """The report's kind of divergence: "semantic", "precision" or "special" (models.KINDS)."""
        return self.model.kind if self.model is not None else "precision"

    def judge(self, observations, dtype: str) -> Judged:
        """Whether the framework's answers are what this divergence says it computes."""
        if self.model is None:
            return Judged(False, math.inf, "this entry has no model")
        return self.model.judge(observations, dtype)

    def example_as_run(self) -> tuple[Case, str]:
        """The entry's example as its meta-test runs it: with a cotangent (0.3 everywhere, unless the
        example has its own) where it shows in the gradient."""
        case, dtype = self.example()
        g = case.cotangent
        if g is None and self.shows_in == "gradient":
            g = np.full_like(case.x, 0.3)
        return Case(case.norm, case.x, case.params, case.kind, cotangent=g), dtype

    def holds_here(self) -> bool:
        """Whether this divergence occurs on this CPU under the ISA caps in force (always, without a
        `cpu`)."""
        return self.cpu is None or self.cpu.holds()

    def holds_in_release(self, adapter: str) -> bool:
        """Whether this divergence occurs in the release of `adapter`'s framework being measured (always,
        without `releases`, or where the release is unknown)."""
        if not self.releases:
            return True
        from packaging.specifiers import SpecifierSet

        from normconf.envs import release_of

        release = release_of(adapter)
        return release is None or SpecifierSet(self.releases).contains(release, prereleases=True)

    def names_directly(self, adapter: str) -> bool:
        """Whether this entry's adapter pattern itself names `adapter` (`*` is the only wildcard: names
        hold `[`): the adapters it claims to diverge in, which the meta-test holds it to."""
        return adapter == self.adapters or (
            "*" in self.adapters and fnmatch.fnmatchcase(adapter, self.adapters)
        )

    def names(self, adapter: str) -> bool:
        """Whether this entry is a candidate for `adapter`: named directly, or a policy adapter's
        ("torch.nn@mixed", MP.P1) plain sibling is - it runs the sibling's calls under the policy, so the
        sibling's entries may explain it too, each still only where its model agrees."""
        return self.names_directly(adapter) or self.names_directly(adapter.partition("@")[0])

    def matches(self, adapter: str, norm: str, case: Case, dtype: str) -> bool:
        return (
            self.names(adapter)
            and norm in INHERITS.get(self.norm, (self.norm,))
            and self.holds_here()
            and self.holds_in_release(adapter)
            and self.applies(case, dtype)
        )


# A synchronized BatchNorm is its framework's BatchNorm with pooled statistics (spec/sync_batch_norm.md):
# what that BatchNorm does differently, its synchronized form does too.
INHERITS = {"batch_norm": ("batch_norm", "sync_batch_norm")}
