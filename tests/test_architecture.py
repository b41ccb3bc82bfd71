"""Imports flow one way between the top-level packages: reference <- vocabulary <- adapters <- conformance
<- reports <- the command line. Every import is read from the source (function-local ones included: a
local import hides a cycle, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the folders mapped into the `normconf` namespace (pyproject.toml's package-dir), by their package name
PACKAGES = {
    "reference": "reference",
    "spec": "spec",
    "vocabulary": "vocabulary",
    "adapters": "adapters",
    "conformance": "conformance",
    "reports": "reports",
}


# the suite's own tests (meta-tests, the mutation corpus) use everything above it, as tests/ does
META = "conformance.meta"


def _node(module: str) -> str | None:
    """The graph node a `normconf...` module belongs to: its top-level package (the suite's meta-tests
    apart), or the root module itself (normconf.cli, normconf.envs, ...); None outside the project."""
    parts = module.split(".")
    if parts[0] != "normconf":
        return None
    if len(parts) == 1:
        return "normconf"
    if parts[1:3] == ["conformance", "meta"]:
        return META
    return parts[1] if parts[1] in PACKAGES else f"normconf.{parts[1]}"


def _sources():
    """(node, dotted name of the importing module's package, path) of every project module."""
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            dotted = ".".join(("normconf", package, *rel[:-1]))
            yield _node(dotted + ".x") if rel[:-1] else package, dotted, path
    for path in sorted((ROOT / "normconf").glob("*.py")):
        node = "normconf" if path.stem == "__init__" else f"normconf.{path.stem}"
        yield node, "normconf", path


def _imports(package: str, path: Path):
    """Every `normconf...` module `path` imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "normconf":  # `from normconf import reference` names a package or module
                for alias in node.names:
                    named = alias.name in PACKAGES or (ROOT / "normconf" / f"{alias.name}.py").exists()
                    yield f"normconf.{alias.name}" if named else "normconf"
            else:
                yield module


def _graph() -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> the files (relative paths) whose imports make that edge."""
    graph: dict[str, dict[str, list[str]]] = {}
    for node, package, path in _sources():
        for module in _imports(package, path):
            target = _node(module)
            if target is not None and target != node:
                graph.setdefault(node, {}).setdefault(target, []).append(str(path.relative_to(ROOT)))
    return graph


def _cycle(graph) -> list[str] | None:
    """One cycle of the graph as its nodes in order, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_the_top_level_packages():
    graph = _graph()
    cycle = _cycle(graph)
    where = (
        [f"{a} -> {b}: {sorted(set(graph[a][b]))[:3]}" for a, b in zip(cycle, cycle[1:], strict=False)]
        if cycle
        else []
    )
    assert cycle is None, "import cycle " + " -> ".join(cycle) + "\n" + "\n".join(where)


@pytest.mark.parametrize("node", ["reference", "vocabulary"])
def test_the_lower_packages_import_none_above_them(node):
    """The spec in code and the vocabulary stand alone: reference imports no other project package, the
    vocabulary only reference (and the environment facts of normconf.envs)."""
    allowed = {"reference": set(), "vocabulary": {"reference", "normconf.envs"}}[node]
    above = {target: files for target, files in _graph().get(node, {}).items() if target not in allowed}
    assert not above, f"{node} imports {above}"


def test_a_familys_known_divergences_import_only_the_vocabulary():
    """adapters/<family>/known.py (and the known_*.py it gathers) speak the vocabulary and the reference,
    never the suite, nor the family's adapters (its declarations, data only, they may read)."""
    for path in sorted((ROOT / "adapters").glob("*/known*.py")):
        package = "normconf.adapters." + path.parent.name
        imported = set(_imports(package, path))
        targets = {_node(m) for m in imported} - {None, "adapters"}
        assert targets <= {"vocabulary", "reference"}, f"{path.relative_to(ROOT)} imports {targets}"
        siblings = {m for m in imported if _node(m) == "adapters"}
        allowed = (package, f"{package}.declarations")
        wrong = {m for m in siblings if m not in allowed and not m.startswith(f"{package}.known")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


# a file a person can hold (and review) at once; tests/ - tables of cases - are not product files
MAX_LINES = 700


def test_no_product_file_is_over_the_line_limit():
    long = {
        str(path.relative_to(ROOT)): n
        for _, _, path in _sources()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split by role (see adapters/jax/, conformance/strategies.py): {long}"


# One alias per module, the same in every file (issue: "one alias table"): a module imported under an
# alias takes this one, and these names mean nothing else. Other project imports keep their own names.
ALIASES = {
    "normconf.reference": "R",
    "normconf.vocabulary.tolerances": "T",
    "normconf.vocabulary.cpu": "_cpu",
    "normconf.reports.hazards": "H",
    "normconf.reference._common": "c",
}


def _aliased(package: str, path: Path):
    """(module, alias) of every `import ... as ...` of a project module in `path`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.names:
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                if alias.asname and module.startswith("normconf"):
                    yield f"{module}.{alias.name}", alias.asname


def test_project_modules_take_one_alias_everywhere():
    tests = [("normconf.tests", path) for path in sorted((ROOT / "tests").glob("*.py"))]
    wrong = set()
    for package, path in [(p, path) for _, p, path in _sources()] + tests:
        for module, alias in _aliased(package, path):
            if module in ALIASES and alias != ALIASES[module]:
                wrong.add(f"{path.relative_to(ROOT)}: {module} as {alias} (the table: {ALIASES[module]})")
            elif module not in ALIASES and alias in ALIASES.values():
                wrong.add(f"{path.relative_to(ROOT)}: {module} as {alias}, which names another module")
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize(
    "record",
    [
        "normconf.vocabulary.records:Divergence",
        "normconf.adapters.base:NormDeclaration",
        "normconf.reference:Norm",
    ],
)
def test_records_are_keyword_only(record):
    """A record is written with its keys (`Divergence(adapters=..., norm=..., clause=...)`): a field added
    or moved cannot shift another's value, and every entry reads without counting positions."""
    import dataclasses
    import importlib

    module, _, name = record.partition(":")
    fields = dataclasses.fields(getattr(importlib.import_module(module), name))
    assert all(f.kw_only for f in fields), [f.name for f in fields if not f.kw_only]
