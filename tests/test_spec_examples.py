"""Every example in spec/ (E-clauses, and any clause with a >>> example) runs as a doctest against
the reference."""

from __future__ import annotations

import doctest
import io
import re

import numpy as np
import pytest

from normconf import reference, spec

EXAMPLES = [c for c in spec.clauses().values() if c.kind == "E" or ">>>" in c.text]
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize(
    "example", [pytest.param(c, id=c.id, marks=pytest.mark.clause(c.id)) for c in EXAMPLES]
)
def test_example_runs_as_written(example):
    code = "\n".join(CODE_BLOCK.findall(example.text))
    test = doctest.DocTestParser().get_doctest(code, {"np": np, "R": reference}, example.id, example.page, 0)
    assert test.examples, f"{example.id} holds no >>> example"
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
