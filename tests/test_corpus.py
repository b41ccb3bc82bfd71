"""ONNX's node-test corpus through the spec (conformance/corpus.py): every normalization case is judged
or listed with its reason, the reference agrees with ONNX's expected outputs, the ONNX adapters agree
with the reference, the stock inputs' blind spots are named, and a wrong answer is a disagreement."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from normconf.conformance import corpus  # noqa: E402


@pytest.fixture(scope="module")
def judged():
    return corpus.run()


def test_every_normalization_case_is_judged_or_listed_with_its_reason(judged):
    assert len(judged) == len(corpus.collect()) >= 55  # onnx 1.23: 55 cases of the eight operators
    assert {c.op for c in judged} == set(corpus.OPERATORS)
    for case in judged:
        assert case.verdict in ("agrees", "disagrees", "not expressible")
        assert bool(case.reason) == (case.verdict == "not expressible"), case.name
        assert case.reason or case.reference, case.name


def test_the_reference_agrees_with_onnx_expected_outputs(judged):
    disagreeing = [
        (c.name, [(j.output, j.ratio) for j in c.reference]) for c in judged if c.verdict == "disagrees"
    ]
    assert not disagreeing


def test_the_onnx_adapters_agree_with_the_reference_on_the_corpus(judged):
    for case in judged:
        assert set(case.adapters) == set(corpus.RUNNERS[case.op]), case.name
        for name, outcome in case.adapters.items():
            assert not isinstance(outcome, str), f"{case.name} {name}: {outcome}"
            assert all(j.verdict in ("agrees", "not compared") for j in outcome), (case.name, name, outcome)
            assert any(j.verdict == "agrees" for j in outcome), (case.name, name)


def test_outputs_the_spec_does_not_define_are_listed_not_dropped(judged):
    layer_norm = next(c for c in judged if c.op == "LayerNormalization")
    skipped = [j for j in layer_norm.reference if j.verdict == "not compared"]
    assert [j.output for j in skipped] == ["saved Mean", "saved InvStdDev"] and all(j.reason for j in skipped)


def test_the_stock_inputs_blind_spots_are_named(judged):
    lrn = [c for c in judged if c.op == "LRN"]
    l1 = [c for c in judged if c.op == "LpNormalization" and c.params.get("p") == 1.0]
    assert lrn and all(any(s.startswith("N = C") for s in c.blind_spots) for c in lrn)
    assert l1 and all(any("negative" in s for s in c.blind_spots) for c in l1)


def test_onnxruntime_mvn_is_judged_under_its_declared_epsilon(judged):
    (mvn,) = [c for c in judged if c.op == "MeanVarianceNormalization"]
    (y,) = mvn.adapters["onnxruntime[mvn]"]
    assert y.verdict == "agrees" and "eps=0.0" in y.reason


def test_a_wrong_expected_output_is_a_disagreement():
    case = next(c for c in corpus.collect() if c.model.graph.node[0].op_type == "LayerNormalization")
    inputs, outputs = case.data_sets[0]
    wrong = [np.asarray(outputs[0]) * np.float32(1.001), *outputs[1:]]
    case.data_sets = [(inputs, wrong)]
    found = corpus.run_case(case)
    assert found.verdict == "disagrees" and found.reference[0].ratio > 1


def test_normconf_corpus_onnx_prints_and_writes_json(tmp_path):
    out = tmp_path / "corpus.json"
    done = subprocess.run(
        [sys.executable, "-m", "normconf.cli", "corpus", "onnx", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cases:" in done.stdout
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert len(rows) >= 55 and {"name", "op", "verdict", "reference", "adapters", "blind_spots"} <= set(
        rows[0]
    )
