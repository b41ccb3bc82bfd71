"""Meta-test: a known divergence masks nothing. Each installed adapter with known divergences has its
answers perturbed the way a real bug would - the output scaled by 1 + 1e-2, the running variance off
by 5 %, eval run with eps x 10, the input gradient scaled by 1.1 - on each entry's own minimal example
and on a few drawn cases where the entry holds; wherever the perturbation moves a finite answer by more
than its budget and the perturbed answer fails its comparison, no entry's model may agree with it: it
is a finding, never an expected divergence. An entry may declare a perturbation indistinguishable
(`Divergence.indistinguishable`, with the measured reason) where its own arithmetic is less certain
than the perturbation (float16 subnormals).

(The settle logic before the models accepted any failure inside an entry's territory, so every
perturbation here was an expected divergence then.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from normconf import adapters
from normconf.adapters.base import Outcome
from normconf.reference import Grads, RunningStats
from normconf.vocabulary import budgets
from normconf.vocabulary.case import Case
from normconf.vocabulary.models import Observation, own_rounding, param

from .. import checks, divergences, strategies
from ..divergences import KNOWN
from ..harness import reference_or_reject

DRAWN = 3  # drawn cases per entry and adapter, beyond its own example


def scaled_output(outcome, case, dtype, adapter):
    return replace(outcome, y=outcome.y * (1 + 1e-2))


def shifted_running_variance(outcome, case, dtype, adapter):
    if outcome.state is None:
        return None
    state = outcome.state
    return replace(outcome, state=RunningStats(state.mean, state.var * 1.05, state.num_batches_tracked))


def eval_eps_ten_times(outcome, case, dtype, adapter):
    if case.params.get("state") is None or case.params.get("training", True):
        return None
    eps = param(case, "eps")
    return adapter.run(case.norm, case.x, {**case.params, "eps": 10 * eps}, dtype=dtype, cotangent=None)


def scaled_gradient(outcome, case, dtype, adapter):
    if outcome.grads is None:
        return None
    g = outcome.grads
    scale = lambda a: None if a is None else a * 1.1  # noqa: E731
    return replace(outcome, grads=Grads(scale(g.x), scale(g.scale), scale(g.offset)))


PERTURBATIONS = {
    "forward": (scaled_output, eval_eps_ten_times),
    "state": (shifted_running_variance,),
    "gradient": (scaled_gradient,),
}


def _observations(name, norm, case, dtype, outcome: Outcome, gradient: bool, every: bool = False):
    """The answers as the properties compare them: (failed verdicts, observations of the failed ones,
    or of every comparison with `every`)."""
    declaration = adapters.get(name).declarations[norm]
    verdicts = []
    if gradient:
        want = reference_or_reject(case, vjp_of=case.cotangent).x
        bound = checks.gradient_budget(
            norm,
            case.x,
            case.params,
            case.cotangent,
            {"x": want},
            **declaration.gradient_budget_dtypes(dtype),
        )["x"]
        verdicts.append(
            checks.check("", name, norm, dtype, "dx", outcome.grads.x, want, (bound, "NUM.N8"), {})
        )
    else:
        expected = reference_or_reject(case)
        want = getattr(expected, "y", expected)
        bound = checks.budget(norm, case.x, case.params, want, **declaration.budget_dtypes(dtype))
        verdicts.append(checks.check("", name, norm, dtype, "y", outcome.y, want, bound, {}))
        if outcome.state is not None and getattr(expected, "state", None) is not None:
            dtypes = declaration.state_budget_dtypes(dtype)
            bounds = budgets.state_budget(
                norm, case.x, case.params, expected.state, case.params["state"], **dtypes
            )
            for what, state_bound in bounds.items():
                actual, ref, held = (
                    getattr(outcome.state, what),
                    getattr(expected.state, what),
                    dtypes["out_dtype"],
                )
                verdicts.append(
                    checks.check("", name, norm, held, f"state.{what}", actual, ref, state_bound, {})
                )
    failed = [v for v in verdicts if not v.passed]
    shown = verdicts if every else failed
    return failed, tuple(Observation(case, _quantity(v.what), v.actual, v.bound) for v in shown)


def _quantity(what: str) -> str:
    return {"dx": "x", "state.mean": "mean", "state.var": "var"}.get(what, "y")


def _detectable(name, norm, case, dtype, outcome, perturbed, gradient) -> bool:
    """Whether the perturbation moved some finite answer by more than its comparison's budget plus the
    widest uncertainty a candidate divergence's model declares there (a perturbation of NaNs, or one
    the divergence's own arithmetic could produce, is no bug anyone could tell apart)."""
    _, before = _observations(name, norm, case, dtype, outcome, gradient, every=True)
    _, after = _observations(name, norm, case, dtype, perturbed, gradient, every=True)
    entries = divergences.candidates(name, norm, case, dtype, gradient=gradient)
    for a, b in zip(before, after, strict=True):
        x, y = np.asarray(a.actual, dtype=np.float64), np.asarray(b.actual, dtype=np.float64)
        width = own_rounding(y, dtype)  # what any model is allowed beyond the budget
        for entry in entries:
            try:
                width = np.maximum(width, np.asarray(entry.model.width(a, dtype), dtype=np.float64))
            except (ValueError, TypeError):  # the model is not defined on this case: it explains nothing
                continue
        with np.errstate(all="ignore"):
            moved = np.isfinite(x) & np.isfinite(y) & (np.abs(y - x) > np.asarray(a.bound) + width)
        if np.any(moved):
            return True
    return False


def _masked(name, norm, case, dtype, outcome, perturbed, gradient) -> list[str]:
    """The entries whose models accept the perturbed answer where it fails its comparison."""
    if not _detectable(name, norm, case, dtype, outcome, perturbed, gradient):
        return []
    failed, observations = _observations(name, norm, case, dtype, perturbed, gradient)
    if not failed:
        return []
    return [
        f"[{entry.clause}] {entry.reason}"
        for entry in divergences.candidates(name, norm, case, dtype, gradient=gradient)
        if entry.judge(observations, dtype).agrees
    ]


def _assert_each_perturbation_is_a_finding(entry, name, adapter, case, dtype, outcome, gradient) -> None:
    for perturb in PERTURBATIONS[entry.shows_in]:
        perturbed = perturb(outcome, case, dtype, adapter)
        if perturbed is None or perturb.__name__ in entry.indistinguishable:
            continue
        masked = _masked(name, entry.norm, case, dtype, outcome, perturbed, gradient)
        assert not masked, f"{perturb.__name__} on {name} is excused as {masked}: {case.describe()}"


def _targets():
    for entry in KNOWN:
        for name in adapters.names():
            if not entry.names(name) or not entry.holds_here():
                continue
            adapter = adapters.get(name)
            runs = adapter.available()[0] and entry.norm in adapter.declarations
            if runs and not adapter.cannot_run(entry.norm):  # this machine can run the norm
                yield pytest.param(entry, name, id=f"{entry.clause}-{name}-{entry.norm}-{entry.shows_in}")


TARGETS = list(_targets())


def _outcome(adapter, case, dtype, gradient):
    try:
        return adapter.run(
            case.norm, case.x, case.params, dtype=dtype, cotangent=case.cotangent if gradient else None
        )
    except Exception:  # an entry that raises has no answer to perturb
        return None


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("entry, name", TARGETS)
def test_a_perturbed_answer_on_the_entrys_example_is_a_finding(entry, name):
    case, dtype = entry.example()
    gradient = entry.shows_in == "gradient"
    if gradient and case.cotangent is None:
        case = Case(case.norm, case.x, case.params, case.kind, cotangent=np.full_like(case.x, 0.3))
    adapter = adapters.get(name)
    outcome = _outcome(adapter, case, dtype, gradient)
    if outcome is None:
        pytest.skip("the framework raises on the example: no answer to perturb")
    _assert_each_perturbation_is_a_finding(entry, name, adapter, case, dtype, outcome, gradient)


@pytest.mark.clause("NUM.N7")
@pytest.mark.parametrize("entry, name", TARGETS)
def test_a_perturbed_answer_on_drawn_cases_is_a_finding(entry, name):
    """A few cases drawn for the entry's cell (its adapter, norm and example's dtype) where it holds."""
    _, dtype = entry.example()
    adapter = adapters.get(name)
    declaration = adapter.declarations[entry.norm]
    if dtype not in declaration.dtypes:
        pytest.skip(f"{name} has no {dtype} {entry.norm}")
    gradient = entry.shows_in == "gradient"

    @settings(max_examples=DRAWN, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def draws(data):
        case = data.draw(strategies.case(entry.norm, declaration, dtype), label="case")
        if gradient:
            g = np.random.default_rng(0).normal(size=case.x.shape)
            case = Case(case.norm, case.x, case.params, case.kind, cotangent=g)
        assume(entry.applies(case, dtype))
        outcome = _outcome(adapter, case, dtype, gradient)
        assume(outcome is not None)
        _assert_each_perturbation_is_a_finding(entry, name, adapter, case, dtype, outcome, gradient)

    try:
        draws()
    except Unsatisfiable:
        pytest.skip(f"no drawn {dtype} case falls where {entry.clause} holds")
