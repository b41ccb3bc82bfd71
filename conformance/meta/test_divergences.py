"""Meta-test: every known divergence still diverges on its own minimal example, in every installed
adapter its pattern names, and the framework's answer there is what the entry's model says it computes
- an entry that no longer matches anything, or whose model is wrong, is flagged, not kept. An entry
that depends on the CPU (NUM.N10) is checked where its dependency holds; where it does not (this CPU,
these ISA caps), the adapter must conform on the same example."""

from __future__ import annotations

import pytest

from normconf import adapters
from normconf.envs import release_of
from normconf.vocabulary import budgets
from normconf.vocabulary.models import KINDS, Observation, quantity

from .. import checks
from ..divergences import KNOWN, observable_in
from ..harness import reference_or_reject


def observe(name, entry, perturb=None):
    """The adapter on the entry's own example: (diverges, detail, observations for its model). The
    observations are the quantities the example shows (y, the running state, the x gradient), each with
    the property's budget; `perturb(outcome, case, dtype)` alters the outcome first (the masking
    meta-test)."""
    case, dtype = entry.example_as_run()
    adapter = adapters.get(name)
    if not entry.applies(case, dtype):
        return False, "the entry's own example is outside what it says it explains", ()
    gradient, g = entry.shows_in == "gradient", case.cotangent
    try:
        outcome = adapter.run(entry.norm, case.x, case.params, dtype=dtype, cotangent=g)
    except adapters.Unsupported as exc:
        return False, f"unsupported: {exc}", ()
    except Exception as exc:  # raising on a defined input is the divergence
        message = f"raised {type(exc).__name__}: {exc}"
        return True, message, (Observation(case, "raised", None, None, message),)
    if perturb is not None:
        outcome = perturb(outcome, case, dtype)
    declaration = adapter.declarations[entry.norm]

    def check(what, actual, want, bound):
        """As the properties judge it: parameter gradients and state in their own dtype (MP.N1)."""
        held = dtype if what in ("dx", "y") else declaration.parameter_dtype(dtype)
        return checks.check(entry.clause, name, entry.norm, held, what, actual, want, bound, case.describe())

    verdicts = []
    if entry.shows_in == "state":
        expected = reference_or_reject(case).state
        dtypes = declaration.state_budget_dtypes(dtype)  # as the suite judges states
        bounds = budgets.state_budget(
            entry.norm, case.x, case.params, expected, case.params["state"], **dtypes
        )
        for what, bound in bounds.items():
            verdicts.append(
                check(f"state.{what}", getattr(outcome.state, what), getattr(expected, what), bound)
            )
    elif gradient:  # dx, and the parameters' gradients where the example has parameters
        vjp = reference_or_reject(case, vjp_of=g)
        want = {
            key: getattr(vjp, key)
            for key in ("x", "scale", "offset")
            if getattr(vjp, key) is not None and getattr(outcome.grads, key, None) is not None
        }
        bounds = checks.gradient_budget(
            entry.norm, case.x, case.params, g, want, **declaration.gradient_budget_dtypes(dtype)
        )
        for key, value in want.items():
            verdicts.append(check(f"d{key}", getattr(outcome.grads, key), value, (bounds[key], "NUM.N8")))
    else:
        expected = reference_or_reject(case)
        want = getattr(expected, "y", expected)
        bound = checks.budget(entry.norm, case.x, case.params, want, **declaration.budget_dtypes(dtype))
        verdicts.append(check("y", outcome.y, want, bound))
    failed = [v for v in verdicts if not v.passed]
    observations = tuple(Observation(case, quantity(v.what), v.actual, v.bound, v.what) for v in verdicts)
    return bool(failed), (failed or verdicts)[0].message(), observations


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(
            e,
            id=f"{e.clause}-{e.adapters}-{e.norm}",
            marks=pytest.mark.clause(e.clause, *(["NUM.N10"] if e.cpu else [])),
        )
        for e in KNOWN
    ],
)
def test_known_divergence_still_diverges(entry):
    assert entry.model is not None, f"{entry.clause} ({entry.adapters}) has no model of what it computes"
    assert entry.model.kind in KINDS, f"{entry.clause}: severity {entry.model.kind!r} is not one of {KINDS}"
    # the adapters it claims (a policy adapter inherits its sibling's entries as candidates, not claims)
    names = [n for n in adapters.names() if entry.names_directly(n)]
    assert names, f"{entry.adapters} names no adapter"
    installed = observable_in(entry)  # able to run it in the example's dtype, here
    if not installed:
        pytest.skip(f"none of {names} is installed and can run {entry.norm} here")
    for name in installed:
        diverges, detail, observations = observe(name, entry)
        if not entry.holds_in_release(name):  # another release's divergence: this one must conform
            assert not diverges, (
                f"{entry.clause} diverges in {name} {release_of(name)} although it is declared for releases "
                f"{entry.releases}: {detail} - widen the range"
            )
        elif entry.holds_here():
            assert diverges, (
                f"{entry.clause} no longer diverges in {name}: {detail} - remove or narrow the entry"
            )
            judged = entry.judge(observations, entry.example()[1])
            assert judged.agrees, (
                f"{entry.clause} in {name}: the framework is not what the entry's model says it computes "
                f"({entry.model.describe() if entry.model else 'no model'} missed by {judged.miss:.3g}x its "
                f"budget, {judged.where}): {detail}"
            )
        else:  # NUM.N10: not this CPU's divergence, so the adapter must get it right here
            assert not diverges, (
                f"{entry.clause} diverges in {name} although it is declared for "
                f"{entry.cpu.describe()}, which does not hold here: {detail} - widen the dependency"
            )
