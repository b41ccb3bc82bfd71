"""pytest plugin: the `clause` marker, a dump of which tests cite which spec clauses, and the ISA
caps of NORMCONF_MAX_ISA applied before any framework is imported.

`@pytest.mark.clause("BN.N2", ...)` ties a test to clauses; `--clause-map FILE` writes
{clause: [test ids]} after collection, which the clause-coverage meta-test reads.
"""

from __future__ import annotations

import json


def pytest_addoption(parser):
    parser.addoption(
        "--clause-map",
        metavar="FILE",
        default=None,
        help="write the JSON map {clause: [test ids]} of collected tests and stop",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "clause(*ids): the spec clauses a test exercises, e.g. clause('BN.N2')"
    )
    from normconf.adapters import _cpu

    try:  # NORMCONF_MAX_ISA sets each library's ISA cap before any framework is imported (NUM.N10)
        _cpu.apply_max_isa()
    except _cpu.IsaCapError as exc:
        import pytest

        raise pytest.UsageError(str(exc)) from None


def cited_clauses(item) -> list[str]:
    return [clause for mark in item.iter_markers("clause") for clause in mark.args]


def pytest_collection_finish(session):
    path = session.config.getoption("clause_map")
    if not path:
        return
    citations: dict[str, list[str]] = {}
    for item in session.items:
        for clause in cited_clauses(item):
            citations.setdefault(clause, []).append(item.nodeid)
    with open(path, "w") as fh:
        json.dump(citations, fh, indent=1, sort_keys=True)
