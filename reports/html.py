"""The HTML report: one self-contained file (inline CSS, JS and SVG; nothing fetched) from one or more
results files, and optionally the porting hazards measured with the adapters installed here.

    build(runs, hazards=None) -> str        write(paths, out, hazards=None) -> Path
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from normconf import __version__
from normconf.adapters.base import NORMS
from normconf.reference import NORMS as RECORDS
from normconf.vocabulary import cpu as _cpu

from . import markdown, plots
from .results import (
    KINDS,
    LEVELS,
    SEVERITY,
    SYMBOL,
    Run,
    cell_levels,
    implementations,
    kinds,
    load,
    matrix,
    release_axis,
)

TITLES = {name: norm.title for name, norm in RECORDS.items()}
SHORT = {"expected divergence": "divergence", "unsupported": "unsupp."}  # matrix cells stay narrow
# verdicts that get a card with example and repro: every one from the worst down to an expected divergence
SHOWN = tuple(SEVERITY[: SEVERITY.index("expected divergence") + 1])


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("normconf.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, pretty=_pretty, slug=lambda s: s.replace(" ", "-"))
    return env


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


SHOWN_VALUES = 8  # a longer list of numbers shows its first values and its length (the repro has them all)


def _numbers(value) -> list | None:
    """The numbers of a (nested) list of numbers, flattened, or None where it holds anything else."""
    if isinstance(value, (int, float)) or value is None:
        return [value]
    if not isinstance(value, list):
        return None
    flat: list = []
    for item in value:
        numbers = _numbers(item)
        if numbers is None:
            return None
        flat.extend(numbers)
    return flat


def _shape(value) -> list[int]:
    return [len(value), *_shape(value[0])] if isinstance(value, list) and value else []


def _abridged(value):
    """`value` with every (nested) list of more than SHOWN_VALUES numbers cut to its first ones, its
    count and shape: an array on the page is a glance, the repro carries it whole."""
    if isinstance(value, dict):
        return {k: _abridged(v) for k, v in value.items()}
    if isinstance(value, list):
        numbers = _numbers(value)
        if numbers is not None and len(numbers) > SHOWN_VALUES:
            shape = "" if len(_shape(value)) == 1 else f", shape {_shape(value)}"
            return [*numbers[:SHOWN_VALUES], f"... {len(numbers)} values{shape} (the repro has them all)"]
        return [_abridged(v) for v in value]
    return value


def _pretty(value) -> str:
    """JSON for a human, on one line per top-level entry; long lists abridged."""
    value = _abridged(value)
    if isinstance(value, dict):
        lines = [f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in value.items()]
        return "{\n " + ",\n ".join(lines) + "\n}"
    return json.dumps(value, default=str)


def _clause(clause_id: str | None) -> dict | None:
    from normconf import spec

    if not clause_id:
        return None
    try:
        c = spec.clause(clause_id)
    except KeyError:
        return {"id": clause_id, "title": "not in this version of the spec", "page": "", "html": ""}
    return {"id": c.id, "title": c.title, "page": c.page, "html": markdown.render(c.text)}


def _runs(runs: list[Run]) -> list[dict]:
    out = []
    for run in runs:
        s = run.session
        if run.end is None:
            incomplete = "no end record: the run was interrupted or is still going; results are partial"
        elif run.end.get("interrupted"):
            incomplete = "the run was interrupted; results are partial"
        else:
            incomplete = ""
        out.append(
            {
                "label": run.label,
                "path": run.path,
                "suite_version": s["suite_version"],
                "commit": (s["commit"] or "unknown")[:12] + (" (modified)" if s.get("dirty") else ""),
                "profile": s["profile"],
                "seed": s["seed"],
                "started": s["started"],
                "finished": run.end["finished"] if run.end else None,
                "host": s.get("host", {}),
                "incomplete": incomplete,
                "results": len(run.results),
            }
        )
    return out


def _issues(runs: list[Run], labels) -> list[dict]:
    """Findings, errors and expected divergences grouped by the clause that explains them."""
    groups: dict[str, dict] = {}
    n = 0
    for i, run in enumerate(runs):
        for r in run.results:
            if r["verdict"] not in SHOWN:
                continue
            n += 1
            key = r.get("divergence_clause") or r.get("clause") or "errors"
            group = groups.setdefault(
                key, {"clause": _clause(key) if key != "errors" else None, "key": key, "items": []}
            )
            # an error (the test itself broke) has no comparison: its numbers show as "—"
            numbers = dict.fromkeys(("worst_error", "budget", "ratio", "ulps", "index", "basis"))
            group["items"].append(
                {
                    **numbers,
                    **r,
                    "id": f"r{n}",
                    "impl": labels[i, r["adapter"]],
                    "checked": _clause(r.get("clause")) if r.get("clause") != key else None,
                    "repro": _shown_repro(r),
                }
            )
    order = lambda g: (min(SEVERITY.index(it["verdict"]) for it in g["items"]), g["key"])  # noqa: E731
    return sorted(groups.values(), key=order)


def _shown_repro(record: dict) -> str | None:
    """The repro the page shows: whole for a finding or an error (its framework-alone call is what an
    upstream report needs); for an expected divergence without that call, which the results file keeps
    (hundreds of them would make the page tens of megabytes)."""
    repro = record.get("repro")
    if not repro or record["verdict"] != "expected divergence" or "FRAMEWORK_ALONE = " not in repro:
        return repro
    kept = [
        line
        for line in repro.splitlines()
        if not line.startswith(("FRAMEWORK_ALONE = ", "print('--- the framework alone ---')"))
    ]
    return "\n".join(kept) + "\n# the framework-alone call of this example: its results record's `repro`\n"


def _glossary(groups: list[dict]) -> list[dict]:
    """Each clause an item compares against (other than its group's), once: the items link to it."""
    seen: dict[str, dict] = {}
    for group in groups:
        for item in group["items"]:
            if item.get("checked") and item["checked"]["id"] not in seen:
                seen[item["checked"]["id"]] = item["checked"]
    return sorted(seen.values(), key=lambda c: c["id"])


def _ratio_rows(runs: list[Run], labels) -> list[dict]:
    rows: dict[tuple[str, str], list[dict]] = {}
    for i, run in enumerate(runs):
        for r in run.results:
            if r.get("ratio") is None:
                continue
            label = (
                f"{r['property']} {r['dtype']} {r.get('what', '')}: "
                f"error {_num(r.get('worst_error'))} / budget "
                f"{_num(r.get('budget'))} = {_num(r['ratio'])} ({r['verdict']})"
            )
            rows.setdefault((labels[i, r["adapter"]], r["norm"]), []).append(
                {"ratio": float(r["ratio"]), "verdict": r["verdict"], "label": label}
            )
    return [
        {
            "impl": impl,
            "norm": norm,
            "svg": plots.ratio_strip(points),
            "worst": max(p["ratio"] for p in points),
        }
        for (impl, norm), points in rows.items()
    ]


def _mixed_precision(runs: list[Run], labels) -> list[dict]:
    """Per implementation x norm x half dtype under a mixed policy (spec MP): the statistics' and the
    output's dtype it declares (MP.N1, MP.N2; a finding where the output's differs), its worst error /
    budget over the properties, its worst verdict and the divergences that explained examples."""
    rows: dict[tuple, dict] = {}
    for i, run in enumerate(runs):
        for r in run.results:
            if r.get("policy") != "mixed":
                continue
            key = (labels[i, r["adapter"]], r["norm"], r["dtype"])
            row = rows.setdefault(
                key,
                {
                    "impl": key[0],
                    "norm": key[1],
                    "dtype": key[2],
                    "mechanism": run.environments.get(r["adapter"], {}).get("mechanism", ""),
                    "statistics": r.get("statistics_dtype", "?"),
                    "output": r.get("output_dtype", "?"),
                    "ratio": None,
                    "verdict": "pass",
                    "divergences": set(),
                },
            )
            if r.get("ratio") is not None and r["verdict"] == "pass":  # a divergence's error is its model's
                row["ratio"] = max(row["ratio"] or 0.0, float(r["ratio"]))
            if SEVERITY.index(r["verdict"]) < SEVERITY.index(row["verdict"]):
                row["verdict"] = r["verdict"]
            row["divergences"] |= set(r.get("divergence_clauses", ()))
    return [{**row, "divergences": sorted(row["divergences"])} for row in rows.values()]


def _environments(runs: list[Run], labels) -> list[dict]:
    rows = []
    for i, run in enumerate(runs):
        for adapter, env in run.environments.items():
            rows.append(
                {
                    **env,
                    "impl": labels.get((i, adapter), adapter),
                    "run": run.label,
                    "cpu": _cpu.summary(env.get("cpu")),
                    "flags": ", ".join(f"{k}={v}" for k, v in env.get("flags", {}).items()),
                }
            )
    return rows


def _invalid_input(runs: list[Run], labels) -> list[dict]:
    """What each implementation did with inputs a C clause rejects (recorded, not judged)."""
    rows = []
    for i, run in enumerate(runs):
        for r in run.results:
            for observed in r.get("observations", []):
                clause, _, answer = observed.partition(": ")
                rows.append(
                    {"impl": labels[i, r["adapter"]], "norm": r["norm"], "case": clause, "answer": answer}
                )
    return rows


def _conventions() -> list[dict]:
    """spec/conventions.md's generated tables (adapters/conventions.py), as HTML."""
    from normconf.adapters import conventions

    out = []
    for norm in NORMS:
        try:
            text = conventions.table(norm)
        except Exception as exc:  # an adapter module that does not import here: say so, keep the rest
            out.append(
                {"norm": norm, "title": TITLES[norm], "html": "", "error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        if text.count("\n") > 1:
            out.append({"norm": norm, "title": TITLES[norm], "html": markdown.table(text.splitlines())})
    return out


def _hazards(found) -> dict | None:
    if found is None:
        return None
    by_norm: dict[str, dict] = {}
    for pair in sorted(found.pairs, key=lambda p: -max(p.forward or 0.0, p.eval or 0.0)):
        entry = by_norm.setdefault(pair.norm, {"norm": pair.norm, "differ": [], "same": []})
        (entry["differ"] if pair.differ else entry["same"]).append(pair)
    trajectories = {"reference (spec defaults)": found.reference_running_var}
    trajectories.update(
        {
            m.adapter + (f" (own schedule, {m.schedule})" if m.schedule else ""): m.running_var
            for m in found.measured.values()
            if m.running_var
        }
    )
    unmeasured = [m for m in found.measured.values() if m.reason]
    return {
        "norms": [by_norm[n] for n in NORMS if n in by_norm],
        "skipped": found.skipped,
        "unmeasured": unmeasured,
        "measured": sorted(found.measured.values(), key=lambda m: (NORMS.index(m.norm), m.adapter)),
        "trajectory": plots.lines(
            trajectories, xlabel="training step", ylabel="running variance (channel mean)"
        )
        if len(trajectories) > 1
        else None,
    }


def _corpus(cases) -> dict | None:
    """The ONNX node-test corpus (conformance.corpus), as the template shows it."""
    if cases is None:
        return None
    rows = []
    for c in cases:
        worst = max((j.ratio for j in c.reference if j.ratio is not None), default=None)
        runners = []
        for name, judged in c.adapters.items():
            if isinstance(judged, str):
                runners.append((name, judged, None))
                continue
            ratios = [j.ratio for j in judged if j.ratio is not None]
            verdict = "disagrees" if any(j.verdict == "disagrees" for j in judged) else "agrees"
            notes = "; ".join(dict.fromkeys(j.reason for j in judged if j.reason))
            runners.append((name, verdict + (f" ({notes})" if notes else ""), max(ratios, default=None)))
        rows.append({"case": c, "worst": worst, "runners": runners})
    counts = Counter(c.verdict for c in cases)
    return {"rows": rows, "counts": counts}


def build(runs: list[Run], hazards=None, corpus=None) -> str:
    """The report's HTML for `runs` (merged), with the porting hazards and the ONNX corpus when given."""
    labels = implementations(runs)
    cells = matrix(runs)
    impls = list(dict.fromkeys(labels[k] for k in labels))
    norms = [n for n in NORMS if any(norm == n for _, norm in cells)]
    details: dict[tuple[str, str], Counter] = {}
    for i, run in enumerate(runs):
        for r in run.results:
            details.setdefault((labels[i, r["adapter"]], r["norm"]), Counter())[r["verdict"]] += 1
    counts = Counter(r["verdict"] for run in runs for r in run.results)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            version=__version__,
            runs=_runs(runs),
            impls=impls,
            norms=norms,
            titles=TITLES,
            cells=cells,
            details=details,
            counts=counts,
            severity=SEVERITY,
            symbol=SYMBOL,
            levels=cell_levels(runs),
            level_names=LEVELS,
            marks=kinds(runs),
            kind_letters=KINDS,
            short=SHORT,
            issues=(issues := _issues(runs, labels)),
            glossary=_glossary(issues),
            ratio_rows=_ratio_rows(runs, labels),
            ratio_axis=plots.ratio_axis(),
            environments=_environments(runs, labels),
            mixed=_mixed_precision(runs, labels),
            conventions=_conventions(),
            hazards=_hazards(hazards),
            corpus=_corpus(corpus),
            releases=release_axis(runs),
            invalid=_invalid_input(runs, labels),
        )
    )


def write(paths, out, hazards=None, corpus=None) -> Path:
    """Load the results files, build the report, write it to `out` (folders made as needed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build(load(paths), hazards, corpus), encoding="utf-8")
    return out
