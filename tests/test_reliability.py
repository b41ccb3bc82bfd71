"""Reliability: a framework that crashes or hangs costs only its own cells (NORMCONF_ISOLATE), an
interrupted run leaves results the report reads, and a plug-in outside the protocol is reported."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import normconf.conformance as suite
from normconf import adapters
from normconf.adapters import _isolated
from normconf.adapters.plugin import ProtocolError
from normconf.conformance import clock, workers
from normconf.pytest_plugin import DEFAULT_SEED
from normconf.reports import results as report_results

PLUGIN = str(Path(__file__).parent / "data" / "misbehaving_plugin.py")
SUITE = Path(suite.__file__).parent
NORMCONF = [sys.executable, "-m", "normconf.cli"]


def _results(folder: Path) -> list[dict]:
    return [r for run in report_results.load(sorted(folder.glob("*.jsonl"))) for r in run.results]


def _interrupted(command: list[str], results: Path, after: int) -> tuple[int, str]:
    """Run `command`, wait until `after` results are written under `results` (and a test is running),
    then send what Ctrl-C in a terminal sends - SIGINT to the whole process group; (exit status, output)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # a shell without job control starts background jobs with SIGINT ignored;
        # a terminal's foreground run has it: restore it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        files = list(results.glob("*.jsonl"))
        if files and files[0].read_text(encoding="utf-8").count('"kind": "result"') >= after:
            break
        time.sleep(0.3)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def test_a_crash_and_a_hang_are_one_call_each_and_the_child_comes_back():
    x = np.arange(12.0).reshape(3, 4)
    proxy = _isolated.IsolatedAdapter(adapters.get(PLUGIN), timeout=2.0)
    assert proxy.run("layer_norm", x, {}, dtype="float32").y.shape == x.shape  # first call: fine
    with pytest.raises(_isolated.ChildDied, match="SIGSEGV"):
        proxy.run("layer_norm", x, {}, dtype="float32")
    assert proxy.run("rms_norm", x, {"eps": 1e-6}, dtype="float32").y.shape == x.shape  # a fresh child
    started = time.monotonic()
    with pytest.raises(_isolated.ChildTimedOut, match="killed"):
        proxy.run("rms_norm", x, {"eps": 1e-6}, dtype="float32")
    assert time.monotonic() - started < 30
    assert proxy.run("layer_norm", x, {}, dtype="float32").y.shape == x.shape


def test_a_crash_with_the_compilation_cache_on_is_rerun_without_it(tmp_path, monkeypatch):
    """A compiling adapter's child that dies while the persistent cache is on: the call runs again in a
    child without the cache (the verdict is the framework's, never the cache's) and what the dead child
    wrote to the cache is gone; entries from before it stay. A child that does not compile dies as any."""
    from normconf.adapters import _compile_cache

    plugin = str(Path(__file__).parent / "data" / "cache_crashing_plugin.py")
    monkeypatch.setenv(_compile_cache.FOLDER, str(tmp_path))
    monkeypatch.delenv(_compile_cache.SWITCH, raising=False)
    earlier = tmp_path / "an-earlier-entry"
    earlier.write_bytes(b"kept")
    os.utime(earlier, (time.time() - 3600, time.time() - 3600))
    x = np.arange(12.0).reshape(3, 4)
    child = _isolated.Isolated(plugin, compiles=True)
    try:
        y = child.run("layer_norm", x, {"axes": (-1,), "eps": 1e-5}, dtype="float64").y
    finally:
        child.close()
    assert np.allclose(y, (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5))
    assert child.cache_crashes == 1
    assert [path.name for path in tmp_path.iterdir()] == ["an-earlier-entry"]
    eager = _isolated.Isolated(plugin)
    try:
        with pytest.raises(_isolated.ChildDied, match="SIGSEGV"):
            eager.run("layer_norm", x, {"axes": (-1,), "eps": 1e-5}, dtype="float64")
    finally:
        eager.close()


def test_a_plugin_answering_in_another_dtype_breaks_the_protocol():
    with pytest.raises(ProtocolError, match="returned float64 for a float32 input"):
        adapters.get(PLUGIN).run("lp_normalize", np.ones((2, 3)), {}, dtype="float32")


def test_a_run_with_a_crashing_and_a_hanging_plugin_reports_them_and_keeps_every_other_result(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run(
        [
            *NORMCONF,
            "run",
            "--adapters",
            f"{PLUGIN},onnx.reference",
            "--profile",
            "quick",
            "--isolate",
            "5",
            "--jobs",
            "2",
            "--results",
            str(out),
            "--report",
            str(tmp_path / "r.html"),
            "--no-hazards",
            "--",
            "--norms",
            "layer_norm,rms_norm,lp_normalize",
            "-k",
            "forward",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    records = _results(out)
    mine = {(r["norm"], r["property"]): r for r in records if r["adapter"] == PLUGIN}
    crashed = mine["layer_norm", "forward_matches_reference"]
    assert crashed["verdict"] == "crashed" and "SIGSEGV" in crashed["message"] and crashed["example"]["shape"]
    assert "repro" in crashed
    hung = mine["rms_norm", "forward_matches_reference"]
    assert hung["verdict"] == "timed out" and "did not return within" in hung["message"]
    assert mine["lp_normalize", "forward_matches_reference"]["verdict"] == "protocol error"
    assert "ProtocolError" in mine["lp_normalize", "forward_matches_reference"]["message"]
    others = [r for r in records if r["adapter"] == "onnx.reference"]
    assert others and all(r["verdict"] in ("pass", "unsupported", "expected divergence") for r in others), (
        others
    )
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "crashed" in page and "timed out" in page
    # not on a terminal: plain progress lines; the two workers took one adapter each from the queue
    assert re.search(r"\d+/\d+ cells, \d+ examples, \d+ failing, \S+ elapsed, ETA", done.stdout), done.stdout
    taken = re.findall(r"^worker \d \[(.*)\] exit", done.stdout, re.M)
    assert sorted(taken) == sorted([PLUGIN, "onnx.reference"]), done.stdout


def test_ctrl_c_leaves_a_closed_results_file_and_a_report(tmp_path):
    out = tmp_path / "results"
    command = [*NORMCONF, "run", "--adapters", "onnx.reference", "--profile", "default", "--jobs", "1"]
    code, output = _interrupted(
        [*command, "--results", str(out), "--report", str(tmp_path / "r.html"), "--no-hazards"], out, 12
    )
    assert code == 130, output[-3000:]
    (run,) = report_results.load(sorted(out.glob("*.jsonl")))
    assert run.results and run.end is not None and run.end["interrupted"], output[-3000:]
    assert (tmp_path / "r.html").exists()


def test_a_results_file_cut_mid_line_reads_as_an_interrupted_run(tmp_path):
    complete = (Path(__file__).parent / "data").glob("*.jsonl")
    source = next(p for p in complete if p.read_text(encoding="utf-8").count('"kind": "result"') >= 2)
    lines = [
        line
        for line in source.read_text(encoding="utf-8").splitlines(keepends=True)
        if json.loads(line)["kind"] != "end"
    ]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
    (run,) = report_results.load([cut])
    assert not run.complete and len(run.results) == sum('"kind": "result"' in line for line in lines[:-1])
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text(
        "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2] + "\n" + lines[-1], encoding="utf-8"
    )
    with pytest.raises(
        report_results.ResultsError, match="not JSON"
    ):  # a broken line in the middle is corruption
        report_results.load([garbled])


def test_normconf_report_refuses_a_binary_file_and_writes_nothing(tmp_path):
    blob = tmp_path / "blob.jsonl"
    blob.write_bytes(bytes(range(256)) * 4)
    done = subprocess.run(
        [*NORMCONF, "report", str(blob), "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not a text file" in done.stderr and not (tmp_path / "r.html").exists()


def _suite(out: Path, *options: str, suite: Path = SUITE) -> subprocess.CompletedProcess:
    """The conformance suite (or a copy of it) on onnx.reference (fast, deterministic) with `options`,
    results to `out`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "--ignore",
            str(suite / "meta"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--adapters",
            "onnx.reference",
            "--results",
            str(out),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_same_seed_gives_the_same_results(tmp_path):
    """Two runs with one seed draw the same examples and reach the same verdicts, errors and budgets."""
    kept = ("test", "verdict", "examples", "worst_error", "budget", "clause", "example")
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}.jsonl"
        done = _suite(
            out,
            "--profile",
            "default",
            "--seed",
            "7",
            "--norms",
            "layer_norm,lp_normalize",
            "-k",
            "forward or gradients",
        )
        assert done.returncode in (0, 1), done.stdout[-2000:]
        runs.append(
            [{key: r.get(key) for key in kept} for run in report_results.load([out]) for r in run.results]
        )
    assert runs[0] and runs[0] == runs[1]
    # each record says where its time went: the clock's phases and the rest (engine) make up its seconds
    for record in (r for run in report_results.load([out]) for r in run.results if r["examples"]):
        assert set(record["time"]) == {*clock.PHASES, "engine"}
        assert record["time"]["framework"] > 0 and record["time"]["reference"] > 0
        assert abs(sum(record["time"].values()) - record["seconds"]) < 0.05 * record["seconds"] + 0.01


@pytest.mark.parametrize(
    "name, message", [("nope", "unknown adapter 'nope'; known: "), ("missing_file.py", "no such file")]
)
def test_normconf_run_refuses_an_unknown_adapter_before_writing_anything(tmp_path, name, message):
    done = subprocess.run(
        [*NORMCONF, "run", "--adapters", name, "--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "results").exists()


def test_the_protocol_reads_the_dtype_of_every_array_kind():
    """NumPy, torch and JAX arrays of the input's dtype and shape pass; another dtype, another shape or a
    plain list does not."""
    from normconf.adapters.plugin import _check_output

    class Impl:
        label = "impl"

    kinds = [np.ones(2, np.float32)]
    for module, make in (("torch", lambda m: m.ones(2)), ("jax.numpy", lambda m: m.ones(2, dtype="float32"))):
        try:
            kinds.append(make(__import__(module, fromlist=["_"])))
        except ImportError:
            pass
    for y in kinds:
        _check_output(Impl, y, "float32", (2,))
    for y in (np.ones(2), [1.0, 2.0], np.ones(3, np.float32)):  # another dtype, not an array, another shape
        with pytest.raises(ProtocolError):
            _check_output(Impl, y, "float32", (2,))


FAULTY = str(Path(__file__).parent / "data" / "faulty_plugins.py")


def _check(
    spec: str, out: Path, *extra: str, timeout: float
) -> tuple[subprocess.CompletedProcess, list[dict], float]:
    started = time.monotonic()
    done = subprocess.run(
        [*NORMCONF, "check", spec, "--results", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, _results(out), time.monotonic() - started


def test_check_reports_a_protocol_error_after_one_example_and_stops_the_norm(tmp_path):
    """An answer outside the protocol (a wrong shape) is the plug-in's error, not a clause's: after one
    example its norm and dtype stop."""
    done, records, _ = _check(f"{FAULTY}:wrong_shape", tmp_path, timeout=240)
    assert done.returncode == 1 and "DOES NOT CONFORM" in done.stdout, done.stdout[-3000:]
    broken = [r for r in records if r["verdict"] == "protocol error"]
    assert broken and all(r["examples"] == 1 and "returned shape" in r["message"] for r in broken), broken
    assert not [r for r in records if r["verdict"] == "finding"]  # not counted as clause findings
    stopped = [
        r
        for r in records
        if r["verdict"] == "skipped" and "stopped after a protocol error" in r.get("message", "")
    ]
    assert stopped and len(broken) == len({r["dtype"] for r in broken}), (
        records
    )  # one per dtype, the rest skipped
    assert "PROTOCOL ERROR" in done.stdout and "returned shape" in done.stdout.split("finding (")[1]


def test_check_judges_a_refusal_at_its_level_and_stops_nothing(tmp_path):
    """A plug-in raising on inputs the spec defines refuses them: each a finding at its example's level
    ("refuses the input: raised RuntimeError"), and every other cell still runs."""
    done, records, _ = _check(f"{FAULTY}:raises", tmp_path, timeout=240)
    assert done.returncode == 1 and "DOES NOT CONFORM at semantics" in done.stdout, done.stdout[-3000:]
    refused = [r for r in records if r["verdict"] == "finding"]
    assert refused and all("refuses the input: raised RuntimeError" in r["message"] for r in refused)
    assert all(r.get("level") for r in refused)
    assert not [r for r in records if r["verdict"] in ("skipped", "protocol error")], records


def test_check_stops_a_hanging_norm_at_its_first_hang_and_says_so(tmp_path):
    done, records, _ = _check(f"{FAULTY}:hangs", tmp_path, "--isolate", "7", timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    hung = [r for r in records if r["verdict"] == "timed out"]
    assert len(hung) == 1 and "did not return within 7 s" in hung[0]["message"], records
    rest = [r for r in records if r is not hung[0] and r["property"] != "constraint_violations_are_recorded"]
    assert rest and all(r["verdict"] == "skipped" and "timed out" in r["message"] for r in rest), rest
    assert "still running: " in done.stdout  # the line printed while the call ran past 5 s


def test_ctrl_c_during_check_reports_what_was_judged_not_a_verdict(tmp_path):
    code, output = _interrupted(
        [*NORMCONF, "check", f"{FAULTY}:slow", "--results", str(tmp_path)], tmp_path, 3
    )
    assert code == 130 and "verdict: INTERRUPTED" in output, output[-3000:]
    assert "DOES NOT CONFORM" not in output
    records = _results(tmp_path)
    assert records and not [r for r in records if r["verdict"] == "error"], records
    assert [r for r in records if r["verdict"] == "interrupted"], records


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_counts_cells_examples_and_failures_as_a_line_or_a_bar(tmp_path):
    """What `normconf run` shows while it runs, from the workers' files: cells done of those collected,
    examples, failing verdicts, an ETA and what each worker is on - a plain line off a terminal, a bar
    on one."""
    (tmp_path / "cells.json").write_text(json.dumps({"a": {"layer_norm": 3}, "b": {"rms_norm": 1}}))
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "a").write_text("worker-1 1.0")
    (tmp_path / "worker-1.log").write_text("")
    (tmp_path / "worker-1.jsonl").write_text(
        "".join(
            json.dumps({"kind": "result", "adapter": "a", "norm": "layer_norm", "verdict": v, "examples": 7})
            + "\n"
            for v in ("pass", "finding")
        )
    )
    plain = io.StringIO()
    progress = workers.Progress(tmp_path, time.monotonic() - 60, stream=plain)
    progress.update()
    assert re.fullmatch(
        r"  2/4 cells, 14 examples, 1 failing, 1m00s elapsed, ETA \S+ \| w1 a 2/3\n", plain.getvalue()
    )
    # the next update counts only what was written since, and a line still being written not yet
    record = {"kind": "result", "adapter": "a", "norm": "layer_norm", "verdict": "pass", "examples": 5}
    with open(tmp_path / "worker-1.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n" + json.dumps(record)[:20])
    progress.update()
    assert plain.getvalue().splitlines()[-1].startswith("  3/4 cells, 19 examples, 1 failing")
    per_norm = io.StringIO()
    workers.Progress(tmp_path, time.monotonic(), per_norm=True, stream=per_norm).update()
    assert "layer_norm 3/3, rms_norm 0/1" in per_norm.getvalue()
    bar = _Terminal()
    workers.Progress(tmp_path, time.monotonic(), stream=bar).update(final=True)
    assert "3/4" in bar.getvalue() and "19 examples, 1 failing" in bar.getvalue()


def _quick_sample(out: Path, *seed: str, suite: Path = SUITE) -> tuple[dict, dict]:
    """The session record and each dtype's (examples, worst error) of LayerNorm's forward property
    under the quick profile (with `seed`, if given)."""
    _suite(
        out,
        "--profile",
        "quick",
        "--norms",
        "layer_norm",
        "-k",
        "forward_matches",
        *(["--seed", seed[0]] if seed else []),
        suite=suite,
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sample = {r["dtype"]: (r["examples"], r.get("worst_error")) for r in records if r["kind"] == "result"}
    return records[0], sample


@pytest.mark.clause("NUM.N7")
def test_another_seed_draws_another_quick_sample_and_the_record_says_which(tmp_path):
    """--seed reaches the quick profile: a fixed seed draws a fixed sample, another seed another one; no
    seed is the documented default seed (the gate's sample), and the session record says which."""
    unseeded, vetted = _quick_sample(tmp_path / "none.jsonl")
    first, one = _quick_sample(tmp_path / "one.jsonl", "1")
    _, one_again = _quick_sample(tmp_path / "one-again.jsonl", "1")
    _, two = _quick_sample(tmp_path / "two.jsonl", "2")
    _, zero = _quick_sample(tmp_path / "zero.jsonl", str(DEFAULT_SEED))
    assert one == one_again and one != two and one != vetted and zero == vetted, (vetted, one, two)
    assert first["seed"] == 1 and first["sampling"].startswith("seed 1 (given)")
    assert unseeded["seed"] == DEFAULT_SEED and "quick profile's default" in unseeded["sampling"]


def test_editing_a_property_keeps_its_quick_sample(tmp_path):
    """A property draws from its identity's seed, not its source text: a copy of the suite whose forward
    property gained a statement draws the same quick sample as the suite itself."""
    copy = tmp_path / "conformance"
    shutil.copytree(SUITE, copy, ignore=shutil.ignore_patterns("__pycache__", "meta"))
    source = copy / "test_forward.py"
    anchor = "def test_forward_matches_reference(target, cell, data):\n"
    assert anchor in source.read_text()
    source.write_text(source.read_text().replace(anchor, anchor + "    edited = True  # a refactor\n"))
    _, kept = _quick_sample(tmp_path / "original.jsonl")
    _, edited = _quick_sample(tmp_path / "edited.jsonl", suite=copy)
    assert edited == kept and kept, (kept, edited)


def test_the_stability_figure_counts_untriaged_findings_per_seed_and_adapter(tmp_path):
    """`normconf bench --sections stability` reads a kept run of the same profile and seed instead of
    running it again, and counts its findings per adapter (0 here: onnx.reference's LayerNorm)."""
    from normconf import bench

    kept = tmp_path / "quick-seed-3"
    _suite(
        kept / "worker-1.jsonl", "--profile", "quick", "--seed", "3", "--norms", "layer_norm", "-k", "forward"
    )
    table = bench.stability_table("quick", [3], tmp_path)
    assert any(line.split()[:2] == ["onnx.reference", "0"] for line in table), table
    assert table[-1].strip().startswith("untriaged over seeds [3]: 0") and table[-1].endswith("ok"), table
    lines = (kept / "worker-1.jsonl").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "result")
    lines[at] = json.dumps({**json.loads(lines[at]), "verdict": "error", "message": "untriaged"})
    (kept / "worker-1.jsonl").write_text("\n".join(lines) + "\n")  # a result nobody accounted for
    assert [r["verdict"] for r in bench.untriaged(kept)["onnx.reference"]] == ["error"]
    assert bench.stability_table("quick", [3], tmp_path)[-1].endswith("MISSED")


def test_a_cell_that_expresses_nothing_gives_up_after_its_rejections():
    """GIVE_UP_AFTER rejected draws with none judged skip the cell as unsupported; one judged example
    first keeps it going however many rejections follow."""
    from hypothesis.errors import UnsatisfiedAssumption

    from normconf.conformance import conftest
    from normconf.conformance.harness import Cell

    def rejects(**kwargs):
        raise UnsatisfiedAssumption

    cell = Cell("a", "layer_norm", "float32", "forward")
    wrapped = conftest._giving_up(rejects)
    for _ in range(conftest.GIVE_UP_AFTER - 1):
        with pytest.raises(UnsatisfiedAssumption):
            wrapped(cell=cell)
    with pytest.raises(pytest.skip.Exception, match="no example expressible"):
        wrapped(cell=cell)
    judged = Cell("a", "layer_norm", "float32", "forward")
    conftest._giving_up(lambda **kwargs: None)(cell=judged)
    for _ in range(conftest.GIVE_UP_AFTER + 5):
        with pytest.raises(UnsatisfiedAssumption):
            conftest._giving_up(rejects)(cell=judged)
    assert (judged.judged, judged.first_judged_after) == (1, 0)
