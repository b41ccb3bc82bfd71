"""Reading results files (JSON lines, see conformance/results.py and results.schema.json), checked
against the schema record by record, and summarizing them.

Several files merge: each is one `Run` (one machine or device); an implementation is an adapter on
a device, so the same adapter measured on two devices gives two rows of the matrix.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from normconf.conformance.results import FORMAT, VERSION
from normconf.reference import NORMS
from normconf.vocabulary.verdicts import KINDS, PROBLEMS, SEVERITY

SCHEMA = Path(__file__).with_name("results.schema.json")
SYMBOL = {
    "error": "E",
    "protocol error": "R",
    "crashed": "C",
    "timed out": "T",
    "finding": "F",
    "expected divergence": "x",
    "pass": ".",
    "unsupported": "-",
    "skipped": "s",
    "interrupted": "i",
}


class ResultsError(ValueError):
    """A results file that is not normconf results (the message names file and line)."""


@dataclass
class Run:
    """One results file: its session, the environment of each adapter, its results, and its end."""

    path: str
    session: dict
    environments: dict[str, dict] = field(default_factory=dict)
    results: list[dict] = field(default_factory=list)
    end: dict | None = None
    name: str = ""  # how the report names it when its file name alone is ambiguous (`load`)

    @property
    def complete(self) -> bool:
        return self.end is not None and not self.end.get("interrupted")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem

    def device(self, adapter: str) -> str:
        return self.environments.get(adapter, {}).get("device") or "unknown device"

    def release(self, adapter: str) -> str:
        """The release measured: "jax 0.4.38" where `normconf run --versions` chose it, else the adapter's
        framework and version as its environment reported them."""
        chosen = self.session.get("release")
        if chosen:
            return chosen.replace("=", " ")
        env = self.environments.get(adapter, {})
        return " ".join(str(v) for v in (env.get("framework"), env.get("version")) if v)

    def platform(self, adapter: str) -> str:
        """The device, and on a CPU which one and its ISA caps (NUM.N10): what tells two hosts apart."""
        device, cpu = self.device(adapter), self.environments.get(adapter, {}).get("cpu")
        if device != "cpu" or not cpu:
            return device
        caps = ", ".join(f"{k}={v}" for k, v in sorted(cpu.get("caps", {}).items()))
        return f"cpu {cpu.get('model', '?')}" + (f" capped {caps}" if caps else "")


@lru_cache(maxsize=None)
def _validators() -> dict:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    schema["$defs"]["result"]["properties"]["norm"]["enum"] = list(NORMS)  # one source: the norm records
    return {
        kind: Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{kind}"})
        for kind in ("session", "environment", "result", "end")
    }


def check(record, where: str) -> dict:
    """The record, if the schema accepts it; else ResultsError naming `where` (file:line) and the field."""
    if not isinstance(record, dict) or record.get("kind") not in _validators():
        raise ResultsError(f"{where}: not a normconf results record (no known 'kind')")
    errors = sorted(_validators()[record["kind"]].iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        at = "/".join(str(p) for p in error.absolute_path) or "record"
        raise ResultsError(f"{where}: invalid {record['kind']} record at {at}: {error.message}")
    return record


def read(path) -> Run:
    """One results file as a Run. Raises ResultsError for anything that is not normconf results."""
    run = None
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file, not normconf results") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("\n") and run is not None:
                break  # the writer was killed mid-line: an interrupted run, read up to its last whole record
            raise ResultsError(f"{where}: not JSON ({exc.msg})") from None
        if run is None:
            run = Run(str(path), _session(record, where))
            continue
        kind = check(record, where)["kind"]
        if kind == "session":
            raise ResultsError(f"{where}: a second session record (concatenated files? pass them separately)")
        if run.end is not None:
            raise ResultsError(f"{where}: a record after the end record")
        if kind == "environment":
            run.environments[record["adapter"]] = record
        elif kind == "result":
            run.results.append(record)
        else:
            run.end = record
    if run is None:
        raise ResultsError(f"{path}: empty, not a normconf results file")
    return run


def _session(record, where: str) -> dict:
    if not isinstance(record, dict) or record.get("kind") != "session" or record.get("format") != FORMAT:
        raise ResultsError(
            f"{where}: not a normconf results file (the first record must be a {FORMAT!r} session)"
        )
    if isinstance(record.get("version"), int) and record["version"] > VERSION:
        raise ResultsError(
            f"{where}: results format version {record['version']} is newer than this normconf reads "
            f"({VERSION}); upgrade normconf"
        )
    return check(record, where)


def load(paths) -> list[Run]:
    """The results files as runs; files of one name from different folders (each host's or job's
    worker-1.jsonl) are named by their folder too, so the report tells them apart."""
    runs = [read(path) for path in paths]
    stems = [Path(run.path).stem for run in runs]
    for run, stem in zip(runs, stems, strict=True):
        if stems.count(stem) > 1:
            run.name = f"{Path(run.path).resolve().parent.name}/{stem}"
    return runs


def implementations(runs: list[Run]) -> dict[tuple[int, str], str]:
    """{(run index, adapter): row label}: the adapter, qualified by device (and CPU and ISA caps) when
    several runs measured it on different ones, and by file when that still leaves two rows with one name."""
    seen: dict[str, list[tuple[int, str, str]]] = {}
    for i, run in enumerate(runs):
        for adapter in dict.fromkeys(r["adapter"] for r in run.results):
            seen.setdefault(adapter, []).append((i, run.platform(adapter), run.release(adapter)))
    labels = {}
    for adapter, where in seen.items():
        devices = [d for _, d, _ in where]
        releases = [r for _, _, r in where]
        for i, device, release in where:
            if len(set(releases)) > 1:  # the version axis: the release names the row, then the device
                version = release.split(" ", 1)[-1] if release.startswith(adapter.split("[")[0]) else release
                label = f"{adapter} {version}"
                if len(set(devices)) > 1:
                    label += f" @ {device}"
                if sum(1 for _, d, r in where if (d, r) == (device, release)) > 1:
                    label += f" ({runs[i].label})"
            else:
                label = adapter if len(where) == 1 else f"{adapter} @ {device}"
                if len(where) > 1 and devices.count(device) > 1:
                    label += f" ({runs[i].label})"
            labels[i, adapter] = label
    return labels


def _release_key(release: str):
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(release.rsplit(" ", 1)[-1]), release)
    except InvalidVersion:
        return (1, release, release)


def release_axis(runs: list[Run]) -> list[dict]:
    """The version axis: for every adapter measured in more than one release (`normconf run --versions`),
    each norm's worst verdict and worst error / budget per release, oldest first, and each known
    divergence's releases - held, not held, or not measured - with the release where it stopped holding
    ("fixed upstream") or started ("regression")."""
    by: dict[str, dict[str, list[int]]] = {}
    for i, run in enumerate(runs):
        for adapter in dict.fromkeys(r["adapter"] for r in run.results):
            by.setdefault(adapter, {}).setdefault(run.release(adapter), []).append(i)
    axis = []
    for adapter, where in by.items():
        if len(where) < 2:
            continue
        order = sorted(where, key=_release_key)
        cells: dict[str, dict[str, dict]] = {}
        held: dict[tuple[str, str], set[str]] = {}
        measured_in: dict[str, set[str]] = {}  # norm -> releases where some property judged examples
        for release in order:
            for i in where[release]:
                for r in (r for r in runs[i].results if r["adapter"] == adapter):
                    cell = cells.setdefault(r["norm"], {}).setdefault(
                        release, {"verdict": None, "ratio": None}
                    )
                    if cell["verdict"] is None or SEVERITY.index(r["verdict"]) < SEVERITY.index(
                        cell["verdict"]
                    ):
                        cell["verdict"] = r["verdict"]
                    ratio = r.get("ratio")
                    if isinstance(ratio, (int, float)) and math.isfinite(ratio):
                        cell["ratio"] = max(ratio, cell["ratio"] or 0.0)
                    if r.get("examples") and r["verdict"] not in ("unsupported", "skipped"):
                        measured_in.setdefault(r["norm"], set()).add(release)
                    for clause in r.get("divergence_clauses") or [r.get("divergence_clause")]:
                        if clause:
                            held.setdefault((r["norm"], clause), set()).add(release)
        divergences = []
        for (norm, clause), releases in sorted(held.items()):
            states = [(rel, (rel in releases) if rel in measured_in.get(norm, ()) else None) for rel in order]
            measured = [(rel, state) for rel, state in states if state is not None]
            flags = [
                f"fixed upstream: holds in {a}, not in {b}"
                if was
                else f"regression: not in {a}, holds in {b}"
                for (a, was), (b, now) in itertools.pairwise(measured)
                if was != now
            ]
            divergences.append(
                {
                    "norm": norm,
                    "clause": clause,
                    "states": states,
                    "flags": flags,
                    "declared": _declared(adapter, norm, clause),
                }
            )
        axis.append({"adapter": adapter, "releases": order, "cells": cells, "divergences": divergences})
    return axis


def _declared(adapter: str, norm: str, clause: str) -> str:
    """The release range the known-divergence data states for it ("" = every release)."""
    try:
        from normconf.conformance.divergences import KNOWN
    except ImportError:  # the report needs nothing but the results
        return ""
    ranges = {
        e.releases or "every release"
        for e in KNOWN
        if e.clause == clause and e.norm == norm and e.names(adapter)
    }
    return "; ".join(sorted(ranges))


def matrix(runs: list[Run]) -> dict[tuple[str, str], str]:
    """{(implementation, norm): worst verdict over its properties and dtypes}."""
    labels = implementations(runs)
    cells: dict[tuple[str, str], str] = {}
    for i, run in enumerate(runs):
        for r in run.results:
            key = (labels[i, r["adapter"]], r["norm"])
            current = cells.get(key)
            if current is None or SEVERITY.index(r["verdict"]) < SEVERITY.index(current):
                cells[key] = r["verdict"]
    return cells


def kinds(runs: list[Run]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """{(implementation, norm): {kind: dtypes}} of its expected divergences, kinds in KINDS order: the
    matrix shows each beside the worst verdict, so a semantic divergence is not painted like a
    float16 rounding."""
    labels = implementations(runs)
    found: dict[tuple[str, str], dict[str, set]] = {}
    for i, run in enumerate(runs):
        for r in run.results:
            if r["verdict"] == "expected divergence":
                marks = found.setdefault((labels[i, r["adapter"]], r["norm"]), {})
                for kind in ("bug",) * bool(r.get("bug")) + (r.get("severity", "divergence"),):
                    marks.setdefault(kind, set()).add(r["dtype"])
    order = lambda d: DTYPE_ORDER.index(d) if d in DTYPE_ORDER else len(DTYPE_ORDER)  # noqa: E731
    return {key: {k: sorted(by[k], key=order) for k in KINDS if k in by} for key, by in found.items()}


DTYPE_ORDER = ("float16", "bfloat16", "float32", "float64")
# the conformance levels (spec/numerics.md NUM.L5), strongest first; a record written before levels
# were recorded counts at its divergence's kind
LEVELS = ("semantics", "accuracy", "range", "special values")
KIND_LEVELS = {"semantic": "semantics", "precision": "accuracy", "special": "special values"}


def record_levels(r: dict) -> list[str]:
    """The levels a record failed or diverged at (none for a pass or a skip)."""
    if r["verdict"] not in ("finding", "expected divergence"):
        return []
    found = r.get("levels") or ([r["level"]] if r.get("level") else [])
    return found or [KIND_LEVELS.get(r.get("severity", ""), "accuracy")]


def cell_levels(runs: list[Run]) -> dict[tuple[str, str], str]:
    """{(implementation, norm): the strongest level any of its results failed or diverged at}: what the
    matrix colours a cell by (a finding, wherever it is, is strongest of all - its verdict says so)."""
    labels = implementations(runs)
    found: dict[tuple[str, str], str] = {}
    for i, run in enumerate(runs):
        for r in run.results:
            for level in record_levels(r):
                key = (labels[i, r["adapter"]], r["norm"])
                if key not in found or LEVELS.index(level) < LEVELS.index(found[key]):
                    found[key] = level
    return found


def text_matrix(runs: list[Run]) -> str:
    cells = matrix(runs)
    marks = kinds(runs)
    adapters = list(dict.fromkeys(a for a, _ in cells))
    norms = sorted({n for _, n in cells})
    width = max([len(a) for a in adapters] + [8])
    lines = [" " * width + "  " + "  ".join(n[:6].ljust(6) for n in norms)]
    for a in adapters:
        lines.append(
            a.ljust(width)
            + "  "
            + "  ".join(
                (
                    SYMBOL[cells.get((a, n), "skipped")] + "".join(KINDS[k] for k in marks.get((a, n), {}))
                ).ljust(6)
                for n in norms
            )
        )
    lines.append("  ".join(f"{s} {v}" for v, s in SYMBOL.items()))
    lines.append(
        "divergences beside the worst verdict: "
        + "  ".join(f"{s} {'framework bug (NUM.L6)' if k == 'bug' else k}" for k, s in KINDS.items())
    )
    labels = implementations(runs)
    for i, run in enumerate(runs):
        if run.end is not None and run.end.get("interrupted"):
            lines.append(f"INTERRUPTED: {run.path}: stopped by Ctrl-C; the results before it are kept")
        elif not run.complete:
            lines.append(f"INCOMPLETE: {run.path} has no end record (interrupted or still running)")
        for r in run.results:
            if r["verdict"] in PROBLEMS:
                compared = r.get("worst_error") not in (
                    None,
                    float("inf"),
                )  # a crash or a raise compares nothing
                lines.append(
                    f"{r['verdict'].upper()}: {labels[i, r['adapter']]} {r['norm']} {r['dtype']} "
                    f"{r.get('property')}: [{r.get('clause')}] {r.get('what', r.get('message', ''))}"
                    + (f" error {r.get('worst_error')} vs budget {r.get('budget')}" if compared else "")
                )
    return "\n".join(lines)
