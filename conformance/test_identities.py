"""Metamorphic identities: each compares the framework with itself, so they hold whatever the
reference says. Budget: the sum of the two outputs' NUM.N5/N6 budgets against the exact answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from normconf import adapters
from normconf.reference import NORMS
from normconf.vocabulary.case import Case
from normconf.vocabulary.models import Observation

from . import checks, strategies
from .harness import reference_or_reject, run_or_reject


def _holding(identity: str) -> tuple[str, ...]:
    """The norms for which `identity` holds (their records say so)."""
    return tuple(name for name, norm in NORMS.items() if identity in norm.identities)


# each identity follows from a norm's forward definition (S1) or, for scale invariance, from the
# numerics clause that states it (N1)
SCALABLE = ("standard", "integers", "positive")  # value kinds whose 4x stays far from eps and overflow
PER_SAMPLE, PERMUTABLE = _holding("independent_samples"), _holding("batch_permutation")
SHIFT_INVARIANT, SCALE_INVARIANT = _holding("shift"), _holding("scale")


def _forward(norm: str) -> str:
    return NORMS[norm].clauses.forward


def _over_batch_axis(target, case) -> bool:
    """Axis 0 is not a batch: a norm over chosen axes that include it (the batch is one statistic), or
    channels on axis 0 (a CHW image: its per-channel parameters run along it)."""
    if NORMS[target.norm].statistics == "axes":
        return 0 in [a % case.x.ndim for a in case.params.get("axes", ())]
    axis = case.params.get("channel_axis")
    return axis is not None and axis % case.x.ndim == 0


def _budget(target, case):
    """NUM.N5/N6 for this adapter's implementation of case.norm (its own declared accumulation)."""
    declaration = adapters.get(target.adapter).declarations[case.norm]
    expected = reference_or_reject(case)
    y_ref = getattr(expected, "y", expected)
    return checks.budget(case.norm, case.x, case.params, y_ref, **declaration.budget_dtypes(target.dtype))[0]


def _compare(cell, target, declaration, clause, what, case_a, y_a, case_b, y_b, runs):
    """y_b against y_a under both sides' budgets. `runs`: the two calls as made, ((case, y), (case, y)):
    a divergence explains the broken identity only if its model gives both calls' answers."""
    bound = _budget(target, case_a) + _budget(target, case_b)
    observed = tuple(Observation(c, "y", y, _budget(target, c)) for c, y in runs)
    # settle on the transformed case: divergences that depend on the input (conditioning) see it
    cell.check(
        clause=clause,
        what=what,
        actual=y_b,
        expected=y_a,
        budget=(bound, "NUM.N5"),
        case=case_b,
        also=(case_a,),
        observed=observed,
    )


def _draw(target, data, kinds=None):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    case = data.draw(strategies.case(target.norm, declaration, target.dtype, kinds), label="case")
    case.params.pop("state", None)  # identities are about the statistics of the input itself
    case.params["training"] = True if NORMS[target.norm].stateful else case.params.get("training")
    case.params = {k: v for k, v in case.params.items() if v is not None}
    return declaration, case


@pytest.mark.targets(norms=PER_SAMPLE)
@pytest.mark.clause(*map(_forward, PER_SAMPLE))
@strategies.covering
@given(data=st.data())
def test_samples_are_independent(target, cell, data):
    """Changing every other sample of the batch leaves sample 0's output as it was."""
    declaration, case = _draw(target, data)
    if case.x.shape[0] < 2 or _over_batch_axis(target, case):
        reject()
    other = case.x.copy()
    other[1:] = strategies.representable(np.flip(other[1:], axis=-1) * 1.5 + 0.25, target.dtype)
    moved = Case(case.norm, other, case.params, case.kind)
    reference_or_reject(moved)
    clause = _forward(target.norm)
    y_a = run_or_reject(cell, case, clause).y
    y_b = run_or_reject(cell, moved, clause).y
    _compare(
        cell,
        target,
        declaration,
        clause,
        "sample 0 after changing the others",
        Case(case.norm, case.x[:1], case.params, case.kind),
        y_a[:1],
        Case(case.norm, other[:1], case.params, case.kind),
        y_b[:1],
        ((case, y_a), (moved, y_b)),
    )


@pytest.mark.targets(norms=PERMUTABLE)
@pytest.mark.clause(*map(_forward, PERMUTABLE))
@strategies.covering
@given(data=st.data())
def test_batch_permutation_permutes_the_output(target, cell, data):
    declaration, case = _draw(target, data)
    if case.x.shape[0] < 2:
        reject()
    order = np.roll(np.arange(case.x.shape[0]), 1)
    permuted = Case(case.norm, case.x[order], case.params, case.kind)
    if _over_batch_axis(target, case):
        reject()
    reference_or_reject(permuted)
    clause = _forward(target.norm)
    y_a = run_or_reject(cell, case, clause).y
    y_b = run_or_reject(cell, permuted, clause).y
    runs = ((case, y_a), (permuted, y_b))
    _compare(cell, target, declaration, clause, "permuted batch", case, y_a[order], permuted, y_b, runs)


@pytest.mark.targets(norms=SHIFT_INVARIANT)
@pytest.mark.clause(*map(_forward, SHIFT_INVARIANT), "NUM.N5")
@strategies.covering
@given(data=st.data())
def test_shift_invariance(target, cell, data):
    """Adding a constant leaves a standardizing norm's output unchanged (up to the larger conditioning)."""
    declaration, case = _draw(target, data)
    shift = data.draw(st.sampled_from([3.0, -10.0, 0.5]), label="shift")
    shifted_x = strategies.representable(case.x + shift, target.dtype)
    if not np.array_equal(shifted_x - shift, case.x):
        reject()  # the shift must be exact in the dtype, or it is not the same input shifted
    shifted = Case(case.norm, strategies.derived(shifted_x, case.x, f"+ {shift!r}"), case.params, case.kind)
    reference_or_reject(shifted)
    clause = _forward(target.norm)
    y_a = run_or_reject(cell, case, clause).y
    y_b = run_or_reject(cell, shifted, clause).y
    runs = ((case, y_a), (shifted, y_b))
    _compare(cell, target, declaration, clause, f"x + {shift}", case, y_a, shifted, y_b, runs)


@pytest.mark.targets(norms=SCALE_INVARIANT)
@pytest.mark.clause(*(NORMS[n].clauses.scale_invariance for n in SCALE_INVARIANT))
@strategies.covering
@given(data=st.data())
def test_positive_scale_invariance_away_from_eps(target, cell, data):
    """x -> 4x leaves the output unchanged with eps = 0 (any eps > 0 breaks the identity by ~eps/var)."""
    declaration, case = _draw(target, data, kinds=SCALABLE)
    case.params["eps"] = 0.0
    if not np.all(np.isfinite(case.x)):
        reject()
    # exact in binary floating point
    scaled = Case(case.norm, strategies.derived(case.x * 4.0, case.x, "* 4.0"), case.params, case.kind)
    reference_or_reject(case)
    clause = NORMS[target.norm].clauses.scale_invariance
    y_a = run_or_reject(cell, case, clause).y
    y_b = run_or_reject(cell, scaled, clause).y
    _compare(cell, target, declaration, clause, "4 x", case, y_a, scaled, y_b, ((case, y_a), (scaled, y_b)))


@pytest.mark.targets(norms=("group_norm",))
@pytest.mark.clause("GN.S3")
@strategies.covering
@given(data=st.data())
def test_group_norm_limits(target, cell, data):
    """GroupNorm with G = C equals the same framework's InstanceNorm, and with G = 1 its LayerNorm over
    all non-batch axes (channels-first; no affine)."""
    adapter = adapters.get(target.adapter)
    declaration, case = _draw(target, data)
    case.params.pop("scale", None), case.params.pop("offset", None)
    axis, eps = case.params["channel_axis"], case.params["eps"]
    if case.x.ndim < 3:
        reject()
    limit = data.draw(st.sampled_from(["instance_norm", "layer_norm"]), label="limit")
    if limit not in adapter.declarations or target.dtype not in adapter.declarations[limit].dtypes:
        reject()
    if limit == "instance_norm":
        grouped = Case("group_norm", case.x, {**case.params, "groups": case.x.shape[axis]}, case.kind)
        other = Case("instance_norm", case.x, {"channel_axis": axis, "eps": eps}, case.kind)
    else:
        grouped = Case("group_norm", case.x, {**case.params, "groups": 1}, case.kind)
        other = Case("layer_norm", case.x, {"axes": tuple(range(1, case.x.ndim)), "eps": eps}, case.kind)
    reference_or_reject(grouped), reference_or_reject(other)
    y_gn = run_or_reject(cell, grouped, "GN.S3").y
    y_other = run_or_reject(cell, other, "GN.S3").y
    runs = ((grouped, y_gn), (other, y_other))
    _compare(cell, target, declaration, "GN.S3", f"GroupNorm vs {limit}", grouped, y_gn, other, y_other, runs)
