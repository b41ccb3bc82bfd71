"""`normconf bench`: the figures behind the performance goals, each printed next to its target.

Figures, not timed tests: a noisy machine changes them, so nothing here passes or fails a build.
  reference   reference forward time over NumPy's own mean + var on 8M float64 elements (ratio)
  startup     seconds to import each framework in a fresh process
  throughput  adapter calls per second after warm-up, small and medium shapes, forward and gradient
  rate        per adapter in a finished run's results: suite examples/s, the raw warm call rate, their
              ratio and target, compilations per example, and where the time went (clock phases)
  discovery   examples and seconds until known divergences (a sample, one per clause) are first reported
  suite       wall time of whole profiles over every installed adapter, report included, each followed
              by its rate figures (`--suite quick,default`): quick twice, with an empty persistent
              compilation cache (cold) and again with what it wrote (warm); default warm after them
  mutants     the mutation corpus (conformance/meta/mutants.py) through `--profile`: which wrong
              implementations it kills, by which clause, and that every correct one passes
  stability   `--profile` over every installed adapter once per seed of `--seeds`: per seed and adapter
              the findings and errors nobody has triaged (target 0; the runs are kept in `--keep`,
              and a kept run of the same profile and seed is read again instead of re-run)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {"reference": 3.0, "throughput": 20.0}
# seconds of a whole profile over every installed adapter, report included, by the compilation cache's state
SUITE_TARGETS = {("quick", "cold"): 480.0, ("quick", "warm"): 300.0, ("default", "warm"): 1200.0}
# distinct XLA programs (compiled + loaded from the persistent cache) a compiling adapter may need over
# the quick profile: its program pool (conformance/regimes.PROGRAMS) x norms x dtypes, and what the
# properties derive from it
PROGRAM_BUDGET = 400
# suite examples/s per adapter: eager frameworks RATE_EAGER (or RATE_SHARE of their raw call rate where
# that is lower), frameworks that compile per configuration and shape RATE_COMPILED
RATE_EAGER, RATE_SHARE, RATE_COMPILED = 200.0, 0.10, 20.0
SHAPES = {"small": (2, 3, 4), "medium": (8, 16, 32, 32)}
# untriaged findings per seed and adapter the stability figure allows: every finding of a sampled run is
# a known divergence, a tolerance correction or a bug entry before it is 0 (issue 32)
STABILITY_TARGET = 0
UNTRIAGED = ("finding", "error", "crashed", "timed out", "protocol error")
PROPERTY_OF = {
    "forward": "forward_matches_reference",
    "gradient": "gradients_match_reference_vjp",
    "state": "state_after_steps_then_eval",
}
# how many known divergences the discovery figures sample (one per clause, in the order they are listed)
DISCOVERY_SAMPLE = 8


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def reference_ratio(shape=(64, 128, 1024)) -> list[tuple[str, float]]:
    """(norm, seconds of the reference forward / seconds of NumPy's mean and var) for every norm record,
    on 8M float64 values (by default) with the parameters of a typical call (Norm.typical_params)."""
    from normconf import reference as R

    x = np.random.default_rng(0).normal(size=shape)
    numpy = _best(lambda: (x.mean(axis=-1), x.var(axis=-1)))
    ratios = []
    for name, norm in R.NORMS.items():
        params = norm.typical_params(x, {})
        ratios.append((name, _best(lambda: norm.forward(x, **params), 3) / numpy))  # noqa: B023
    return ratios


def startup() -> list[tuple[str, float | None]]:
    """(frameworks, seconds) to import each built-in adapter's framework in a fresh process, once per
    distinct import (Adapter.startup)."""
    from normconf import adapters

    statements: dict[str, str] = {}
    for name in adapters.built_in():
        adapter = adapters.load(name)
        label = " + ".join(adapter.requires) + (f" ({name})" if name.startswith("keras[") else "")
        statements.setdefault(adapter.startup(), label)
    figures = []
    for statement, label in statements.items():
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", statement], capture_output=True)
        figures.append((label, time.perf_counter() - start if done.returncode == 0 else None))
    return figures


def throughput(names: list[str], calls: int = 20) -> list[tuple[str, str, str, float]]:
    """(adapter, shape, mode, calls/s) for each adapter's first declared norm, after one warm-up call."""
    from normconf import adapters

    figures = []
    for name in names:
        adapter = adapters.get(name)
        if not adapter.available()[0]:
            continue
        norm = next(iter(adapter.declarations))
        declaration = adapter.declarations[norm]
        dtype = "float32" if "float32" in declaration.dtypes else declaration.dtypes[-1]
        for label, shape in SHAPES.items():
            x = np.random.default_rng(0).normal(size=shape)
            params = _params(norm, declaration, x)
            for mode, cotangent in (
                ("forward", None),
                ("gradient", np.ones(shape) if declaration.gradients else None),
            ):
                if mode == "gradient" and cotangent is None:
                    continue
                try:
                    adapter.run(norm, x, params, dtype=dtype, cotangent=cotangent)  # warm-up: compile, start
                    start = time.perf_counter()
                    for k in range(calls):
                        adapter.run(norm, x + k, params, dtype=dtype, cotangent=cotangent)
                    figures.append((name, label, f"{norm} {mode}", calls / (time.perf_counter() - start)))
                except Exception as exc:  # an unsupported shape or layout: say so, go on
                    figures.append((name, label, f"{norm} {mode}: {type(exc).__name__}", float("nan")))
    return figures


def _params(norm: str, declaration, x: np.ndarray) -> dict:
    """The framework's declared defaults, completed as the smoke test does (groups, size, eps)."""
    params = declaration.defaults()
    if norm == "group_norm":
        params["groups"] = math.gcd(x.shape[params.get("channel_axis", 1) % x.ndim], 4)
    if norm == "local_response_norm":
        params.setdefault("size", 3)
    if norm == "rms_norm" and params.get("eps") is None:
        params["eps"] = 1e-6
    if norm == "channel_normalize":
        channels = x.shape[params.get("channel_axis", -3) % x.ndim]
        params["mean"], params["std"] = np.zeros(channels), np.ones(channels)
    return params


def rates(folder: Path) -> list[dict]:
    """Per adapter over a results folder's tests (warm-up included): examples, seconds, examples per
    second, XLA compilations and persistent-cache hits, and the seconds per clock phase
    (conformance/clock.py) summed."""
    from normconf.reports import results

    totals: dict[str, dict] = {}
    for record in (r for run in results.load(sorted(folder.glob("*.jsonl"))) for r in run.results):
        if record.get("seconds"):
            total = totals.setdefault(
                record["adapter"], {"adapter": record["adapter"], "examples": 0, "seconds": 0.0, "time": {}}
            )
            total["examples"] += record["examples"]
            total["seconds"] += record["seconds"]
            for counter in ("compilations", "cache_hits"):
                if counter in record:
                    total[counter] = total.get(counter, 0) + record[counter]
            for phase, seconds in record.get("time", {}).items():
                total["time"][phase] = total["time"].get(phase, 0.0) + seconds
    return [
        {**total, "rate": total["examples"] / total["seconds"]}
        for _, total in sorted(totals.items())
        if total["seconds"] > 0
    ]


def rate_target(name: str, raw: float | None) -> float:
    """Suite examples/s an adapter must reach: RATE_COMPILED where it compiles per configuration and shape,
    else RATE_EAGER, or RATE_SHARE of its raw warm call rate where that is lower."""
    from normconf import adapters

    if adapters.load(name).compiles:
        return RATE_COMPILED
    return RATE_EAGER if raw is None or raw != raw else min(RATE_EAGER, RATE_SHARE * raw)


def rate_table(folder: Path, raw: dict, programs_budget: bool = False) -> list[str]:
    """The lines of the rate figures: per adapter suite examples/s, raw warm calls/s (small shape,
    forward), their ratio, the target, XLA programs (compiled + loaded from the persistent cache),
    compilations per example, cache hits and where the time went. `programs_budget`: hold compiling
    adapters to PROGRAM_BUDGET (a quick-profile run)."""
    from normconf.conformance.clock import PHASES

    lines = [
        f"  {'adapter':<18} {'examples':>8} {'ex/s':>7} {'raw/s':>8} {'ratio':>6} {'target':>6} "
        f"{'programs':>8} {'comp/ex':>7} {'hits':>5}  time: " + " ".join(f"{p}" for p in (*PHASES, "engine"))
    ]
    for figure in rates(folder):
        name, rate = figure["adapter"], figure["rate"]
        calls = raw.get(name)
        target = rate_target(name, calls)
        ratio = f"{rate / calls:6.3f}" if calls else f"{'-':>6}"
        compiled, hits = figure.get("compilations"), figure.get("cache_hits", 0)
        per = f"{compiled / max(figure['examples'], 1):7.2f}" if compiled is not None else f"{'-':>7}"
        programs = f"{compiled + hits:8d}" if compiled is not None else f"{'-':>8}"
        shares = " ".join(
            f"{100 * figure['time'].get(p, 0.0) / figure['seconds']:.0f}%" for p in (*PHASES, "engine")
        )
        verdict = "ok" if rate >= target else "MISSED"
        if programs_budget and compiled is not None:
            within = compiled + hits <= PROGRAM_BUDGET
            verdict += f", programs {'ok' if within else 'MISSED'} (<= {PROGRAM_BUDGET})"
        lines.append(
            f"  {name:<18} {figure['examples']:8d} {rate:7.1f} {calls or float('nan'):8.0f} {ratio} "
            f"{target:6.0f} {programs} {per} {hits if compiled is not None else '-':>5}  {shares}  {verdict}"
        )
    return lines


def raw_rates(names: list[str]) -> dict:
    """adapter -> warm calls/s of its first norm's forward on the small shape (throughput)."""
    return {
        name: rate
        for name, label, what, rate in throughput(names)
        if label == "small" and what.endswith("forward") and rate == rate
    }


def discovery(profile: str = "default") -> list[tuple[str, str, dict | None]]:
    """For a sample of known divergences (one per clause): (cell, clause, {"examples", "seconds"} of the
    first report, or None when the profile never drew an example that shows it)."""
    import normconf.conformance as suite
    from normconf import adapters
    from normconf.conformance.divergences import KNOWN
    from normconf.reports import results

    cells, clauses = [], set()
    for entry in KNOWN:  # one entry per clause, named by an exact adapter that is installed here
        if (
            entry.clause in clauses
            or entry.adapters not in adapters.names()
            or len(cells) >= DISCOVERY_SAMPLE
        ):
            continue
        if adapters.get(entry.adapters).available()[0]:
            clauses.add(entry.clause)
            cells.append(
                (entry.adapters, entry.norm, PROPERTY_OF[entry.shows_in], entry.example()[1], entry.clause)
            )
    figures = []
    for adapter, norm, prop, dtype, clause in cells:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.jsonl"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    str(Path(suite.__file__).parent / _file(prop)),
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--adapters",
                    adapter,
                    "--profile",
                    profile,
                    "--results",
                    str(out),
                    "-k",
                    f"{adapter}-{norm}-{dtype}",
                ],
                capture_output=True,
            )
            found = [
                r
                for run in results.load([out])
                for r in run.results
                if r.get("property") == prop and r.get("divergence_clause") == clause
            ]
        figures.append(
            (
                f"{adapter} {norm} {dtype} {prop}",
                clause,
                next((r.get("first_reported") for r in found if r.get("first_reported")), None),
            )
        )
    return figures


def _file(prop: str) -> str:
    return {
        "state_after_steps_then_eval": "test_running_stats.py",
        "forward_matches_reference": "test_forward.py",
        "gradients_match_reference_vjp": "test_gradients.py",
    }[prop]


def suite_wall_time(profile: str, out: Path, cache: Path) -> tuple[float, dict]:
    """Seconds of `normconf run --profile <profile>` over every installed adapter, report included,
    results kept in `out`, the persistent compilation cache in `cache`; and the verdict counts."""
    import os

    from normconf.adapters import _compile_cache

    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "normconf.cli",
            "run",
            "--profile",
            profile,
            "--results",
            str(out),
            "--report",
            str(out / "index.html"),
        ],
        capture_output=True,
        env={**os.environ, _compile_cache.FOLDER: str(cache), _compile_cache.SWITCH: "1"},
    )
    elapsed = time.perf_counter() - start
    counts: dict = {}
    for path in out.glob("worker-*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("kind") == "result":
                counts[record["verdict"]] = counts.get(record["verdict"], 0) + 1
    return elapsed, counts


def seeded_run(profile: str, seed: int, folder: Path) -> Path:
    """`normconf run --profile <profile> --seed <seed>` over every installed adapter into `folder`
    (no report), unless `folder` already holds a finished run of that profile and seed."""
    from normconf.reports import results

    runs = results.load(sorted(folder.glob("worker-*.jsonl"))) if folder.is_dir() else []
    if runs and all(r.session.get("profile") == profile and r.session.get("seed") == seed for r in runs):
        return folder
    subprocess.run(
        [sys.executable, "-m", "normconf.cli", "run", "--profile", profile, "--seed", str(seed)]
        + ["--results", str(folder), "--report", ""],
        capture_output=True,
    )
    return folder


def untriaged(folder: Path) -> dict[str, list[dict]]:
    """Per adapter, the results of a run nobody has accounted for (UNTRIAGED verdicts)."""
    from normconf.reports import results

    found: dict[str, list[dict]] = {}
    for run in results.load(sorted(folder.glob("worker-*.jsonl"))):
        for record in run.results:
            found.setdefault(record["adapter"], [])
            if record["verdict"] in UNTRIAGED:
                found[record["adapter"]].append(record)
    return found


def stability_table(profile: str, seeds: list[int], keep: Path) -> list[str]:
    """The stability figure: per adapter, the untriaged results of each seed's run, and the cells."""
    per_seed = {seed: untriaged(seeded_run(profile, seed, keep / f"{profile}-seed-{seed}")) for seed in seeds}
    adapters_seen = sorted({a for found in per_seed.values() for a in found})
    lines = [f"  {'adapter':<22} " + " ".join(f"seed {s:<4}" for s in seeds) + "  cells"]
    for adapter in adapters_seen:
        counts = [len(per_seed[s].get(adapter, [])) for s in seeds]
        cells = sorted(
            {f"{r['norm']} {r['dtype']} {r['property']}" for s in seeds for r in per_seed[s].get(adapter, [])}
        )
        lines.append(f"  {adapter:<22} " + " ".join(f"{c:<9}" for c in counts) + "  " + "; ".join(cells))
    total = sum(len(v) for found in per_seed.values() for v in found.values())
    verdict = "ok" if total <= STABILITY_TARGET else "MISSED"
    lines.append(f"  untriaged over seeds {seeds}: {total} (target {STABILITY_TARGET}) {verdict}")
    return lines


def main(args) -> int:
    import os

    from normconf import adapters

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    sections = set(args.sections.split(","))
    names = [n.strip() for n in args.adapters.split(",") if n.strip()] or adapters.names()
    if "reference" in sections:
        print(f"reference forward / NumPy mean+var on 8M float64 (target <= {TARGETS['reference']:g}x)")
        for norm, ratio in reference_ratio():
            print(f"  {norm:<16} {ratio:5.2f}x  {'ok' if ratio <= TARGETS['reference'] else 'MISSED'}")
    if "startup" in sections:
        print("framework import in a fresh process (seconds)")
        for name, seconds in startup():
            print(f"  {name:<16} {'not installed' if seconds is None else f'{seconds:6.2f}'}")
    if "throughput" in sections:
        print(f"adapter calls per second after warm-up (target >= {TARGETS['throughput']:g} on small shapes)")
        for name, label, what, rate in throughput(names):
            verdict = (
                ""
                if label != "small" or rate != rate
                else ("ok" if rate >= TARGETS["throughput"] else "MISSED")
            )
            print(f"  {name:<18} {label:<7} {what:<32} {rate:8.1f}/s  {verdict}")
    profiles = [p for p in args.suite.split(",") if p]
    raw = raw_rates(names) if "rate" in sections or profiles else {}
    if "rate" in sections:
        folder = Path(args.results)
        print(f"suite examples per second per adapter, from {folder}")
        print("\n".join(rate_table(folder, raw)))
    if "discovery" in sections:
        print(f"known divergences: examples and seconds to the first report ({args.profile} profile)")
        for cell, clause, first in discovery(args.profile):
            shown = (
                "not reported"
                if first is None
                else f"{first['examples']:4d} examples {first['seconds']:7.2f}s"
            )
            print(f"  {clause:<7} {cell:<62} {shown}")
    if "mutants" in sections:
        from normconf.conformance.meta import mutants

        target = mutants.KILL_TARGETS.get(args.profile)
        with tempfile.TemporaryDirectory(prefix="normconf-mutants-") as folder:
            rows = mutants.kill_table(args.profile, Path(folder))
        print(f"mutation corpus through the {args.profile} profile (kill target {target or '-'})")
        for row in rows:
            state = (
                ("killed" if row["killed"] else "SURVIVED")
                if row["wrong"]
                else ("FAILED" if row["killed"] else "passes")
            )
            detail = f"{row['clause']:<8} {row['property']}" if row["killed"] else ""
            print(f"  {'wrong' if row['wrong'] else 'correct':<7} {row['name']:<32} {state:<9} {detail}")
        rate = mutants.kill_rate(rows)
        wrongly = sum(r["killed"] for r in rows if not r["wrong"])
        verdict = "" if target is None else ("ok" if rate >= target and not wrongly else "MISSED")
        print(
            f"  killed {rate:.0%} of the wrong, {wrongly} correct failed (target >= {target:.0%}) {verdict}"
        )
    if "stability" in sections:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        print(f"untriaged findings per seed and adapter, {args.profile} profile (kept in {args.keep})")
        print("\n".join(stability_table(args.profile, seeds, Path(args.keep))))
    runs = [p for p in profiles for _ in range(2 if p == "quick" else 1)]  # quick: cold, then warm
    with tempfile.TemporaryDirectory(prefix="normconf-compile-cache-") as cache:
        for profile in runs:
            with tempfile.TemporaryDirectory(prefix=f"normconf-{profile}-") as folder:
                warm = any(Path(cache).iterdir())  # a profile asked for alone starts cold
                state = "warm" if warm else "cold"
                elapsed, counts = suite_wall_time(profile, Path(folder), Path(cache))
                target = SUITE_TARGETS.get((profile, state))
                verdict = "" if target is None else ("ok" if elapsed <= target else "MISSED")
                limit = f"target <= {target:g}s, ratio {elapsed / target:.2f}" if target else "no target"
                print(
                    f"{profile} profile, compilation cache {state}, over every installed adapter, report "
                    f"included: {elapsed:.0f}s ({limit}) {verdict}  {counts}"
                )
                print("\n".join(rate_table(Path(folder), raw, programs_budget=profile == "quick")))
    return 0
