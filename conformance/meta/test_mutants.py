"""Meta-test: the quick profile kills the mutation corpus' wrong implementations (at least
KILL_TARGETS["quick"] of them) and passes every correct one (conformance/meta/mutants.py). The default
profile's table is `normconf bench --sections mutants` (README)."""

from __future__ import annotations

import pytest

from . import mutants


@pytest.mark.clause("NUM.N5", "NUM.N6", "NUM.D1", "BN.S5")
def test_the_quick_profile_kills_the_wrong_and_passes_the_correct(tmp_path):
    rows = mutants.kill_table("quick", tmp_path)
    assert all(row["ran"] for row in rows), [row["name"] for row in rows if not row["ran"]]
    failed = [
        f"{r['name']}: {r['clause']} {r['property']}: {r['message']}"
        for r in rows
        if not r["wrong"] and r["killed"]
    ]
    assert not failed, "correct implementations failed:\n" + "\n".join(failed)
    survivors = [row["name"] for row in rows if row["wrong"] and not row["killed"]]
    assert mutants.kill_rate(rows) >= mutants.KILL_TARGETS["quick"], f"survived: {survivors}"


def test_the_corpus_is_broad():
    """At least 30 wrong implementations across every norm with a NumPy form, and 8 correct ones."""
    wrong, correct = mutants.corpus()
    norms = {getattr(mutants, name).norm for name in wrong}
    assert len(wrong) >= 30 and len(correct) >= 8
    assert norms >= {
        "batch_norm",
        "layer_norm",
        "instance_norm",
        "group_norm",
        "rms_norm",
        "local_response_norm",
        "lp_normalize",
        "channel_normalize",
    }
