"""A run of chosen adapters runs what it asked for: `--adapters` selects the meta-tests too (a known
divergence's tests only where the entry names a chosen adapter, none of the suite's self-tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import normconf.conformance as suite
from normconf.conformance.divergences import KNOWN


def _collected(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(suite.__file__).parent), "--collect-only", "-q", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_chosen_adapters_collect_only_their_meta_tests():
    items = _collected("--adapters", "onnxruntime")
    meta = [item for item in items if "/meta/" in item]
    cells = [item for item in items if "/meta/" not in item and not item.endswith("[NOTSET]")]
    assert cells and all("[onnxruntime-" in item for item in cells)
    assert meta and all("onnxruntime" in item or "onnx*" in item for item in meta), meta
    wanted = sum(entry.names("onnxruntime") for entry in KNOWN)
    assert sum("test_known_divergence_still_diverges" in item for item in meta) == wanted
    assert not any("test_mutations" in item or "test_mutants" in item for item in meta)
