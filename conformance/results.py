"""Machine-readable results: one JSON object per line, appended and flushed as each test ends, so an
interrupted run leaves a valid file of everything that finished. The Reports work reads these."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from normconf import __version__

FORMAT = "normconf-results/1"


class Recorder:
    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.environments: set[str] = set()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write({"kind": "session", "format": FORMAT, "suite_version": __version__, "started": time.time()})

    def _write(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_jsonable) + "\n")
            fh.flush()

    def environment(self, adapter) -> None:
        if adapter.name not in self.environments:
            self.environments.add(adapter.name)
            self._write({"kind": "environment", **adapter.environment()})

    def cell(self, nodeid: str, cell, outcome: str) -> None:
        """One test's result. `outcome` is pytest's ("passed", "failed", "skipped")."""
        from .harness import repro

        status = cell.status() if outcome != "skipped" else "skipped"
        if outcome == "failed" and cell.failure is None:
            status = "error"
        record = {"kind": "result", "test": nodeid, "adapter": cell.adapter, "norm": cell.norm, "dtype": cell.dtype,
                  "property": cell.prop, "verdict": status, "examples": cell.examples,
                  "unsupported": cell.unsupported}
        shown = cell.failure or (cell.expected[1] if cell.expected else None) or cell.worst_pass
        if shown is not None:
            c = shown.comparison
            record.update(clause=shown.clause, what=shown.what, worst_error=c.worst_error, budget=c.budget,
                          ratio=c.ratio, ulps=c.ulps, basis=shown.basis, index=c.index)
        case = cell.failure_case or (cell.expected[2] if cell.expected else None)
        if case is not None:
            record["example"] = case.describe() if case.x.size > 64 else {**case.describe(), "x": case.x.tolist()}
            record["repro"] = repro(cell, case)
        if cell.expected:
            entry = cell.expected[0]
            record.update(divergence_clause=entry.clause, reason=entry.reason)
        self._write(record)


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
