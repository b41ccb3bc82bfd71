"""The README's two checklists, executable. "Adding a norm" and "Adding a framework" are tables of steps
here - the place a step writes to, and the check that every built-in norm or family has taken it - and
the README's checklists must name each place, so a step the walkthrough forgets fails here, and so does
a norm or family that skipped one."""

from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path

import cases
import oracle
import pytest
import tomllib
import yaml

from normconf import adapters, envs
from normconf import reference as R
from normconf.adapters import plugin
from normconf.conformance import case_builders
from normconf.vocabulary import budgets

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = ROOT / "requirements" / "lock-linux-cpu-py311.txt"
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
EXTRAS_NOT_FRAMEWORKS = ("all", "test", "examples")


def _canonical(distribution: str) -> str:
    """PEP 503's form of a distribution name (tf_keras, tf-keras and TF-Keras are one)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _named(requirement: str) -> str:
    return _canonical(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))


def _constraint_clauses(prefix: str) -> set[str]:
    from normconf import spec

    return {c for c in spec.clauses() if c.startswith(f"{prefix}.C") and c[len(prefix) + 2 :].isdigit()}


# --- Adding a norm: (the place, what it must hold for the norm) -------------------------------------------
NORM_STEPS = {
    "spec/<name>.md": lambda norm: (ROOT / "spec" / f"{norm.name}.md").is_file(),
    "reference/<name>.py": lambda norm: (
        (ROOT / "reference" / f"{norm.name}.py").is_file()
        and getattr(R, norm.name, None) is norm.forward
        and getattr(R, f"{norm.name}_vjp", None) is norm.vjp
    ),
    "reference/norms.py": lambda norm: R.NORMS.get(norm.name) is norm,
    "conformance/case_builders.py": lambda norm: norm.strategy in case_builders._BUILDERS,
    "vocabulary/budgets.py": lambda norm: norm.gradient_terms in budgets.TERMS,
    # the reference's error for each of its C clauses, and what each framework does with one violation
    "tests/test_constraints.py": lambda norm: (
        _constraint_clauses(norm.prefix) <= {clause for clause, _, _ in _reference_violations()}
    ),
    "conformance/test_constraints.py": lambda norm: norm.name in _framework_violations(),
    # the oracle: an independent mpmath implementation, and the literal cases it checks the reference on
    "tests/oracle.py": lambda norm: callable(getattr(oracle, norm.name, None)),
    "tests/cases.py": lambda norm: any(case.forward is norm.forward for case in cases.CASES),
}


def _framework_violations() -> set[str]:
    """The norms conformance/test_constraints.py's VIOLATIONS names (read from its source: importing a
    suite module outside the suite's conftest would not find its markers)."""
    tree = ast.parse((ROOT / "conformance" / "test_constraints.py").read_text(encoding="utf-8"))
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "VIOLATIONS")
    return {key.value for key in table.keys}


def _reference_violations():
    import test_constraints

    return test_constraints.VIOLATIONS


# --- Adding a framework: per family folder, and per adapter the family ships ------------------------------
def _families() -> dict[str, list[str]]:
    """{family folder: its built-in adapters}, read from the entry points (adapters.<family>.<module>)."""
    points = plugin.entry_points()
    out: dict[str, list[str]] = {}
    for name in adapters.built_in():
        out.setdefault(points[name].value.split(":")[0].split(".")[2], []).append(name)
    return out


def _distributions(module: str) -> set[str]:
    return {_canonical(d) for d in metadata.packages_distributions().get(module.split(".")[0], ())}


def _extras() -> set[str]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    return {_named(r) for name, reqs in extras.items() if name not in EXTRAS_NOT_FRAMEWORKS for r in reqs}


def _locked() -> set[str]:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    return {_named(line) for line in lines if line and not line.startswith("#")}


def _ci_groups() -> list[list[str]]:
    matrix = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]["suite"]["strategy"]["matrix"]
    return [group["adapters"].split(",") for group in matrix["include"]]


FAMILY_STEPS = {
    "adapters/<family>/__init__.py": lambda family, names: bool(
        (ROOT / "adapters" / family / "__init__.py").is_file()
        and __import__(f"normconf.adapters.{family}", fromlist=["_"]).__doc__
    ),
    "adapters/<family>/known.py": lambda family, names: isinstance(
        __import__(f"normconf.adapters.{family}.known", fromlist=["KNOWN"]).KNOWN, (list, tuple)
    ),
    'entry-points."normconf.adapters"': lambda family, names: all(
        n in PYPROJECT["project"]["entry-points"]["normconf.adapters"] for n in names
    ),
    "[tool.setuptools] packages": lambda family, names: (
        f"normconf.adapters.{family}" in PYPROJECT["tool"]["setuptools"]["packages"]
    ),
    # what each adapter imports: a framework extra installs it and the lock pins it
    "[project.optional-dependencies]": lambda family, names: all(
        _distributions(m) & _extras() for n in names for m in adapters.load(n).requires
    ),
    "requirements/lock-linux-cpu-py311.txt": lambda family, names: all(
        _distributions(m) & _locked() for n in names for m in adapters.load(n).requires
    ),
    # CI runs each adapter in exactly one matrix group of the suite job
    ".github/workflows/conformance.yml": lambda family, names: all(
        sum(n in group for group in _ci_groups()) == 1 for n in names
    ),
    # `normconf run --versions`: a release set serves at least one of its adapters
    "normconf/envs.py FAMILIES": lambda family, names: any(envs.family_of(n) for n in names),
}


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"### {title}\n")
    return text[start : text.find("\n#", start + 1)]


@pytest.mark.parametrize("step", NORM_STEPS)
@pytest.mark.parametrize("norm", R.NORMS.values(), ids=list(R.NORMS))
def test_every_norm_takes_every_step(norm, step):
    assert NORM_STEPS[step](norm), f"{norm.name} lacks its entry in {step} (README: Adding a norm)"


@pytest.mark.parametrize("step", FAMILY_STEPS)
@pytest.mark.parametrize("family", sorted(_families()))
def test_every_framework_family_takes_every_step(family, step):
    names = _families()[family]
    assert FAMILY_STEPS[step](family, names), f"{family} ({names}) lacks {step} (README: Adding a framework)"


@pytest.mark.parametrize(
    "title, steps",
    [("Adding a norm", NORM_STEPS), ("Adding a framework", FAMILY_STEPS)],
    ids=["norm", "framework"],
)
def test_the_readme_checklist_names_every_step(title, steps):
    section = _section(title)
    missing = [step for step in steps if step.split(" ")[0] not in section]
    assert not missing, f"README's '{title}' does not name {missing}"


def test_a_family_missing_a_step_is_caught():
    """The checks see a gap: a family whose adapters are in no CI group, lock or release set fails."""
    for step in (".github/workflows/conformance.yml", "normconf/envs.py FAMILIES"):
        assert not FAMILY_STEPS[step]("ghost", ["ghost.nn"])
    assert not NORM_STEPS["tests/oracle.py"](type("Norm", (), {"name": "ghost_norm"}))
