"""`normconf check`: a verdict on one implementation - yours - against the spec.

    normconf check my_norms.py                     every @implementation in the file
    normconf check my_norms.py:rms_norm --profile default --norms rms_norm --dtypes float32
    normconf check mypackage.norms:MyAdapter --results out/ --report out/index.html

The conformance suite runs on the plug-in alone (in a worker process, so a crash is a verdict too);
the verdict lists each norm x property x dtype with its worst error against the budget, then the most telling
finding in full: the clause it breaks, what would explain it, and a repro script.

Exit status: 0 CONFORMS (no finding, no error, and every declared norm judged by at least one property
on at least one example); 1 DOES NOT CONFORM; 2 the implementation could not be loaded (a bad
declaration names the parameter and the valid values); 3 NOT CHECKED - some norm had every property
unsupported, skipped or only recorded, so nothing about it was judged; 130 INTERRUPTED (Ctrl-C: what
was judged is printed, no verdict).

A plug-in that raises, or returns the wrong type, dtype or shape, gets a protocol error after its
first example (not shrunk) and the rest of that norm and dtype is skipped; a call past --isolate
seconds is killed, its cell timed out and the rest of its norm skipped (a line is printed when a call
passes 5 s).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from normconf.adapters._isolated import SLOW_MARK

FAILING = ("protocol error", "timed out", "crashed", "finding", "error")
# the finding shown in full is the most telling: a finite input's forward or state failure, then
# gradients, identities, special values (within each, the plug-in's own protocol errors and hangs first)
TELLING = (
    "forward",
    "running_stats",
    "defaults",
    "sync_batch_norm",
    "gradients",
    "identities",
    "special_values",
)
# properties that record what an implementation does with invalid input without judging it (README)
RECORDED_ONLY = ("constraint_violations_are_recorded",)
NOT_CHECKED = 3


def judged(records: list[dict]) -> dict[str, int]:
    """Examples judged per property (record-only properties and unsupported cells judge none)."""
    counts: dict[str, int] = {}
    for r in records:
        if r["property"] in RECORDED_ONLY:
            continue
        counts[r["property"]] = counts.get(r["property"], 0) + (
            r.get("examples", 0) if r["verdict"] not in ("unsupported", "skipped") else 0
        )
    return counts


def unjudged_norms(records: list[dict], declared) -> list[str]:
    """The declared norms no property passed or failed on any example."""
    judged_norms = {
        r["norm"]
        for r in records
        if r["property"] not in RECORDED_ONLY
        and r["verdict"] not in ("unsupported", "skipped")
        and r.get("examples", 0) > 0
    }
    return [norm for norm in declared if norm not in judged_norms]


def main(args) -> int:
    from normconf import adapters
    from normconf.adapters.plugin import PluginError
    from normconf.conformance import workers
    from normconf.reports import results

    try:
        adapter = adapters.get(args.implementation)
    except (PluginError, adapters.UnknownAdapter) as exc:
        print(f"normconf check: {str(exc).strip(chr(34))}", file=sys.stderr)
        return 2
    out = Path(args.results) if args.results else Path(tempfile.mkdtemp(prefix="normconf-check-"))
    pytest_args = [
        "--profile",
        args.profile,
        *(["--seed", str(args.seed)] if args.seed is not None else []),
        *(["--norms", args.norms] if args.norms else []),
        *(["--dtypes", args.dtypes] if args.dtypes else []),
        *(["--isolate", f"{args.isolate:g}"] if args.isolate else []),
    ]
    declared = ", ".join(f"{norm} ({', '.join(d.dtypes)})" for norm, d in adapter.declarations.items())
    print(f"checking {args.implementation}: {declared}; profile {args.profile}", flush=True)
    code = workers.run(
        [args.implementation],
        1,
        pytest_args,
        out,
        quiet=True,
        echo=SLOW_MARK,
        progress=workers.PROGRESS_EVERY,
        per_norm=True,
    )
    files = sorted(out.glob("worker-*.jsonl"))
    records = [r for run in results.load(files) for r in run.results] if files else []
    if not records:
        log = out / "worker-1.log"
        print(log.read_text(encoding="utf-8")[-3000:] if log.exists() else "no results", file=sys.stderr)
        print(f"verdict: NOT CHECKED (the suite ended with exit status {code} before any result)")
        return NOT_CHECKED
    print(verdict_table(records))
    failing = sorted((r for r in records if r["verdict"] in FAILING), key=telling)
    interrupted = code == workers.INTERRUPTED
    for record in failing[:1]:
        print(f"\nfinding ({record['property']}, {record['norm']}, {record['dtype']}):")
        print("  " + record.get("message", "(no message)").replace("\n", "\n  "))
        if record.get("example"):
            print(f"  example: {record['example'].get('params')} shape {record['example'].get('shape')}")
        if record.get("repro"):
            script = out / "repro.py"
            script.write_text(record["repro"], encoding="utf-8")
            print(f"  repro (python {script}):\n    " + record["repro"].rstrip().replace("\n", "\n    "))
    passed = sum(r["verdict"] == "pass" and r["property"] not in RECORDED_ONLY for r in records)
    counts = judged(records)
    print("examples judged: " + ", ".join(f"{prop} {n}" for prop, n in sorted(counts.items())))
    if args.report:
        from normconf.reports import html

        print(f"report: {html.write(files, args.report, None)}")
    print(f"results: {out}")
    if interrupted:
        print(
            f"verdict: INTERRUPTED - stopped by Ctrl-C after {len(records)} checks "
            f"({len(failing)} failing so far); not a verdict on the implementation"
        )
        return workers.INTERRUPTED
    if failing:
        print(
            f"verdict: DOES NOT CONFORM - {len(failing)} of {len(records)} checks fail "
            f"(clauses {', '.join(sorted({r.get('clause') or r['property'] for r in failing}))})"
        )
        return 1
    unjudged = unjudged_norms(records, adapter.declarations)
    if not passed or unjudged or code not in (0, 5):
        why = (
            f"nothing judged {', '.join(unjudged)}: every property was unsupported, skipped or only recorded"
            if unjudged
            else f"no property could run (exit status {code})"
        )
        print(f"verdict: NOT CHECKED - {why}; see {out}/worker-1.log")
        return NOT_CHECKED
    print(
        f"verdict: CONFORMS - {passed} checks pass on {sum(counts.values())} judged examples"
        + (f", {len(records) - passed} not applicable" if len(records) > passed else "")
    )
    return 0


def telling(record: dict) -> tuple:
    """Sort key: how directly a failing record names the bug - its property (TELLING; a protocol
    error, hang or crash first within it: nothing else of the call could be judged), a diagnosed one
    before an undiagnosed one, then the one furthest over its budget."""
    module = record.get("test", "").split("::")[0].rsplit("/", 1)[-1].removeprefix("test_")
    module = module.removesuffix(".py")
    rank = TELLING.index(module) if module in TELLING else len(TELLING)
    abnormal = record["verdict"] in ("protocol error", "timed out", "crashed")
    diagnosed = "it agrees with the reference" in record.get("message", "")
    return rank, not abnormal, not diagnosed, -(record.get("ratio") or 0)


def verdict_table(records: list[dict]) -> str:
    """One line per norm x property x dtype: verdict, worst error against its budget, clause."""
    lines = []
    for r in sorted(records, key=lambda r: (r["norm"], r["property"], r["dtype"])):
        if r.get("ratio") is not None and r["verdict"] in ("pass", "finding"):
            detail = (
                f"worst {r['worst_error']:.2e} vs budget {r['budget']:.2e} ({r['ratio']:.2g}x, "
                f"{r.get('clause')}, {r.get('basis')}) over {r['examples']} examples"
            )
        elif r["verdict"] in ("unsupported", "skipped"):
            detail = (r.get("message") or "; ".join(r.get("unsupported", {})) or "")[:110]
        else:
            detail = (r.get("message") or "")[:110]
        lines.append(
            f"  {r['norm']:<20} {r['property']:<40} {r['dtype']:<9} {r['verdict'].upper():<12} {detail}"
        )
    return "\n".join(lines)
