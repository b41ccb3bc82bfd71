"""`normconf check`: a verdict on one implementation - yours - against the spec.

    normconf check my_norms.py                     every @implementation in the file
    normconf check my_norms.py:rms_norm --profile default --norms rms_norm --dtypes float32
    normconf check mypackage.norms:MyAdapter --results out/ --report out/index.html

The conformance suite runs on the plug-in alone (in a worker process, so a crash is a verdict too);
the verdict lists each norm x property x dtype with its worst error against the budget, then the most telling
finding in full: the clause it breaks, what would explain it, and a repro script.

The verdict is given in levels (spec/numerics.md NUM.L1-L5): semantics, accuracy, range and special
values each hold, are limited (range only: the statistics' declared dtype overflows, and the
implementation computes what NUM.D1's model says - named with the magnitude where it starts) or fail;
one cause counts once, the failing checks of one level and regime grouped under it.

Exit status: 0 CONFORMS (every required level holds - by default every level holds or is limited - no
protocol error, and every declared norm judged by at least one property on at least one example);
1 DOES NOT CONFORM (a required level fails, or the implementation broke the protocol, crashed or hung);
2 the implementation could not be loaded or an argument is invalid (the message names it); 3 NOT
CHECKED - some norm had every property unsupported, skipped or only recorded, so nothing about it was
judged; 130 INTERRUPTED (Ctrl-C: what was judged is printed, no verdict). `--require LEVEL[,LEVEL]`
judges exactly those levels, each of which must hold (requiring range refuses a range limit); the
others are printed, not judged.

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
ABNORMAL = ("protocol error", "timed out", "crashed", "error")  # no level: the call itself broke
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
    from normconf.vocabulary import levels

    explicit = bool(getattr(args, "require", "").strip())  # --require: each level named must hold
    try:
        required = parse_required(getattr(args, "require", ""), levels.LEVELS)
    except ValueError as exc:
        print(f"normconf check: {exc}", file=sys.stderr)
        return 2
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
    states = levels.states(records)
    abnormal = sorted((r for r in records if r["verdict"] in ABNORMAL), key=telling)
    failing = sorted((r for r in records if r["verdict"] in FAILING), key=telling)
    interrupted = code == workers.INTERRUPTED
    print("\nlevels (spec NUM.L1-L5):")
    for line in level_lines(states, required):
        print("  " + line)
    judged_failing = [r for r in failing if r["verdict"] == "finding" and r.get("level") in required]
    for record in (abnormal + judged_failing)[:1]:
        print(f"\nfinding ({record['property']}, {record['norm']}, {record['dtype']}):")
        print("  " + record.get("message", "(no message)").replace("\n", "\n  "))
        if record.get("example"):
            print(f"  example: {record['example'].get('params')} shape {record['example'].get('shape')}")
        if record.get("repro"):
            script = out / "repro.py"
            script.write_text(record["repro"], encoding="utf-8")
            print(f"  repro (python {script}):\n    " + record["repro"].rstrip().replace("\n", "\n    "))
    passed = sum(
        r["verdict"] in ("pass", "expected divergence") and r["property"] not in RECORDED_ONLY
        for r in records
    )
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
    failed_levels = [
        level
        for level in required
        if states[level]["state"] == levels.FAILS
        or (states[level]["state"] == levels.LIMITED and explicit)  # a promised level must hold
    ]
    if abnormal:
        kinds = sorted({r["verdict"] for r in abnormal})
        what = (
            "raise normconf.adapters.Unsupported for inputs it does not support, or declare "
            "refuses={parameter: [values]}; return an array of the input's shape and dtype"
            if "protocol error" in kinds
            else "see the call above"
        )
        print(
            f"verdict: DOES NOT CONFORM - {len(abnormal)} of {len(records)} checks end in "
            f"{', '.join(kinds)}: the implementation's, not a clause's ({what})"
        )
        return 1
    if failed_levels:
        strongest = failed_levels[0]
        state = "is limited" if states[strongest]["state"] == levels.LIMITED else "fails"
        print(
            f"verdict: DOES NOT CONFORM at {strongest} ({state}): {cause_text(states[strongest]['records'])}"
        )
        return 1
    unjudged = unjudged_norms(records, adapter.declarations)
    if not passed or unjudged or code not in (0, 1, 5):
        why = (
            f"nothing judged {', '.join(unjudged)}: every property was unsupported, skipped or only recorded"
            if unjudged
            else f"no property could run (exit status {code})"
        )
        print(f"verdict: NOT CHECKED - {why}; see {out}/worker-1.log")
        return NOT_CHECKED
    print("verdict: " + conforms_text(states, required, passed, sum(counts.values())))
    return 0


def parse_required(text: str, known: tuple) -> tuple:
    """--require's levels in the spec's order (every level when empty); an unknown one is refused."""
    if not text.strip():
        return known
    wanted = [part.strip().replace("_", " ") for part in text.split(",") if part.strip()]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(
            f"--require: {', '.join(map(repr, unknown))} is not a conformance level (spec NUM.L5); "
            f"use any of {', '.join(k.replace(' ', '_') for k in known)}"
        )
    return tuple(level for level in known if level in wanted)


def _causes(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by their cause: the range limit's words, else the regime's value kind."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        regime = r.get("regime", "")
        cause = regime.split(": ", 1)[1].split("; here")[0] if ": " in regime else regime.split(",")[0]
        groups.setdefault(cause or "(no regime recorded)", []).append(r)
    return groups


def cause_text(records: list[dict]) -> str:
    """One line per cause: what it is, and the checks it accounts for (one cause counts once)."""
    parts = []
    for cause, group in _causes(records).items():
        checks = sorted({f"{r['norm']} {r['property']} {r['dtype']}" for r in group})
        clauses = sorted({r.get("divergence_clause") or r.get("clause") or "" for r in group} - {""})
        shown = ", ".join(checks[:4]) + (f" and {len(checks) - 4} more" if len(checks) > 4 else "")
        parts.append(f"{cause} [{', '.join(clauses)}] - {len(checks)} checks: {shown}")
    return "; ".join(parts)


def level_lines(states: dict, required: tuple) -> list[str]:
    """A line per level: its state, and the causes that decide it."""
    lines = []
    for level, state in states.items():
        judged_here = "" if level in required else " (not required)"
        detail = f": {cause_text(state['records'])}" if state["records"] else ""
        lines.append(f"{level:<15} {state['state'].upper()}{judged_here}{detail}")
    return lines


def conforms_text(states: dict, required: tuple, passed: int, examples: int) -> str:
    """CONFORMS (the levels that hold); each limit with its cause - the one-line verdict."""
    holding = [level for level in required if states[level]["state"] == "holds"]
    limits = [
        f"{level} limited: {'; '.join(_causes(states[level]['records']))}"
        for level in required
        if states[level]["state"] == "limited"
    ]
    return (
        f"CONFORMS ({', '.join(holding) or 'no level holds outright'})"
        + "".join(f"; {limit}" for limit in limits)
        + f" - {passed} checks pass on {examples} judged examples"
    )


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
        word = (
            "range limited"
            if r.get("level") == "range" and r["verdict"] == "expected divergence"
            else r["verdict"]
        )
        if word == "range limited":
            detail = r.get("regime", "")[:110]
        lines.append(f"  {r['norm']:<20} {r['property']:<40} {r['dtype']:<9} {word.upper():<13} {detail}")
    return "\n".join(lines)
