"""A plug-in standing in for a compiled framework whose cache write crashes (tests/test_reliability.py):
while the persistent compilation cache is on, its layer_norm writes an entry into the cache folder and
then crashes the interpreter (SIGSEGV), as jaxlib 0.10.2 once did serializing an entry; with the cache
off it computes. normconf must re-run the call without the cache and discard what the child wrote."""

import ctypes
import os
from pathlib import Path

import numpy as np

from normconf.adapters import _compile_cache
from normconf.adapters.plugin import implementation


@implementation("layer_norm", dtypes=("float64",))
def crashes_with_the_cache_on(x, axes=(-1,), eps=1e-5):
    if _compile_cache.enabled():
        (Path(os.environ[_compile_cache.FOLDER]) / "half-written-entry").write_bytes(b"\0")
        ctypes.string_at(0)  # reads address 0: a segmentation fault
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)
