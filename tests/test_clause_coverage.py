"""Meta-test: every spec clause is cited by at least one test, and every cited clause exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from normconf import spec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def citations(tmp_path_factory) -> dict[str, list[str]]:
    """{clause: [test ids]} over the meta-tests and the conformance suite, from a collect-only run."""
    out = tmp_path_factory.mktemp("clauses") / "map.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--clause-map={out}",
            "tests",
            "conformance",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_clause_is_cited(citations):
    missing = sorted(set(spec.clauses()) - set(citations))
    assert not missing, f"clauses no test cites: {missing}"


def test_every_citation_names_a_clause(citations):
    unknown = sorted(set(citations) - set(spec.clauses()))
    assert not unknown, f"tests cite clauses the spec lacks: {unknown}"
