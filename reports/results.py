"""Reading results files (one JSON object per line, see conformance/results.py) and summarizing them."""
from __future__ import annotations

import json
from pathlib import Path

# worst first: a cell shows the worst verdict of its results
SEVERITY = ["error", "finding", "expected divergence", "pass", "unsupported", "skipped"]
SYMBOL = {"error": "E", "finding": "F", "expected divergence": "x", "pass": ".", "unsupported": "-", "skipped": "s"}


class ResultsError(ValueError):
    """A results file that is not normconf results."""


def load(paths) -> list[dict]:
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ResultsError(f"{path}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(record, dict) or "kind" not in record:
                    raise ResultsError(f"{path}:{number}: not a normconf results record")
                records.append(record)
    return records


def matrix(records: list[dict]) -> dict[tuple[str, str], str]:
    """{(adapter, norm): worst verdict over its properties and dtypes}."""
    cells: dict[tuple[str, str], str] = {}
    for r in records:
        if r.get("kind") != "result":
            continue
        key = (r["adapter"], r["norm"])
        current = cells.get(key)
        if current is None or SEVERITY.index(r["verdict"]) < SEVERITY.index(current):
            cells[key] = r["verdict"]
    return cells


def text_matrix(records: list[dict]) -> str:
    cells = matrix(records)
    adapters = sorted({a for a, _ in cells})
    norms = sorted({n for _, n in cells})
    width = max([len(a) for a in adapters] + [8])
    lines = [" " * width + "  " + "  ".join(n[:6].ljust(6) for n in norms)]
    for a in adapters:
        lines.append(a.ljust(width) + "  " + "  ".join(SYMBOL[cells.get((a, n), "skipped")].ljust(6) for n in norms))
    lines.append("  ".join(f"{s} {v}" for v, s in SYMBOL.items()))
    findings = [r for r in records if r.get("kind") == "result" and r["verdict"] in ("finding", "error")]
    for r in findings:
        lines.append(f"{r['verdict'].upper()}: {r['adapter']} {r['norm']} {r['dtype']} {r.get('property')}: "
                     f"[{r.get('clause')}] {r.get('what', '')} error {r.get('worst_error')} vs budget {r.get('budget')}")
    return "\n".join(lines)
