"""P-clauses: the canonical default each clause states is the reference's default, and a parameter
the spec gives no default is required."""

from __future__ import annotations

import ast
import inspect
import re

import pytest

from normconf import reference as R
from normconf import spec

# The reference function each norm's P-clauses describe.
FUNCTION_OF_PREFIX = {
    "BN": R.batch_norm,
    "IN": R.instance_norm,
    "LN": R.layer_norm,
    "GN": R.group_norm,
    "RMS": R.rms_norm,
    "LRN": R.local_response_norm,
    "LP": R.lp_normalize,
    "CN": R.channel_normalize,
    "SBN": R.sync_batch_norm,
}
DEFAULT_LINE = re.compile(r"^Canonical default: (.+)\.$", re.M)
ASSIGNMENT = re.compile(r"`(\w+)=([^`]+)`")
REQUIRED = re.compile(r"`(\w+)`")

# the norms' parameter clauses (MP.P1, the mixed policy, is a parameter of a run, not of a reference
# function: tests/test_policies.py cites it)
PARAMETER_CLAUSES = [c for c in spec.clauses().values() if c.kind == "P" and c.id.split(".")[0] != "MP"]


def stated_defaults(clause) -> tuple[dict, list[str]]:
    """({parameter: default}, [required parameters]) from the clause's `Canonical default:` line."""
    line = DEFAULT_LINE.search(clause.text)
    assert line, f"{clause.id} states no canonical default"
    text = line[1]
    if text.startswith("none for "):
        return {}, REQUIRED.findall(text)
    return {name: ast.literal_eval(value) for name, value in ASSIGNMENT.findall(text)}, []


@pytest.mark.parametrize(
    "clause", [pytest.param(c, id=c.id, marks=pytest.mark.clause(c.id)) for c in PARAMETER_CLAUSES]
)
def test_reference_default_is_the_stated_canonical_default(clause):
    function = FUNCTION_OF_PREFIX[clause.id.split(".")[0]]
    signature = inspect.signature(function).parameters
    defaults, required = stated_defaults(clause)
    assert defaults or required
    for name, value in defaults.items():
        assert name in signature, f"{clause.id}: {function.__name__} has no parameter {name}"
        assert signature[name].default == value, (
            f"{clause.id}: {name} defaults to {signature[name].default!r}"
        )
    for name in required:
        assert signature[name].default is inspect.Parameter.empty, f"{clause.id}: {name} should be required"
