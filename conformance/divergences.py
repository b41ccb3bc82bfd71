"""The suite's view of the known divergences: every family's entries as the adapters' registry hands them
(`known()`, and `KNOWN` built on first use), the lookup of the entries that may explain a failure
(`candidates`, `explaining`) and an entry's framework-alone script. The record, its predicates and the
models of framework arithmetic are the vocabulary's (normconf.vocabulary); each family keeps its entries,
sorted by clause, in `adapters/<family>/known.py`.

An entry explains a failing comparison only for the examples its `applies` predicate accepts and where
its model agrees with what the framework answered; the suite then records an expected divergence
instead of a finding. Each entry's minimal `example` must still diverge (conformance/meta), and an entry
whose behaviour depends on the CPU explains failures only where that dependency holds (NUM.N10).
"""

from __future__ import annotations

import normconf.adapters
from normconf.vocabulary import levels
from normconf.vocabulary.builders import declared_range
from normconf.vocabulary.case import Case
from normconf.vocabulary.records import Divergence

KNOWN: list[Divergence]  # every family's entries: built on first use by the module's __getattr__ (below)


def known() -> list[Divergence]:
    """Every known divergence, as the adapters' registry hands them (each family's known.py)."""
    return list(normconf.adapters.known_divergences())


def __getattr__(name: str):
    if name == "KNOWN":
        return known()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def candidates(
    adapter: str, norm: str, case: Case, dtype: str, non_finite_only: bool = False, gradient: bool = False
) -> list[Divergence]:
    """The entries whose territory holds a failure of `adapter` on (case, dtype): those about the same
    kind of comparison first (`gradient`: a VJP, else an output or a state). Each is only a candidate:
    its model must agree with what the framework answered (`Divergence.judge`)."""
    named = (adapter, *filter(None, [_wrapped(adapter, norm)]))  # a plug-in's wrapped built-in too
    found = [
        entry
        for entry in known()
        if (entry.non_finite or not non_finite_only)
        and any(entry.matches(name, norm, case, dtype) for name in named)
    ]
    if not non_finite_only and not any(entry.clause in levels.RANGE_CLAUSES for entry in found):
        generic = declared_range(norm, normconf.adapters.accumulation(adapter, norm, dtype))
        if generic is not None and generic.applies(case, dtype):
            found.append(generic)  # the range limit every implementation is granted (NUM.L3)
    same_kind = [entry for entry in found if (entry.shows_in == "gradient") == gradient]
    return same_kind + [entry for entry in found if entry not in same_kind]


def _wrapped(adapter: str, norm: str) -> str | None:
    """The built-in adapter a plug-in declares its `norm` wraps (`wraps=`), whose divergences are its
    own arithmetic's; None for anything else."""
    try:
        wrapped = getattr(normconf.adapters.load(adapter), "wrapped", None)
    except Exception:  # an adapter the registry does not know (a test's stand-in)
        return None
    return wrapped(norm) if wrapped is not None else None


def explaining(
    adapter: str, norm: str, case: Case, dtype: str, non_finite_only: bool = False, gradient: bool = False
) -> Divergence | None:
    """The first candidate entry for a failure of `adapter` on (case, dtype), or None (its model not
    consulted: for the divergence meta-test, which checks each entry's own example)."""
    return (candidates(adapter, norm, case, dtype, non_finite_only, gradient) or [None])[0]


# --- the models of framework arithmetic the families' entries share ---------------------------------


def observable_in(entry: Divergence) -> list[str]:
    """The adapters `entry` claims (named directly) that can show it here: installed, declaring its norm
    in its example's dtype (with gradients for a gradient entry) and not declining to run it. The
    meta-tests hold an entry to these, and only these."""
    dtype = entry.example()[1]
    found = []
    for name in normconf.adapters.names():
        if not entry.names_directly(name):
            continue
        adapter = normconf.adapters.get(name)
        declaration = adapter.declarations.get(entry.norm)
        if (
            adapter.available()[0]
            and declaration is not None
            and dtype in declaration.dtypes
            and (entry.shows_in != "gradient" or declaration.gradients)
            and not adapter.cannot_run(entry.norm)
        ):
            found.append(name)
    return found


def framework_alone(entry: Divergence, adapter: str) -> str | None:
    """The framework-alone script of `entry`'s example in `adapter` (no normconf in it: what an upstream
    report of a bug carries), or None where the adapter writes none."""
    case, dtype = entry.example_as_run()
    return normconf.adapters.get(adapter).framework_repro(
        entry.norm, case.x, case.params, dtype=dtype, cotangent=case.cotangent
    )
