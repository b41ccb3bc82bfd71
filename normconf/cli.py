"""The `normconf` command. Subcommands arrive with the features that fill them; none is a stub."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from normconf import __version__
from normconf.pytest_plugin import DEFAULT_SEED

SEED_HELP = (
    "the seed each property x adapter x norm x dtype derives its examples from: the same seed, the same "
    f"examples (default: {DEFAULT_SEED} under the quick profile, else one drawn and recorded)"
)


def _clauses(args) -> int:
    from normconf import spec

    found = [
        c for c in spec.clauses().values() if not args.prefix or c.id.startswith(args.prefix.upper() + ".")
    ]
    if not found:
        print(f"no clause starts with {args.prefix!r}", file=sys.stderr)
        return 2
    for c in found:
        print(f"{c.id:<8} {c.title}  ({c.page})")
        if args.text:
            print("    " + c.text.replace("\n", "\n    ") + "\n")
    return 0


def _adapters(args) -> int:
    from normconf import adapters

    for name in adapters.names():
        adapter = adapters.get(name)
        ok, reason = adapter.available()
        status = "available" if ok else f"skipped: {reason}"
        print(f"{name:<20} {status}")
        print(f"{'':<20} {', '.join(adapter.declarations)}")
    return 0


def _bugs(args) -> int:
    from normconf import adapters
    from normconf.conformance.divergences import framework_alone, known

    wanted = [name for name in args.adapters.split(",") if name]
    unknown = [name for name in wanted if name not in adapters.names()]
    if unknown:
        print(f"--adapters: no adapter named {', '.join(unknown)} (see `normconf adapters`)", file=sys.stderr)
        return 2
    for entry in (e for e in known() if e.bug):
        names = [n for n in adapters.names() if entry.names(n) and (not wanted or n in wanted)]
        if not names:
            continue
        print(f"{entry.clause} {entry.norm} in {', '.join(names)}: {entry.bug}")
        for name in names if args.repro else ():
            ok, why = adapters.get(name).available()
            script = framework_alone(entry, name) if ok else None
            alone = script or f"# {why if not ok else 'this adapter writes no framework-alone script'}\n"
            print(f"# --- {name}, {entry.clause}: the framework alone ---\n{alone}")
    return 0


def _conventions(args) -> int:
    from normconf.adapters import conventions

    if args.write:
        print(f"wrote {conventions.write()}")
        return 0
    if args.check:
        if conventions.current() != conventions.generated():
            print(
                "spec/conventions.md disagrees with the adapters' declarations; "
                "run `normconf conventions --write`",
                file=sys.stderr,
            )
            return 1
        return 0
    print(conventions.generated())
    return 0


def _run(args) -> int:
    """The conformance suite over the installed adapters in parallel workers (one group of adapters
    each), a results file per worker in one folder, then a summary and the HTML report. With
    --versions: once per requested release, each in its own folder, then one report over them all."""
    from pathlib import Path

    from normconf import adapters
    from normconf.adapters.base import POLICIES
    from normconf.adapters.plugin import PluginError
    from normconf.reports import results

    names = [n.strip() for n in args.adapters.split(",") if n.strip()] or adapters.names()
    for name in names:
        try:
            adapters.get(name)  # an unknown name fails here, naming the known ones
        except (adapters.UnknownAdapter, PluginError) as exc:
            print(f"normconf run: {str(exc).strip(chr(34))}", file=sys.stderr)
            return 2
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        print(
            f"normconf run: --policies: unknown {', '.join(unknown)}; known: {', '.join(POLICIES)}",
            file=sys.stderr,
        )
        return 2
    names = [n for n in names if not policies or adapters.get(n).policy_name in policies]
    if args.versions:
        return _run_releases(args, names if args.adapters.strip() else None)
    out = Path(args.results)
    code = _suite(args, names, out, {})
    files = sorted(out.glob("worker-*.jsonl"))
    if files:
        print(results.text_matrix(results.load(files)))
        print(f"results: {out}/worker-*.jsonl")
        if args.report:
            # ONNX's node-test corpus joins the report wherever its runtimes are installed (seconds)
            corpus = not args.no_corpus and all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
            _write_report(files, args.report, None if args.no_hazards else args.adapters, corpus)
    return code


def _suite(args, names: list[str], out, env: dict) -> int:
    """One run of the suite over `names` into the folder `out`, the workers' environment plus `env`."""
    from normconf.adapters import _compile_cache, _devices
    from normconf.conformance import workers

    pytest_args = [
        "--profile",
        args.profile,
        *(["--seed", str(args.seed)] if args.seed is not None else []),
        *(["--isolate", _seconds(args.isolate)] if args.isolate else []),
        *args.pytest_args,
    ]
    jobs = max(1, min(args.jobs, len(names)))
    print(f"{len(names)} adapters shared by {jobs} worker(s), profile {args.profile}", flush=True)
    device_env = {
        key: value
        for key, value in ((_devices.DEVICE_ENV, args.device), (_devices.TF32_ENV, args.tf32))
        if value is not None
    }
    if args.no_compile_cache:
        device_env[_compile_cache.SWITCH] = "0"
    return workers.run(
        names,
        jobs,
        pytest_args,
        out,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", **device_env, **env},
        progress=workers.PROGRESS_EVERY,
    )


def _run_releases(args, chosen: list[str] | None) -> int:
    """--versions: every request checked before anything runs (unknown framework, malformed version, no
    wheel here: one line, exit 2); then per release its environment (cached, or built: a release pip
    cannot install is one line and the rest runs) and the suite over its family's adapters (or the
    chosen ones of them), results in <results>/<framework>-<version>/; one report over them all."""
    import shutil
    from pathlib import Path

    from normconf import adapters, envs
    from normconf.reports import results

    try:
        releases = envs.parse(args.versions)
        if not args.isolate:
            raise envs.ReleaseError(
                "--versions runs each release in adapter child processes: --isolate 0 cannot"
            )
        envs.check_wheels([r for r in releases if envs.installed(r.framework) != r.version])
    except envs.ReleaseError as exc:
        print(f"normconf run: {exc}", file=sys.stderr)
        return 2
    code, files = 0, []
    for release in releases:
        names = [
            n for n in release.family.adapters if n in adapters.names() and (chosen is None or n in chosen)
        ]
        if not names:
            print(
                f"normconf run: {release.label}: none of the chosen adapters is its "
                f"({', '.join(release.family.adapters)})"
            )
            continue
        try:  # the interpreter's own release runs here; any other in its environment
            python = None if envs.installed(release.framework) == release.version else envs.ensure(release)
        except envs.ReleaseError as exc:
            print(f"normconf run: {exc}; the other releases run", file=sys.stderr)
            code = code or 1
            continue
        out = Path(args.results) / release.label.replace("=", "-")
        shutil.rmtree(out, ignore_errors=True)  # this release's results only
        print(f"--- {release.label}{'' if python is None else f' ({python})'}", flush=True)
        code = _suite(args, names, out, envs.child_environment(release, python)) or code
        files += sorted(out.glob("worker-*.jsonl"))
    if files:
        print(results.text_matrix(results.load(files)))
        if args.report:  # hazards and the corpus measure this interpreter's releases: not theirs
            _write_report(files, args.report, None)
    return code


def _envs(args) -> int:
    """`normconf envs [list]`, `normconf envs remove NAME... | --all`."""
    from normconf import envs

    if args.action == "list":
        found = envs.listing()
        for entry in found:
            own = ", ".join(f"{k} {v}" for k, v in sorted(entry["packages"].items())) or "-"
            print(
                f"{entry['name']:40s} {entry['release']:26s} {entry['megabytes']:8.1f} MB  "
                f"{entry['state']}  [{own}]"
            )
        print(f"{len(found)} environment(s) in {envs.root()}")
        return 0
    if not args.all and not args.names:
        print("normconf envs remove: name environments (see `normconf envs`) or --all", file=sys.stderr)
        return 2
    try:
        removed = envs.remove([e["name"] for e in envs.listing()] if args.all else args.names)
    except envs.ReleaseError as exc:
        print(f"normconf envs: {exc}", file=sys.stderr)
        return 2
    print(f"removed {len(removed)}: {', '.join(removed) or '-'}")
    return 0


def _seconds(value: float) -> str:
    return f"{value:g}"


def _timeout(text: str) -> float:
    """--isolate: seconds a framework call may take, >= 0 (0: no isolation)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a number of seconds >= 0, got {text!r}")
    return value


COMPILE_CACHE_HELP = (
    "compile every program afresh: no persistent compilation cache for JAX and Keras on JAX (on by "
    "default, in ~/.cache/normconf/jax-<jax>-<jaxlib>; NORMCONF_COMPILE_CACHE=0)"
)
ISOLATE_HELP = (
    "run every framework call in a child process that may take SECONDS (default %(default)s; 0: in "
    "the worker itself): a crash or hang costs its own cell only, reported as crashed / timed out"
)


def _write_report(paths, out, hazard_adapters: str | None, corpus: bool = False) -> None:
    """The HTML report; `hazard_adapters`: None skips the porting hazards, "" measures every installed
    adapter; `corpus`: run ONNX's node-test corpus for it."""
    from normconf.reports import hazards, html

    found = cases = None
    if hazard_adapters is not None:
        print("measuring porting hazards (framework defaults side by side) ...", flush=True)
        found = hazards.isolated([n.strip() for n in hazard_adapters.split(",") if n.strip()] or None)
    if corpus:
        from normconf.conformance import corpus as onnx_corpus

        print("running ONNX's node-test corpus ...", flush=True)
        cases = onnx_corpus.run()
    print(f"report: {html.write(paths, out, found, cases)}")


def _corpus(args) -> int:
    """`normconf corpus onnx`: ONNX's node cases through the reference and the ONNX adapters."""
    import json

    from normconf.conformance import corpus

    try:
        cases = corpus.run()
    except ImportError as exc:
        print(f"normconf corpus: {exc} (pip install 'normconf[onnx]')", file=sys.stderr)
        return 2
    print(corpus.summary(cases))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(corpus.to_json(cases), fh, indent=1)
        print(f"json: {args.json}")
    disagree = any(
        c.verdict == "disagrees"
        or any(
            not isinstance(v, str) and any(j.verdict == "disagrees" for j in v) for v in c.adapters.values()
        )
        for c in cases
    )
    return 1 if disagree else 0


def _report(args) -> int:
    """One HTML report from one or more results files (e.g. from several machines)."""
    from pathlib import Path

    from normconf.reports.results import ResultsError

    paths = []
    for given in map(Path, args.results):  # a folder from `normconf run` stands for its results files
        paths += sorted(given.glob("*.jsonl")) if given.is_dir() else [given]
    try:
        _write_report(paths, args.output, args.hazards, args.corpus)
    except (ResultsError, OSError) as exc:
        print(f"normconf report: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    from normconf.envs import FAMILIES

    parser = argparse.ArgumentParser(prog="normconf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"normconf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("clauses", help="list the spec's clauses (optionally one norm's, e.g. BN)")
    listing.add_argument(
        "prefix", nargs="?", default="", help="a norm prefix: BN, SBN, LN, IN, GN, RMS, LRN, LP, CN, NUM"
    )
    listing.add_argument("--text", action="store_true", help="print each clause's text too")
    listing.set_defaults(run=_clauses)
    listing = commands.add_parser(
        "adapters", help="list the adapters, whether each can run here, and their norms"
    )
    listing.set_defaults(run=_adapters)
    listing = commands.add_parser(
        "bugs", help="list the known divergences that are framework bugs (spec NUM.L6), with their repros"
    )
    listing.add_argument("--adapters", default="", help="comma-separated adapter names (default: every one)")
    listing.add_argument(
        "--repro",
        action="store_true",
        help="print each one's framework-alone script, ready for an upstream report",
    )
    listing.set_defaults(run=_bugs)
    run = commands.add_parser("run", help="run the conformance suite over the installed adapters")
    run.add_argument("--profile", default="default", choices=["quick", "default", "thorough"])
    run.add_argument("--adapters", default="", help="comma-separated adapter names (default: all installed)")
    run.add_argument("--seed", type=int, default=None, help=SEED_HELP)
    run.add_argument(
        "--policies",
        default="",
        help="comma-separated mixed-precision policies to run: none (adapters without one), mixed (spec "
        "MP.P1: the <adapter>@mixed adapters); default: both",
    )
    run.add_argument(
        "--results", default="reports/out/results", help="folder for the results (one file per worker)"
    )
    run.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: the CPUs this process may use)"
    )
    run.add_argument(
        "--report", default="reports/out/index.html", help="where to write the HTML report ('' for none)"
    )
    run.add_argument(
        "--no-hazards", action="store_true", help="leave the porting-hazard measurements out of the report"
    )
    run.add_argument(
        "--no-corpus", action="store_true", help="leave ONNX's node-test corpus out of the report"
    )
    run.add_argument("--isolate", type=_timeout, default=300.0, metavar="SECONDS", help=ISOLATE_HELP)
    run.add_argument("--no-compile-cache", action="store_true", help=COMPILE_CACHE_HELP)
    run.add_argument(
        "--device",
        choices=["auto", "cpu"],
        default=None,
        help="auto: each framework's accelerator where it sees one (default), cpu: the CPU only "
        "(NORMCONF_DEVICE); the device is recorded in every result",
    )
    run.add_argument(
        "--tf32",
        choices=["on", "off"],
        default=None,
        help="TF32 matmuls on or off in torch, JAX and TF (NORMCONF_TF32; default: each framework's own, "
        "recorded in every result)",
    )
    run.add_argument(
        "--max-isa",
        choices=["native", "avx2", "avx512"],
        default=None,
        help="cap the instruction set XLA, oneDNN and ATen may use, to play an older CPU "
        "(NORMCONF_MAX_ISA; the CPU and the caps are recorded in every result)",
    )
    run.add_argument(
        "--versions",
        action="append",
        default=[],
        metavar="FRAMEWORK=V1,V2",
        help="run the framework's adapters once per release, each from a cached environment (repeatable; "
        f"frameworks: {', '.join(FAMILIES)}; "
        "`normconf envs` lists and removes them)",
    )
    run.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    run.set_defaults(run=_run)
    report = commands.add_parser("report", help="build the HTML report from results files (several merge)")
    report.add_argument(
        "results",
        nargs="+",
        help="results files (JSON lines) or folders of them, from `normconf run` or pytest --results",
    )
    report.add_argument("-o", "--output", default="reports/out/index.html", help="the HTML file to write")
    report.add_argument(
        "--hazards",
        nargs="?",
        const="",
        default=None,
        metavar="ADAPTERS",
        help="also measure porting hazards with the adapters installed here (optionally only these, "
        "comma-separated); off by default, so the report needs nothing but the results",
    )
    report.add_argument(
        "--corpus", action="store_true", help="also run ONNX's node-test corpus (needs onnx and onnxruntime)"
    )
    report.set_defaults(run=_report)
    corpus = commands.add_parser(
        "corpus", help="run a framework's own test corpus through the spec (ONNX's node cases)"
    )
    corpus.add_argument("source", choices=["onnx"], help="whose corpus")
    corpus.add_argument("--json", metavar="FILE", help="also write the judged cases as JSON")
    corpus.set_defaults(run=_corpus)
    bench = commands.add_parser("bench", help="print the performance figures next to their targets")
    bench.add_argument(
        "--sections",
        default="reference,startup,throughput,discovery",
        help="comma-separated: reference, startup, throughput, rate, discovery, mutants, stability",
    )
    bench.add_argument(
        "--results", default="reports/out/results", help="the results folder the rate figures read"
    )
    bench.add_argument(
        "--adapters", default="", help="adapters for the throughput figures (default: all installed)"
    )
    bench.add_argument(
        "--profile", default="default", help="profile for the discovery, mutants and stability figures"
    )
    bench.add_argument("--seeds", default="1,2,3", help="the stability figure's seeds, one run each")
    bench.add_argument(
        "--keep", default="reports/out/stability", help="where the stability figure keeps (and reuses) runs"
    )
    bench.add_argument(
        "--suite", default="", help="also time whole profiles over every adapter, e.g. quick,default"
    )
    bench.set_defaults(run=lambda args: __import__("normconf.bench", fromlist=["main"]).main(args))
    check = commands.add_parser(
        "check",
        help="validate your own implementation against the spec (a verdict, exit 0 only when it conforms)",
    )
    check.add_argument(
        "implementation", help="path/file.py[:obj], module:obj, or an installed plug-in's name"
    )
    check.add_argument("--profile", default="quick", choices=["quick", "default", "thorough"])
    check.add_argument(
        "--norms", default="", help="comma-separated norms to check (default: all it declares)"
    )
    check.add_argument(
        "--dtypes", default="", help="comma-separated dtypes to check (default: all it declares)"
    )
    check.add_argument("--seed", type=int, default=None, help=SEED_HELP)
    check.add_argument(
        "--results", default="", help="folder for the JSON results (default: a temporary folder)"
    )
    check.add_argument("--report", default="", help="also write the HTML report here")
    check.add_argument(
        "--require",
        default="",
        metavar="LEVEL[,LEVEL]",
        help="the conformance levels that must hold (semantics, accuracy, range, special_values; "
        "spec NUM.L5); default: every level holds or is limited",
    )
    check.add_argument(
        "--isolate",
        type=_timeout,
        default=60.0,
        metavar="SECONDS",
        help=ISOLATE_HELP + "; a hang stops the rest of its norm, and past a few minutes of hangs the rest",
    )
    check.set_defaults(run=lambda args: __import__("normconf.check", fromlist=["main"]).main(args))
    cached = commands.add_parser(
        "envs", help="list (or remove) the cached release environments of --versions"
    )
    cached.add_argument("action", nargs="?", default="list", choices=["list", "remove"])
    cached.add_argument("names", nargs="*", help="with remove: folder names or FRAMEWORK=VERSION")
    cached.add_argument("--all", action="store_true", help="with remove: every cached environment")
    cached.set_defaults(run=_envs)
    table = commands.add_parser("conventions", help="print the framework conventions table from the adapters")
    mode = table.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="regenerate the tables in spec/conventions.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if spec/conventions.md disagrees")
    table.set_defaults(run=_conventions)
    args = parser.parse_args(argv)
    from normconf.vocabulary import cpu as _cpu

    if getattr(args, "max_isa", None):
        os.environ[_cpu.MAX_ISA_ENV] = args.max_isa
    try:  # before any framework is imported: the caps hold for this process and every child
        _cpu.apply_max_isa()
    except _cpu.IsaCapError as exc:
        print(f"normconf: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "jobs", 0) is None:
        from normconf.conformance import workers

        args.jobs = workers.default_jobs()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
