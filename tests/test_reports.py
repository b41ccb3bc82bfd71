"""The results format and the HTML report, from results files alone (no framework runs here).

tests/data/quick-torch-onnx.jsonl is a real run:
    pytest conformance/ --adapters torch.functional,onnx.reference --profile quick --seed 1 --results FILE
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from normconf.reports import html, markdown
from normconf.reports import results as report_results

FIXTURE = Path(__file__).parent / "data" / "quick-torch-onnx.jsonl"


def _records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _on_device(records: list[dict], device: str) -> list[dict]:
    return [{**r, "device": device} if r["kind"] == "environment" else r for r in records]


def _with_finding(records: list[dict]) -> list[dict]:
    """The fixture with its first expected divergence turned into a finding (no divergence excuses it)."""
    out, done = [], False
    for r in records:
        if not done and r.get("verdict") == "expected divergence":
            r = {k: v for k, v in r.items() if k not in ("divergence_clause", "reason")} | {
                "verdict": "finding"
            }
            done = True
        out.append(r)
    return out


def test_the_fixture_is_a_complete_valid_run():
    (run,) = report_results.load([FIXTURE])
    assert run.complete and run.results and set(run.environments) == {"torch.functional", "onnx.reference"}
    assert {"format", "version", "suite_version", "commit", "profile", "seed", "started"} <= set(run.session)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", "not JSON"),
        ('{"name": "some other tool", "value": 3}', "not a normconf results record"),
        ("[1, 2, 3]", "not a normconf results record"),
    ],
)
def test_a_corrupt_or_foreign_line_names_file_and_line(tmp_path, line, expected):
    path = _write(tmp_path / "r.jsonl", _records()[:3])
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(report_results.ResultsError, match=rf"{re.escape(str(path))}:4: {expected}"):
        report_results.load([path])


def test_a_foreign_json_lines_file_is_refused_at_its_first_line(tmp_path):
    path = _write(tmp_path / "other.jsonl", [{"kind": "session", "format": "someone-else"}])
    with pytest.raises(
        report_results.ResultsError, match=rf"{re.escape(str(path))}:1: not a normconf results file"
    ):
        report_results.load([path])


def test_a_newer_format_version_is_refused(tmp_path):
    records = _records()
    records[0]["version"] += 1
    with pytest.raises(report_results.ResultsError, match=":1: results format version .* is newer"):
        report_results.load([_write(tmp_path / "r.jsonl", records)])


@pytest.mark.parametrize(
    "kind, field",
    [("session", "profile"), ("environment", "device"), ("result", "verdict"), ("end", "finished")],
)
def test_a_record_missing_a_field_names_file_line_and_field(tmp_path, kind, field):
    records = _records()
    number = next(i for i, r in enumerate(records, 1) if r["kind"] == kind)
    del records[number - 1][field]
    path = _write(tmp_path / "r.jsonl", records)
    with pytest.raises(
        report_results.ResultsError,
        match=rf"{re.escape(str(path))}:{number}: .*'{field}' is a required property",
    ):
        report_results.load([path])


def test_a_divergence_without_its_repro_is_invalid(tmp_path):
    records = _records()
    number = next(i for i, r in enumerate(records, 1) if r.get("verdict") == "expected divergence")
    del records[number - 1]["repro"]
    with pytest.raises(report_results.ResultsError, match=rf":{number}: .*'repro' is a required property"):
        report_results.load([_write(tmp_path / "r.jsonl", records)])


def test_two_devices_merge_side_by_side(tmp_path):
    cpu = _write(tmp_path / "cpu.jsonl", _on_device(_records(), "cpu"))
    gpu = _write(tmp_path / "gpu.jsonl", _on_device(_records(), "cuda:0"))
    runs = report_results.load([cpu, gpu])
    rows = {impl for impl, _ in report_results.matrix(runs)}
    assert rows == {
        "torch.functional @ cpu",
        "torch.functional @ cuda:0",
        "onnx.reference @ cpu",
        "onnx.reference @ cuda:0",
    }
    page = html.build(runs)
    for row in rows:
        assert f'<tr data-filter data-impl="{row}"><th scope="row">{row}</th>' in page


def test_one_device_in_two_files_is_told_apart_by_file(tmp_path):
    runs = report_results.load(
        [_write(tmp_path / "monday.jsonl", _records()), _write(tmp_path / "tuesday.jsonl", _records())]
    )
    assert {impl for impl, _ in report_results.matrix(runs)} >= {
        "torch.functional @ cpu (monday)",
        "torch.functional @ cpu (tuesday)",
    }


def test_files_of_one_name_from_two_folders_are_named_by_their_folder(tmp_path):
    """Two hosts' (or CI jobs') folders each hold a worker-1.jsonl: the report's runs and rows say
    which folder each came from, not worker-1 twice."""
    (tmp_path / "host-a").mkdir()
    (tmp_path / "host-b").mkdir()
    runs = report_results.load(
        [_write(tmp_path / d / "worker-1.jsonl", _records()) for d in ("host-a", "host-b")]
    )
    assert [run.label for run in runs] == ["host-a/worker-1", "host-b/worker-1"]
    assert {impl for impl, _ in report_results.matrix(runs)} >= {
        "torch.functional @ cpu (host-a/worker-1)",
        "torch.functional @ cpu (host-b/worker-1)",
    }
    page = html.build(runs)
    assert "host-a/worker-1" in page and "host-b/worker-1" in page


def test_an_interrupted_run_loads_and_renders_with_a_banner(tmp_path):
    records = [r for r in _records() if r["kind"] != "end"][: len(_records()) // 2]
    path = _write(tmp_path / "partial.jsonl", records)
    (run,) = report_results.load([path])
    assert not run.complete and run.results
    page = html.build([run])
    assert 'class="banner" role="alert"' in page and "Incomplete run" in page and str(path) in page
    assert "INCOMPLETE" in report_results.text_matrix([run])
    assert 'class="banner"' not in html.build(report_results.load([FIXTURE]))


def test_the_report_is_self_contained():
    page = html.build(report_results.load([FIXTURE]))
    assert not re.search(r"""\ssrc\s*=\s*["']?\s*(https?:)?//""", page, re.I), "an external src"
    assert not re.search(r"<link\b", page, re.I), "a linked stylesheet or icon"
    assert not re.search(r"""(@import|url\()\s*["']?\s*(https?:)?//""", page, re.I), (
        "CSS fetching from the network"
    )
    assert "<script src" not in page and "<style>" in page and "<script>" in page


def test_every_finding_and_divergence_shows_its_clause_text_and_repro(tmp_path):
    from normconf import spec

    run = report_results.read(_write(tmp_path / "r.jsonl", _with_finding(_records())))
    page = html.build([run])
    shown = [r for r in run.results if r["verdict"] in ("finding", "expected divergence")]
    assert any(r["verdict"] == "finding" for r in shown)
    groups = re.split(r'<div class="group" data-group>', page)[1:]
    for r in shown:
        clause = r.get("divergence_clause") or r["clause"]
        group = next(g for g in groups if g.lstrip().startswith(f"<h3>{clause} · "))
        assert str(markdown.render(spec.clause(clause).text)) in group, f"{clause}'s text is not shown"
        assert 'class="copy"' in group
    for n, item in enumerate(re.findall(r'<details class="item".*?</details>', page, re.S)):
        assert 'data-copy="repro-' in item and "import numpy as np" in item, f"item {n} has no repro"


def test_an_array_on_the_page_is_a_glance_and_the_repro_carries_it_whole(tmp_path):
    """A (nested) array in an example or the reference's answer shows its first values, count and
    shape; the repro keeps every value (the page stays small enough to mail and open)."""
    records = _records()
    at = next(n for n, r in enumerate(records) if r.get("verdict") == "expected divergence")
    y = np.arange(2 * 8 * 4, dtype=float).reshape(2, 8, 4) + 0.5
    records[at] = {**records[at], "reference": {"y": y.tolist()}}
    page = html.build([report_results.read(_write(tmp_path / "r.jsonl", records))])
    item = next(i for i in re.findall(r'<details class="item".*?</details>', page, re.S) if "64 values" in i)
    shown = re.search(r"What the reference says</strong></p><pre>(.*?)</pre>", item, re.S).group(1)
    assert "0.5, 1.5" in shown and "7.5" in shown and "8.5" not in shown, shown
    assert "shape [2, 8, 4]" in shown and "the repro has them all" in shown, shown


def test_the_hazards_section_renders_from_measurements_without_frameworks():
    from normconf.reports import hazards as H

    found = H.Hazards(
        measured={
            ("a", "batch_norm"): H.Measured(
                "a", "batch_norm", "A.BatchNorm", "float32", {"momentum": 0.1}, running_var=[1.1, 1.2]
            ),
            ("b", "batch_norm"): H.Measured(
                "b", "batch_norm", "B.BatchNorm", "float32", {"momentum": 0.01}, running_var=[1.01, 1.02]
            ),
        },
        pairs=[H.Hazard("batch_norm", "a", "b", 1e-7, 0.5, ["momentum: 0.1 vs 0.01"])],
        skipped={},
        reference_running_var=[1.1, 1.2],
    )
    page = html.build(report_results.load([FIXTURE]), H.from_json(H.to_json(found)))
    assert 'id="hazards"' in page and "momentum: 0.1 vs 0.01" in page and "<polyline" in page
    assert 'id="hazards"' not in html.build(report_results.load([FIXTURE]))


def test_normconf_report_merges_files_and_reports_bad_ones(tmp_path, capsys):
    from normconf.cli import main

    out = tmp_path / "out" / "index.html"
    assert (
        main(
            [
                "report",
                str(FIXTURE),
                str(_write(tmp_path / "gpu.jsonl", _on_device(_records(), "cuda:0"))),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "torch.functional @ cuda:0" in out.read_text(encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    assert main(["report", str(bad), "-o", str(out)]) == 2
    assert f"{bad}:1: not JSON" in capsys.readouterr().err


def test_hazards_measure_the_running_variance_conventions_of_two_frameworks():
    """torch keeps an unbiased running variance, ONNX a biased one: only eval after training shows it."""
    from normconf import adapters
    from normconf.reports import hazards as H

    names = ["torch.functional", "onnx.reference"]
    missing = [n for n in names if not adapters.get(n).available()[0]]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    found = H.compute(names)
    (bn,) = [p for p in found.pairs if p.norm == "batch_norm"]
    assert any(d.startswith("running_var:") for d in bn.differ)
    assert bn.eval > bn.forward  # the training output does not see the running-stat conventions; eval does
    for name in names:
        assert len(found.measured[name, "batch_norm"].running_var) == H.STEPS


def test_an_error_record_and_recorded_observations_render(tmp_path):
    """An error (no comparison numbers) shows with dashes; constraint observations get their own table."""
    records = _records()
    first = next(i for i, r in enumerate(records) if r.get("kind") == "result")
    error = {
        "kind": "result",
        "test": "conformance/test_forward.py::x",
        "adapter": records[first]["adapter"],
        "norm": "layer_norm",
        "dtype": "float64",
        "property": "forward_matches_reference",
        "verdict": "error",
        "examples": 0,
        "message": "the test itself broke",
    }
    observed = {
        **error,
        "test": "conformance/test_constraints.py::y",
        "property": "constraint_violations_are_recorded",
        "verdict": "pass",
        "message": None,
        "observations": ["LN.C3 (eps < 0): accepted, output with NaN or inf"],
    }
    del observed["message"]
    page = html.build(
        report_results.load(
            [_write(tmp_path / "r.jsonl", records[:first] + [error, observed] + records[first:])]
        )
    )
    assert "the test itself broke" in page
    invalid = page[page.index('id="invalid"') :]
    assert "LN.C3 (eps &lt; 0)" in invalid and "accepted, output with NaN or inf" in invalid


def test_the_results_schema_refuses_a_norm_that_has_no_record():
    """The schema's norm enum is the norm records' names (tests/test_norm_records.py checks each record is
    accepted): a misspelt norm is refused, naming the field."""
    from normconf.reports.results import ResultsError, check

    record = dict(kind="result", test="t", adapter="a", dtype="float32", property="p", verdict="pass")
    with pytest.raises(ResultsError, match="norm"):
        check({**record, "norm": "batch_norms"}, "here")


def test_bench_rate_table_holds_each_adapter_to_its_own_target(tmp_path):
    """normconf bench's rate figures: examples/s against the raw call rate, the compiled frameworks'
    lower target, compilations per example and the clock's phase shares, from a run's results."""
    from normconf import bench

    records = [r for r in _records() if r["kind"] != "result" and r["kind"] != "end"]
    timed = {"draw": 1.0, "framework": 2.0, "ipc": 0.0, "reference": 0.5, "budget": 0.5, "judge": 0.0}
    for adapter, examples, extra in (
        ("torch.functional", 1500, {}),
        ("flax.linen", 150, {"compilations": 90, "cache_hits": 30}),
    ):
        records.append(
            {
                "kind": "result",
                "test": f"t[{adapter}]",
                "adapter": adapter,
                "norm": "layer_norm",
                "dtype": "float32",
                "property": "forward_matches_reference",
                "verdict": "pass",
                "examples": examples,
                "seconds": 5.0,
                "time": {**timed, "engine": 1.0},
                **extra,
            }
        )
    _write(tmp_path / "worker-1.jsonl", records)
    header, *rows = bench.rate_table(tmp_path, {"torch.functional": 10_000.0, "flax.linen": 400.0})
    lines = {row.split()[0]: row.split() for row in rows}
    assert lines["torch.functional"][1:6] == ["1500", "300.0", "10000", "0.030", "200"]
    assert lines["torch.functional"][-1] == "ok" and lines["torch.functional"][6:9] == ["-", "-", "-"]
    # flax compiles per configuration and shape: 30 ex/s against 20; 120 programs, 90 of them compiled
    # (0.6 per example) and 30 loaded from the persistent cache
    assert lines["flax.linen"][2:10] == ["30.0", "400", "0.075", "20", "120", "0.60", "30", "20%"]
    assert lines["flax.linen"][-1] == "ok"
    # a quick-profile run holds compiling adapters to the program budget
    budget = bench.PROGRAM_BUDGET
    held = {row.split()[0]: row for row in bench.rate_table(tmp_path, {}, programs_budget=True)[1:]}
    assert held["flax.linen"].endswith(f"ok, programs ok (<= {budget})")
    assert held["torch.functional"].endswith("ok")
    over = [{**r, "compilations": budget} if r.get("adapter") == "flax.linen" else r for r in records]
    _write(tmp_path / "worker-1.jsonl", over)
    held = {row.split()[0]: row for row in bench.rate_table(tmp_path, {}, programs_budget=True)[1:]}
    assert held["flax.linen"].endswith(f"programs MISSED (<= {budget})")


@pytest.mark.clause("NUM.L6")
def test_a_framework_bug_is_marked_as_a_bug_not_painted_as_a_convention(tmp_path):
    records = _records()
    first = next(i for i, r in enumerate(records) if r.get("verdict") == "expected divergence")
    records[first] = {**records[first], "bug": "the kernel returns x unchanged; upstream: not found reported"}
    run = report_results.read(_write(tmp_path / "r.jsonl", records))
    marked = records[first]
    key = (report_results.implementations([run])[0, marked["adapter"]], marked["norm"])
    assert "bug" in report_results.kinds([run])[key]
    (line,) = [row for row in report_results.text_matrix([run]).splitlines() if row.startswith(key[0] + " ")]
    assert "B" in line and "B framework bug (NUM.L6)" in report_results.text_matrix([run])
    page = html.build([run])
    assert "<dt>framework bug</dt><dd>the kernel returns x unchanged" in page
    assert 'class="kind k-bug" title="framework bug' in page
    unmarked = report_results.read(
        _write(tmp_path / "plain.jsonl", _records())
    )  # a convention keeps its kind only
    assert not any("bug" in marks for marks in report_results.kinds([unmarked]).values())


@pytest.mark.clause("MP.N2")
def test_results_under_a_mixed_policy_fill_the_mixed_precision_table(tmp_path):
    """One row per implementation x norm x half dtype: the declared statistics and output dtypes, the
    worst passing ratio, the worst verdict and the divergences; no table without a policy's results."""
    records = []
    for r in _records():
        if r["kind"] == "environment" and r["adapter"] == "torch.functional":
            records.append(
                {**r, "adapter": "torch.functional@mixed", "policy": "mixed", "mechanism": "autocast()"}
            )
        if r["kind"] == "result" and r["adapter"] == "torch.functional" and r["dtype"] == "bfloat16":
            mixed = {**r, "adapter": "torch.functional@mixed", "policy": "mixed"}
            records.append({**mixed, "statistics_dtype": "float32", "output_dtype": "bfloat16"})
        records.append(r)
    page = html.build(report_results.load([_write(tmp_path / "mixed.jsonl", records)]))
    section = page[page.index('id="mixed"') : page.index("</section>", page.index('id="mixed"'))]
    assert "torch.functional@mixed" in section and "<code>autocast()</code>" in section
    assert "<td>bfloat16</td><td>float32</td><td>bfloat16</td>" in section  # input, statistics, output
    assert 'id="mixed"' not in html.build(report_results.load([FIXTURE]))
