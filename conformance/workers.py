"""Running the suite in parallel worker processes that share a queue of adapters.

Frameworks do not share a process well (start-up cost, thread pools, a crash takes the process with
it), and one core per worker is what their CPU kernels get anyway. Every worker collects every adapter
and runs an adapter's cells only after claiming it (`--claims`: the first worker to create its file
takes it), most costly first (`Adapter.cost`), so each worker takes the next adapter when it frees up
and the load balances itself; every worker writes its own results file, and the reports merge them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

from normconf import adapters
from normconf.vocabulary.verdicts import PROBLEMS  # the failing verdicts a progress line counts

INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (what finished is kept and reported)
# One thread per framework in each worker (and the children it starts): the workers already use every
# core, and a framework's own pool on top of them oversubscribes the cores (spin-waiting OpenMP threads:
# torch's calls took twice as long beside another worker). A variable already set is kept.
THREADS = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "NORMCONF_THREADS": "1",  # what onnxruntime's sessions read (intra_op_num_threads)
}
PROGRESS_EVERY = 10.0  # seconds between progress lines when not on a terminal (a bar there, every second)


def order(names: list[str]) -> list[str]:
    """The adapters in the order workers claim them: most costly first, so the last ones to start are
    short (longest-processing-time first, decided as each worker frees up)."""
    return sorted(names, key=lambda n: (-adapters.cost(n), n))


def run(
    names: list[str],
    jobs: int,
    pytest_args: list[str],
    results_dir: Path,
    env: dict | None = None,
    quiet: bool = False,
    echo: str | None = None,
    progress: float | None = None,
    per_norm: bool = False,
) -> int:
    """`jobs` pytest processes (at most one per adapter), each `--results <dir>/worker-<k>.jsonl`,
    sharing a queue of the adapters: a worker claims the next unclaimed adapter (`--claims`) when it
    finishes one, so the load balances itself whatever each adapter costs. Returns the worst exit code
    (INTERRUPTED after Ctrl-C, once every worker has closed its file). Each worker's output goes to
    `<dir>/worker-<k>.log`, its one-line summary to stdout as it ends (unless `quiet`); lines of the
    logs that start with `echo` are printed as they come, and with `progress` a progress display
    (`Progress`, `per_norm` for one adapter) is updated every `progress` seconds."""
    import normconf.conformance as suite

    results_dir.mkdir(parents=True, exist_ok=True)
    claims = results_dir / "claims"
    for stale in [*results_dir.glob("worker-*.jsonl"), *results_dir.glob("worker-*.log"), *claims.glob("*")]:
        stale.unlink()
    started, running = time.monotonic(), []
    queue = order(names)
    for k in range(1, max(1, min(jobs, len(names))) + 1):
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
            ",".join(queue),
            "--claims",
            str(claims),
            "--results",
            str(results_dir / f"worker-{k}.jsonl"),
            *pytest_args,
        ]
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**THREADS, **os.environ, **(env or {})}
        )
        running.append((k, process, log))
    worst, interrupted = 0, False
    if echo or progress:
        try:
            display = Progress(results_dir, started, per_norm) if progress else None
            _watch(running, results_dir, echo, display, progress)
        except KeyboardInterrupt:
            interrupted = True
    for k, process, log in running:
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
            ran = ", ".join(claimed(results_dir, k)) or "no adapter"
            print(
                f"worker {k} [{ran}] exit {code} after {time.monotonic() - started:.0f}s: {tail[0]}",
                flush=True,
            )
        if code and not worst:  # the first failure's code; a worker killed by a signal counts as 1
            worst = code if code > 0 else 1
    return INTERRUPTED if interrupted else worst


def claimed(results_dir: Path, k: int) -> list[str]:
    """The adapters worker k claimed, in the order it took them."""
    found = []
    for path in (results_dir / "claims").glob("*"):
        worker, _, when = path.read_text(encoding="utf-8").partition(" ")
        if worker == f"worker-{k}":
            found.append((float(when or 0), path.name))
    return [unquote(name) for _, name in sorted(found)]  # the name as conftest.claim_name quoted it


def _watch(running, results_dir: Path, prefix: str | None, display, every: float | None) -> None:
    """Until every worker ends: print the lines of their logs that start with `prefix`, and update the
    progress `display` every `every` seconds."""
    offsets = dict.fromkeys((k for k, *_ in running), 0)
    last = time.monotonic()
    while True:
        done = all(process.poll() is not None for _, process, _ in running)
        for k in offsets if prefix else ():
            with open(results_dir / f"worker-{k}.log", "rb") as fh:
                fh.seek(offsets[k])
                chunk = fh.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]
            offsets[k] += len(whole)
            for line in whole.decode("utf-8", "replace").splitlines():
                if line.startswith(prefix):
                    print(("\n" if display and display.bar else "") + "  " + line, flush=True)
        if display and (done or time.monotonic() - last >= (1.0 if display.bar else every)):
            last = time.monotonic()
            display.update(done)
        if done:
            return
        time.sleep(0.5)


class Progress:
    """The run's progress from the workers' files: cells done of those collected (`cells.json`, written
    by the first worker to collect), examples judged, failing verdicts, what each worker is on, elapsed
    time and an ETA (the adapters' cost-weighted share done). On a terminal a tqdm bar, elsewhere one
    plain line per update (CI logs)."""

    def __init__(self, results_dir: Path, started: float, per_norm: bool = False, stream=None):
        self.dir, self.started, self.per_norm = results_dir, started, per_norm
        self.stream = stream or sys.stdout
        # what the results files held at the last update: each file is read on from where it was left
        self._read: dict[Path, int] = {}
        self._done: dict = {}  # adapter -> results
        self._norms_done: dict = {}  # norm -> results
        self._examples = self._failing = 0
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            try:
                sized = os.get_terminal_size(self.stream.fileno()).columns
            except (AttributeError, OSError, ValueError):
                sized = 0
            # a terminal of unknown size (a pty nobody sized) gets 120 x 20, not tqdm's 0 x -1 (hidden)
            self.bar = tqdm(
                total=0,
                unit="cell",
                file=self.stream,
                leave=True,
                ncols=None if sized else 120,
                nrows=None if sized else 20,
                dynamic_ncols=bool(sized),
            )

    def _read_new_results(self) -> None:
        """Count the result records written since the last update (whole lines only)."""
        for path in sorted(self.dir.glob("worker-*.jsonl")):
            with open(path, "rb") as fh:
                fh.seek(self._read.get(path, 0))
                chunk = fh.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]
            self._read[path] = self._read.get(path, 0) + len(whole)
            for line in whole.decode("utf-8", "replace").splitlines():
                if '"kind": "result"' not in line:
                    continue
                record = json.loads(line)
                self._done[record["adapter"]] = self._done.get(record["adapter"], 0) + 1
                self._norms_done[record["norm"]] = self._norms_done.get(record["norm"], 0) + 1
                self._examples += record.get("examples", 0)
                self._failing += record["verdict"] in PROBLEMS

    def snapshot(self) -> dict:
        """{"cells": {adapter: collected}, "done": {adapter: results}, "examples", "failing",
        "workers": {k: (adapter, done, collected)}, "norms": {norm: (done, collected)}}."""
        path = self.dir / "cells.json"
        planned = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        cells = {adapter: sum(norms.values()) for adapter, norms in planned.items()}
        collected = {n: c for per in planned.values() for n, c in per.items()}
        self._read_new_results()
        done = dict(self._done)
        names = [*collected, *(n for n in self._norms_done if n not in collected)]
        norms = {n: (self._norms_done.get(n, 0), collected.get(n, 0)) for n in names}
        on = {}
        for log in sorted(self.dir.glob("worker-*.log")):
            k = int(log.stem.split("-")[1])
            taken = claimed(self.dir, k)
            if taken:
                on[k] = (taken[-1], done.get(taken[-1], 0), cells.get(taken[-1], 0))
        return {
            "cells": cells,
            "done": done,
            "examples": self._examples,
            "failing": self._failing,
            "workers": on,
            "norms": norms,
        }

    def line(self, state: dict) -> str:
        cells, done = state["cells"], state["done"]
        total, finished = sum(cells.values()), sum(done.values())
        elapsed = time.monotonic() - self.started
        weights = {n: adapters.cost(n) for n in cells if cells[n]}
        share = sum(w * min(done.get(n, 0) / cells[n], 1.0) for n, w in weights.items()) / max(
            sum(weights.values()), 1e-9
        )
        eta = f"ETA {_clock(elapsed * (1 - share) / share)}" if share > 0.02 else "ETA ?"
        if self.per_norm:
            workers = ", ".join(f"{norm} {n}/{of}" for norm, (n, of) in state["norms"].items())
        else:
            workers = "; ".join(
                f"w{k} {adapter} {n}/{of}" for k, (adapter, n, of) in sorted(state["workers"].items())
            )
        return (
            f"{finished}/{total or '?'} cells, {state['examples']} examples, {state['failing']} failing, "
            f"{_clock(elapsed)} elapsed, {eta}" + (f" | {workers}" if workers else "")
        )

    def update(self, final: bool = False) -> None:
        state = self.snapshot()
        text = self.line(state)
        if self.bar is None:
            print("  " + text, file=self.stream, flush=True)
            return
        self.bar.total = sum(state["cells"].values())
        self.bar.n = sum(state["done"].values())
        self.bar.set_postfix_str(text.split(", ", 1)[1], refresh=True)
        if final:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
