"""Machine-readable results: one JSON object per line, appended and flushed as each test ends, so an
interrupted run leaves a valid file of everything that finished.

The records are described by reports/results.schema.json (format `normconf-results`, version 1):
a `session` record first (suite version, commit, profile, seed, start time), an `environment` record
per adapter, a `result` record per test, and an `end` record when the session finishes. A file
without `end` is an interrupted run; the report still reads it and says so.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from normconf import __version__
from normconf.vocabulary import cpu as _cpu

FORMAT = "normconf-results"
VERSION = 1
SMALL = 64  # inputs up to this many elements are written out in full, with the reference's answer
ENVIRONMENT_KEYS = ("framework", "version", "device")  # the rest of an adapter's environment() are flags


def _policy(adapter: str) -> str:
    """The adapter's mixed-precision policy (MP.P1): "mixed", or "none" (also where it cannot load)."""
    from normconf import adapters

    try:
        return adapters.get(adapter).policy_name
    except Exception:
        return "none"


def _policy_dtypes(adapter: str, norm: str, dtype: str) -> dict:
    """Under a mixed policy, the statistics' and the output's dtype the adapter declares (MP.N1, MP.N2)."""
    from normconf import adapters

    try:
        loaded = adapters.get(adapter)
        declaration = loaded.declarations[norm]
    except Exception:
        return {}
    if loaded.policy is None:
        return {}
    return {
        "statistics_dtype": declaration.statistics_dtype(dtype),
        "output_dtype": declaration.output_dtype(dtype),
    }


def _release() -> str | None:
    """The release this run measures ("onnxruntime=1.20.1", `normconf run --versions`), or None."""
    from normconf.envs import RELEASE

    return os.environ.get(RELEASE) or None


class Recorder:
    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        profile: str | None = None,
        seed: int | None = None,
        origin: str = "given",
    ):
        self.path = Path(path) if path else None
        self.ended = False
        self.environments: set[str] = set()
        self.counts: Counter = Counter()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write(
                {
                    "kind": "session",
                    "format": FORMAT,
                    "version": VERSION,
                    "suite_version": __version__,
                    **_commit(),
                    "profile": profile,
                    "seed": seed,
                    "sampling": _sampling(seed, origin),
                    **({"release": _release()} if _release() else {}),
                    "started": now(),
                    "host": {
                        "name": platform.node(),
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                    },
                }
            )

    def _write(self, record: dict) -> None:
        if self.path is None or self.ended:  # nothing may follow the end record (a valid file above all)
            return
        self.ended = record["kind"] == "end"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_jsonable) + "\n")
            fh.flush()

    def environment(self, adapter) -> None:
        if adapter.name not in self.environments:
            self.environments.add(adapter.name)
            env = dict(adapter.environment())
            env.pop("adapter", None)
            known = {key: _text(env.pop(key, None)) for key in ENVIRONMENT_KEYS}
            policy = {} if adapter.policy is None else {"mechanism": adapter.policy.mechanism}
            self._write(
                {
                    "kind": "environment",
                    "adapter": adapter.name,
                    **known,
                    "policy": adapter.policy_name,
                    **policy,
                    "cpu": _cpu.describe(),
                    "available": True,
                    "flags": env,
                }
            )

    def unavailable(self, name: str, reason: str) -> None:
        if name not in self.environments:
            self.environments.add(name)
            self._write(
                {
                    "kind": "environment",
                    "adapter": name,
                    "framework": None,
                    "version": None,
                    "device": None,
                    "cpu": _cpu.describe(),
                    "available": False,
                    "reason": reason,
                    "flags": {},
                }
            )

    def skipped(self, nodeid: str, target, prop: str, reason: str) -> None:
        """A cell skipped before it ran: its framework is not installed here."""
        self.unavailable(target.adapter, reason)
        self._result(
            {
                "test": nodeid,
                "adapter": target.adapter,
                "norm": target.norm,
                "dtype": target.dtype,
                "policy": _policy(target.adapter),
                "property": prop,
                "verdict": "skipped",
                "examples": 0,
                "unsupported": {},
                "message": reason,
            }
        )

    def cell(self, nodeid: str, cell, outcome: str, message: str | None = None) -> None:
        """One test's result. `outcome` is pytest's ("passed", "failed", "skipped"), or "interrupted"
        (Ctrl-C arrived during the test: what it judged so far is not a verdict)."""

        if outcome == "interrupted":
            status = "interrupted"
        elif outcome == "skipped":
            status = "unsupported" if cell.examples == 0 and cell.unsupported else "skipped"
        else:
            status = "error" if outcome == "failed" and cell.failure is None else cell.status()
        record = {
            "test": nodeid,
            "adapter": cell.adapter,
            "norm": cell.norm,
            "dtype": cell.dtype,
            "policy": _policy(cell.adapter),
            **_policy_dtypes(cell.adapter, cell.norm, cell.dtype),
            "property": cell.prop,
            "verdict": status,
            "examples": cell.examples,
            "unsupported": cell.unsupported,
            "drawn": {
                "judged": cell.judged,
                "rejected": cell.rejected,
                "first_judged_after": cell.first_judged_after,
            },
            "seconds": round(time.monotonic() - cell.started, 3),
        }
        if _release():
            record["release"] = _release()
        if cell.time is not None:
            record["time"] = cell.time
        record.update(cell.counters)
        if message and status in ("error", "skipped"):
            record["message"] = message[:2000]
        elif status in ("finding", "crashed", "timed out", "protocol error"):
            record["message"] = cell.failure.message()[:2000]
        shown = cell.failure or (cell.expected[1] if cell.expected else None) or cell.worst_pass
        if shown is not None:
            c = shown.comparison
            record.update(
                clause=shown.clause,
                what=shown.what,
                worst_error=c.worst_error,
                budget=c.budget,
                ratio=c.ratio,
                ulps=c.ulps,
                basis=shown.basis,
                index=list(c.index),
            )
        case = cell.failure_case or (cell.expected[2] if cell.expected else None)
        if case is not None:
            record.update(_levels(cell, case))
            record["example"] = case.describe()
            if case.x.size <= SMALL:
                record["example"]["x"] = case.x.tolist()
                record["reference"] = _reference(case)
            record["repro"] = cell.repro(case)
        if cell.observations:
            record["observations"] = cell.observations
        if cell.first_reported is not None:
            record["first_reported"] = cell.first_reported
        if cell.expected:
            entry = cell.expected[0]
            record.update(divergence_clause=entry.clause, reason=entry.reason, severity=entry.severity)
            if entry.bug:
                record["bug"] = entry.bug
            record["divergence_clauses"] = sorted(cell.explained | {entry.clause})
        if cell.failure is not None and cell.missed:
            record["considered"] = [
                {
                    "clause": entry.clause,
                    "miss": judged.miss if judged.miss < float("inf") else 1e308,
                    "where": judged.where,
                }
                for entry, judged in cell.missed
            ]
        self._result(record)

    def _result(self, record: dict) -> None:
        self.counts[record["verdict"]] += 1
        self._write({"kind": "result", **record})

    def finish(self, exitstatus: int) -> None:
        """The closing record: its absence marks an interrupted run."""
        self._write(
            {
                "kind": "end",
                "finished": now(),
                "exitstatus": int(exitstatus),
                "interrupted": int(exitstatus) == 2,
                "counts": dict(self.counts),
            }
        )


def _levels(cell, case) -> dict:
    """NUM.L5: the level of the example shown (a finding's, or the divergence's that explained it),
    every level its cell failed or diverged at, and the drawn regime in words."""
    from normconf.vocabulary import levels

    acc = cell.acc
    if cell.abnormal == "protocol error":  # the plug-in's protocol, at no level of the spec
        return {"regime": levels.regime(case, acc)}
    shown = levels.of_example(case, acc, cell.failure.clause) if cell.failure else cell.expected[0].level
    return {
        "level": shown,
        "levels": sorted(cell.levels | {shown}, key=levels.LEVELS.index),
        "regime": levels.regime(case, acc),
    }


def _sampling(seed: int | None, origin: str) -> str:
    """How the session's examples were drawn, in words (the seed actually used and where it came from)."""
    if seed is None:
        return "random: no seed"
    return f"seed {seed} ({origin}): each property x adapter x norm x dtype from its own seed derived from it"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _commit() -> dict:
    """The git commit of the suite's source tree, when it is a checkout (None for an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {
        "commit": head.stdout.strip(),
        "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
    }


def _reference(case) -> dict | None:
    """What the reference answers on the example (forward output, and new state where it keeps one)."""
    from normconf import reference as R

    try:
        out = getattr(R, case.norm)(case.x, **case.params)
    except R.ClauseError as exc:
        return {"error": str(exc)}
    if hasattr(out, "y"):
        answer = {"y": out.y.tolist()}
        if getattr(out, "state", None) is not None:
            answer["state"] = {"mean": out.state.mean.tolist(), "var": out.state.var.tolist()}
        return answer
    return {"y": out.tolist()}


def _text(value):
    return None if value is None else str(value)


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
