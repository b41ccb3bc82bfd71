"""pytest plugin: the conformance suite's options, the `clause` marker, a dump of which tests cite
which spec clauses, and the ISA caps of NORMCONF_MAX_ISA applied before any framework is imported.

The suite's options live here, not in its conftest, so that an installed normconf runs it by name:
`pytest --pyargs normconf.conformance --impl my_norms.py` (the options are parsed before any conftest
of the installed package is found).

`@pytest.mark.clause("BN.N2", ...)` ties a test to clauses; `--clause-map FILE` writes
{clause: [test ids]} after collection, which the clause-coverage meta-test reads.
"""

from __future__ import annotations

import json
import os

PROFILE_NAMES = ("default", "quick", "thorough")  # conformance/conftest.py's hypothesis profiles
# the seed of a derandomized profile (quick) when none is given: the gate's sample, vetted
DEFAULT_SEED = 0


def pytest_addoption(parser):
    _suite_options(parser)
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
    from normconf.vocabulary import cpu as _cpu

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


def _suite_options(parser) -> None:
    """The conformance suite's options (its conftest reads them)."""
    group = parser.getgroup("normconf")
    group.addoption(
        "--adapters",
        default=os.environ.get("NORMCONF_ADAPTERS", ""),
        help="comma-separated adapter names (default: all); NORMCONF_ADAPTERS",
    )
    group.addoption(
        "--impl",
        default=os.environ.get("NORMCONF_IMPL", ""),
        help="comma-separated plug-ins to check: path/file.py[:obj] or module:obj; only these run "
        "unless --adapters names others too; NORMCONF_IMPL",
    )
    group.addoption(
        "--norms",
        default=os.environ.get("NORMCONF_NORMS", ""),
        help="comma-separated norms (default: every norm an adapter declares); NORMCONF_NORMS",
    )
    group.addoption(
        "--dtypes",
        default=os.environ.get("NORMCONF_DTYPES", ""),
        help="comma-separated input dtypes (default: every dtype declared); NORMCONF_DTYPES",
    )
    group.addoption(
        "--policies",
        default=os.environ.get("NORMCONF_POLICIES", ""),
        help="comma-separated mixed-precision policies: none (adapters without one), mixed (spec MP.P1; "
        "adapters named <adapter>@mixed) - default: both; NORMCONF_POLICIES",
    )
    group.addoption(
        "--profile",
        default=os.environ.get("NORMCONF_PROFILE", "quick"),
        choices=sorted(PROFILE_NAMES),
        help="hypothesis profile: quick, default, thorough; NORMCONF_PROFILE",
    )
    group.addoption(
        "--results",
        default=os.environ.get("NORMCONF_RESULTS"),
        help="append one JSON line per result to this file; NORMCONF_RESULTS",
    )
    group.addoption(
        "--seed",
        default=os.environ.get("NORMCONF_SEED"),
        type=int,
        help="the seed every property's examples derive from (with its identity): the same seed, the same "
        f"examples; default: {DEFAULT_SEED} under the quick profile (the gate's sample), else one drawn "
        "and recorded; NORMCONF_SEED",
    )
    group.addoption(
        "--claims",
        default=None,
        metavar="DIR",
        help="share the adapters with other workers: run an adapter's cells only after claiming it in "
        "DIR (first come), in the order --adapters lists them (normconf run's queue)",
    )
    group.addoption(
        "--no-compile-cache",
        action="store_true",
        default=False,
        help="no persistent compilation cache for the compiled frameworks (on by default); "
        "NORMCONF_COMPILE_CACHE=0",
    )
    group.addoption(
        "--isolate",
        default=os.environ.get("NORMCONF_ISOLATE", ""),  # adapters.ISOLATE
        metavar="SECONDS",
        help="run every adapter call in a child process that may take SECONDS ('on': no limit): a "
        "crash or hang costs its cell only, reported as 'crashed' / 'timed out'; NORMCONF_ISOLATE",
    )
