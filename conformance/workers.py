"""Running the suite in parallel worker processes, one group of adapters per worker.

Frameworks do not share a process well (start-up cost, thread pools, a crash takes the process with
it), and one core per worker is what their CPU kernels get anyway. Groups are balanced by each
adapter's measured cost (`Adapter.cost`, relative seconds of the quick profile on a 2-core machine), longest
first; every worker writes its own results file, and the reports merge them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from normconf import adapters

INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (what finished is kept and reported)
FAILING = ("finding", "error", "protocol error", "crashed", "timed out")  # verdicts a progress line counts


def plan(names: list[str], jobs: int) -> list[list[str]]:
    """`names` split into at most `jobs` groups of similar total cost (longest-processing-time first)."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(names))))]
    loads = [0.0] * len(groups)
    for name in sorted(names, key=lambda n: -adapters.cost(n)):
        k = loads.index(min(loads))
        groups[k].append(name)
        loads[k] += adapters.cost(name)
    return [g for g in groups if g]


def run(
    groups: list[list[str]],
    pytest_args: list[str],
    results_dir: Path,
    env: dict | None = None,
    quiet: bool = False,
    echo: str | None = None,
    progress: float | None = None,
) -> int:
    """One pytest process per group, `--results <dir>/worker-<k>.jsonl`; returns the worst exit code
    (INTERRUPTED after Ctrl-C, once every worker has closed its file).
    Each worker's output goes to `<dir>/worker-<k>.log`, its one-line summary to stdout as it ends
    (unless `quiet`); lines of the logs that start with `echo` are printed as they come, and every
    `progress` seconds a line of each worker's results so far."""
    import normconf.conformance as suite

    results_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*results_dir.glob("worker-*.jsonl"), *results_dir.glob("worker-*.log")]:
        stale.unlink()
    started, running = time.monotonic(), []
    for k, group in enumerate(groups, 1):
        log = open(results_dir / f"worker-{k}.log", "w", encoding="utf-8")
        folder = Path(suite.__file__).parent
        # the properties only: conformance/meta holds the project's tests of the suite itself
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "--ignore",
            str(folder / "meta"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--adapters",
            ",".join(group),
            "--results",
            str(results_dir / f"worker-{k}.jsonl"),
            *pytest_args,
        ]
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        running.append((k, group, process, log))
    worst, interrupted = 0, False
    if echo or progress:
        try:
            _watch(running, results_dir, echo, progress, started)
        except KeyboardInterrupt:
            interrupted = True
    for k, group, process, log in running:
        try:
            code = process.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the workers too (one process group): each ends its file
            code = process.wait()
            interrupted = True
        log.close()
        tail = (results_dir / f"worker-{k}.log").read_text(encoding="utf-8").strip().splitlines()[-1:] or [
            "(no output)"
        ]
        if not quiet:
            print(
                f"worker {k} [{', '.join(group)}] exit {code} "
                f"after {time.monotonic() - started:.0f}s: {tail[0]}",
                flush=True,
            )
        if code and not worst:  # the first failure's code; a worker killed by a signal counts as 1
            worst = code if code > 0 else 1
    return INTERRUPTED if interrupted else worst


def _watch(running, results_dir: Path, prefix: str | None, every: float | None, started: float) -> None:
    """Until every worker ends: print the lines of their logs that start with `prefix`, and every
    `every` seconds how many results each has written and how many of them fail."""
    offsets = dict.fromkeys((k for k, *_ in running), 0)
    last = time.monotonic()
    while True:
        done = all(process.poll() is not None for _, _, process, _ in running)
        for k in offsets if prefix else ():
            with open(results_dir / f"worker-{k}.log", "rb") as fh:
                fh.seek(offsets[k])
                chunk = fh.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]
            offsets[k] += len(whole)
            for line in whole.decode("utf-8", "replace").splitlines():
                if line.startswith(prefix):
                    print("  " + line, flush=True)
        if every and not done and time.monotonic() - last >= every:
            last = time.monotonic()
            print(f"  after {last - started:.0f}s: " + "; ".join(map(_so_far, running)), flush=True)
        if done:
            return
        time.sleep(0.5)


def _so_far(worker) -> str:
    """`worker k: N results, F failing` from its results file as written so far."""
    k, _, process, _ = worker
    path = Path(process.args[process.args.index("--results") + 1])
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    results = text.count('"kind": "result"')
    failing = sum(text.count(f'"verdict": "{v}"') for v in ("finding", "error", "crashed", "timed out"))
    failing += text.count('"verdict": "protocol error"')
    return f"worker {k}: {results} results, {failing} failing" + (
        " (ended)" if process.poll() is not None else ""
    )


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
