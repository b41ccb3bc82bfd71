"""NUM.L1-L5: every example belongs to one conformance level, decided from the example and the declared
statistics dtype only; a range limit (NUM.D1's model) is granted a plug-in exactly as a framework, in
the same words; a level's state is holds, limited or fails."""

from __future__ import annotations

import numpy as np
import pytest

from normconf import adapters
from normconf.conformance import divergences
from normconf.vocabulary import levels
from normconf.vocabulary.case import Case

ROWS = np.array([[1.0, 2.0, 4.0, 8.0], [3.0, -1.0, 0.5, 2.0]])


def _case(x, kind="standard", norm="layer_norm", **params):
    return Case(norm, np.asarray(x, dtype=np.float64), {"axes": (-1,), "eps": 1e-5, **params}, kind)


@pytest.mark.clause("NUM.L1", "NUM.L2", "NUM.L3", "NUM.L4")
@pytest.mark.parametrize(
    "case, acc, clause, level",
    [
        (_case(ROWS), "float32", "LN.S1", "semantics"),
        (_case(ROWS, "integers"), "float32", "LN.S1", "semantics"),
        (_case(1e4 + ROWS, "offset"), "float32", "LN.S1", "accuracy"),
        (_case(np.ones((2, 10_000)), "positive"), "float32", "LN.S1", "accuracy"),  # a long reduction
        (_case(1e30 * ROWS, "overflow"), "float32", "LN.S1", "range"),
        (_case(1e30 * ROWS, "overflow"), "float64", "LN.S1", "accuracy"),  # float64 statistics hold it
        (_case(300 * ROWS, "large"), "float16", "LN.S1", "range"),  # float16 squares from 256
        (_case(ROWS, eps=1e-9), "float16", "LN.S1", "range"),  # eps is 0 in float16
        (_case(ROWS, eps=0.0), "float32", "LN.S1", "special values"),
        (_case(np.where(ROWS > 7, np.nan, ROWS)), "float32", "LN.S1", "special values"),
        (_case(ROWS), "float32", "NUM.N9", "special values"),
    ],
)
def test_each_example_belongs_to_one_level(case, acc, clause, level):
    assert levels.of_example(case, acc, clause) == level


@pytest.mark.clause("NUM.L3", "NUM.D1")
def test_the_range_limit_names_where_squares_leave_the_declared_dtype():
    case = _case(3e19 * ROWS, "overflow")
    assert levels.range_cause(case, "float32") == "squares leave float32 from |x| ≈ 1.8e19 / sqrt(n) (NUM.D1)"
    assert levels.range_cause(case, "float64") is None
    regime = levels.regime(case, "float32")
    assert (
        regime.startswith("values overflow, n = 4 per statistic: squares leave float32")
        and "sum to" in regime
    )
    lp = Case("lp_normalize", 1e14 * ROWS, {"p": 3.0, "axes": (-1,), "eps": 1e-12}, "large")
    assert levels.range_cause(lp, "float32").startswith("powers |x|^3 leave float32 from |x| ≈ 7e12")


TEXTBOOK = """
import numpy as np
from normconf.adapters.plugin import implementation

@implementation("layer_norm", dtypes=("float32",), accumulation={"float32": "float32"})
def textbook(x, *, axes, eps, scale=None, offset=None):
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(np.square(x - mean).mean(axis=axes, keepdims=True) + np.float32(eps))
"""


@pytest.fixture
def textbook_layer_norm(tmp_path):
    """A float32 layer norm as a textbook writes it, as a plug-in file."""
    path = tmp_path / "textbook.py"
    path.write_text(TEXTBOOK)
    return str(path)


@pytest.mark.clause("NUM.L3", "NUM.L5", "NUM.D1")
def test_a_plugin_and_a_framework_get_the_same_range_limit(textbook_layer_norm):
    """One rule for everyone: a plug-in whose float32 squares overflow is explained by NUM.D1's model,
    read from its declared statistics dtype, as a framework's is."""
    case = _case(3e19 * ROWS, "overflow")
    plugin = divergences.candidates(textbook_layer_norm, "layer_norm", case, "float32")
    assert [e.clause for e in plugin] == ["NUM.D1"] and plugin[0].level == "range"
    # within the range the rule does not apply: the same plug-in on finite squares has no candidate
    assert not divergences.candidates(textbook_layer_norm, "layer_norm", _case(ROWS), "float32")
    framework = divergences.candidates("torch.nn", "layer_norm", case, "float32")
    assert [e.clause for e in framework][:1] == ["NUM.D1"] and framework[0].level == "range"
    # the model judges what was answered: what float32 squares give there agrees, a finite wrong answer
    # in the overflowing groups does not
    y = adapters.get(textbook_layer_norm).run("layer_norm", case.x, case.params, dtype="float32").y
    assert _agrees(plugin[0], case, y)
    assert not _agrees(plugin[0], case, np.full_like(y, 0.5))


def _agrees(entry, case, y) -> bool:
    from normconf import reference as R
    from normconf.conformance import checks
    from normconf.vocabulary import models

    want = R.layer_norm(case.x, **case.params)
    bound, _ = checks.budget(
        "layer_norm", case.x, case.params, want, acc_dtype="float32", out_dtype="float32"
    )
    return entry.judge((models.Observation(case, "y", y, bound, "y"),), "float32").agrees


def _record(verdict, level, clause=None, regime="values overflow: squares leave float32 (NUM.D1)"):
    return {
        "verdict": verdict,
        "level": level,
        "divergence_clause": clause,
        "regime": regime,
        "norm": "layer_norm",
        "property": "forward",
        "dtype": "float32",
    }


@pytest.mark.clause("NUM.L5")
def test_a_level_holds_is_limited_or_fails():
    states = levels.states(
        [
            _record("pass", None),
            _record("expected divergence", "range", "NUM.D1"),
            _record("finding", "accuracy", regime="values offset, n = 4 per statistic"),
        ]
    )
    assert {level: s["state"] for level, s in states.items()} == {
        "semantics": "holds",
        "accuracy": "fails",
        "range": "limited",
        "special values": "holds",
    }
    # a framework's own divergence of another kind is no limit: its level does not hold
    semantic = levels.states([_record("expected divergence", "semantics", "BN.D4")])
    assert semantic["semantics"]["state"] == "fails"
