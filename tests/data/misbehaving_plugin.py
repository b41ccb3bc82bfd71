"""A plug-in that misbehaves on purpose (tests/test_reliability.py): after its first call in a process,
its layer_norm crashes the interpreter (SIGSEGV) and its rms_norm hangs; its lp_normalize breaks the
protocol by answering in float64. normconf must lose only these cells and report each for what it is."""

import ctypes
import time

import numpy as np

from normconf.adapters.plugin import implementation

CALLS = {"n": 0}


def _misbehave_after_the_first_call() -> bool:
    CALLS["n"] += 1
    return CALLS["n"] > 1


@implementation("layer_norm", dtypes=("float32",))
def crashes(x, axes=(-1,), eps=1e-5):
    if _misbehave_after_the_first_call():
        ctypes.string_at(0)  # reads address 0: a segmentation fault
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps))).astype(np.float32)


@implementation("rms_norm", dtypes=("float32",))
def hangs(x, axes=(-1,), eps=1e-6):
    if _misbehave_after_the_first_call():
        time.sleep(3600)
    return (x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + np.float32(eps))).astype(np.float32)


@implementation("lp_normalize", dtypes=("float32",))
def answers_in_float64(x, axes=(1,)):
    x = x.astype(np.float64)
    return x / np.maximum(np.sqrt((x * x).sum(axis=axes, keepdims=True)), 1e-12)
