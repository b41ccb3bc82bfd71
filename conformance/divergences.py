"""Known divergences, as data: which adapter differs from the spec where, by which clause, and why.

An entry explains a failing comparison only for the examples its `applies` predicate accepts; the
suite then records an expected divergence (with the reason, which the report shows) instead of a
finding. Each entry carries a minimal `example` that must still diverge: a meta-test runs it, so an
entry that no longer matches anything is flagged rather than silently hiding a fixed framework.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .strategies import Case


@dataclass(frozen=True)
class Divergence:
    adapters: str  # fnmatch pattern over adapter names
    norm: str
    clause: str  # the spec's D clause describing it
    reason: str
    applies: Callable[[Case, str], bool]  # (case, dtype) -> does this entry explain a failure there?
    example: Callable[[], tuple[Case, str]]  # a minimal (case, dtype) that shows the divergence

    def matches(self, adapter: str, norm: str, case: Case, dtype: str) -> bool:
        return fnmatch.fnmatchcase(adapter, self.adapters) and norm == self.norm and self.applies(case, dtype)


def _offset_rows(shape=(2, 64), offset=1e4, seed=0) -> np.ndarray:
    return offset + np.random.default_rng(seed).normal(size=shape)


KNOWN: list[Divergence] = []


def explaining(adapter: str, norm: str, case: Case, dtype: str) -> Divergence | None:
    for entry in KNOWN:
        if entry.matches(adapter, norm, case, dtype):
            return entry
    return None


def _values_per_statistic(case: Case) -> int:
    from .checks import reduction_length

    return reduction_length(case.norm, case.x, case.params)


def _batch_stats(case: Case) -> bool:
    return case.params.get("training", True) or case.params.get("state") is None


def _torch_group_check(case: Case) -> bool:
    x, groups = case.x, case.params["groups"]
    spatial = int(np.prod([s for i, s in enumerate(x.shape) if i not in (0, case.params.get("channel_axis", 1) % x.ndim)]))
    return x.shape[0] * (x.shape[case.params.get("channel_axis", 1) % x.ndim] // groups) * spatial == 1


KNOWN += [
    Divergence(
        "torch.*", "batch_norm", "BN.D6",
        "PyTorch raises 'Expected more than 1 value per channel when training' for one value per channel",
        lambda case, dtype: _batch_stats(case) and _values_per_statistic(case) == 1,
        lambda: (Case("batch_norm", np.array([[0.5, -1.0]]), {"training": True}, "standard"), "float64"),
    ),
    Divergence(
        "torch.*", "instance_norm", "IN.D3",
        "PyTorch raises 'Expected more than 1 spatial element when training' for one spatial value",
        lambda case, dtype: _batch_stats(case) and _values_per_statistic(case) == 1,
        lambda: (Case("instance_norm", np.array([[[0.5], [-1.0]]]), {"training": True}, "standard"), "float64"),
    ),
    Divergence(
        "torch.*", "group_norm", "GN.D5",
        "PyTorch's F.group_norm raises 'Expected more than 1 value per channel' when N*(C/G)*spatial == 1",
        lambda case, dtype: _torch_group_check(case),
        lambda: (Case("group_norm", np.array([[0.5, -1.0]]), {"groups": 2}, "standard"), "float64"),
    ),
]
