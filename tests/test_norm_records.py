"""One record per norm (reference/norms.py): each record is consistent with its spec page and its
reference module, and every list of norms in normconf - adapters, strategies, properties, results
schema, report, conventions - covers each record, so adding a norm is its spec page, its reference
module and its record."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normconf import bench, spec
from normconf import reference as R
from normconf.adapters import base, conventions
from normconf.conformance import case_builders, strategies
from normconf.reference.norms import IDENTITIES
from normconf.reports import hazards, html, results
from normconf.vocabulary import budgets

ROOT = Path(__file__).resolve().parent.parent
RESULT = {
    "kind": "result",
    "test": "t",
    "adapter": "a",
    "dtype": "float32",
    "property": "p",
    "verdict": "pass",
}
RECORDS = pytest.mark.parametrize("norm", R.NORMS.values(), ids=list(R.NORMS))


@RECORDS
def test_record_matches_its_spec_page_and_clauses(norm):
    heading = (ROOT / "spec" / f"{norm.name}.md").read_text(encoding="utf-8").splitlines()[0]
    assert heading == f"# {norm.title} (`{norm.prefix}`)"
    known = spec.clauses()
    for clause in norm.clauses.cited():
        assert clause in known, f"{norm.name} cites unknown clause {clause}"


@RECORDS
def test_record_matches_its_reference_module(norm):
    assert norm.forward is getattr(R, norm.name) and norm.vjp is getattr(R, f"{norm.name}_vjp")
    vjp = {n for n, p in inspect.signature(norm.vjp).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(norm.parameters()) == vjp, "the VJP takes the forward's parameters"
    for field_name in ("defaultable", "affine", "needs", "typical", "typical_arrays"):
        unknown = set(getattr(norm, field_name) or ()) - set(norm.parameters())
        assert not unknown, f"{field_name} names parameters the reference does not take: {unknown}"
    assert norm.identities <= set(IDENTITIES)
    assert norm.stateful == ("state" in norm.parameters()) == bool(norm.clauses.state)
    assert (norm.clauses.defaults is None) == (norm.defaults_of is not None)


@RECORDS
def test_every_list_of_norms_covers_the_record(norm):
    results.check({**RESULT, "norm": norm.name}, "a result of this norm")  # the schema accepts it
    assert norm.name in base.NORMS and base.CANONICAL_PARAMETERS[norm.name] == norm.defaultable
    assert html.TITLES[norm.name] == conventions.TITLES[norm.name] == norm.title
    assert norm.strategy in case_builders._BUILDERS and norm.gradient_terms in budgets.TERMS
    assert norm.name in dict(bench.reference_ratio(shape=(4, 6, 3, 5)))  # the reference benchmark


@RECORDS
def test_its_typical_call_runs_on_the_porting_hazards_input(norm):
    """Norm.typical_params completes any framework's defaults (hazards, bench) into a call the
    reference accepts, with per-statistic arrays shaped for the input."""
    x = np.random.default_rng(0).normal(size=hazards.SHAPE)
    params = norm.typical_params(x, {})
    out = norm.forward(x, **params)
    assert np.shape(getattr(out, "y", out)) == x.shape
    for name in norm.affine if norm.typical_arrays is None else norm.typical_arrays:
        assert np.shape(params[name]) == norm.parameter_shape(x, params)


@RECORDS
def test_its_strategy_draws_cases_the_reference_accepts(norm):
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.data())
    def draws(data):
        case = data.draw(strategies.case(norm.name, None, "float64"))
        assert case.norm == norm.name
        try:
            out = norm.forward(case.x, **case.params)
        except R.ClauseError:  # a few draws break a constraint (e.g. one value per statistic): rejected
            return
        y = getattr(out, "y", out)
        assert np.shape(y) == case.x.shape
        view, axes, back = norm.statistic_view(case.x, case.params)
        assert back(np.zeros([1 if a in axes else s for a, s in enumerate(view.shape)])).shape == case.x.shape
        assert norm.reduction_length(case.x, case.params) >= 1

    draws()
