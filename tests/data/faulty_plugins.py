"""Plug-ins that fail the protocol or hang on every call (tests/test_reliability.py): `normconf check`
must report each after its first example and stop that norm, in seconds rather than minutes."""

import time

import numpy as np

from normconf.adapters.plugin import implementation


@implementation("layer_norm", dtypes=("float32", "float64"))
def raises(x, *, axes, eps):
    raise RuntimeError("this kernel is not built for this shape")


@implementation("rms_norm", dtypes=("float32",))
def wrong_shape(x, *, axes, eps):
    return np.zeros(x.shape[:-1] + (1,), dtype=x.dtype)


@implementation("rms_norm", dtypes=("float32",))
def hangs(x, *, axes, eps):
    time.sleep(3600)


@implementation("layer_norm", dtypes=("float32", "float64"))
def slow(x, *, axes, eps):
    time.sleep(0.2)
    axes = tuple(a % x.ndim for a in axes)
    v = x.astype(np.float64)
    mean, var = v.mean(axis=axes, keepdims=True), v.var(axis=axes, keepdims=True)
    return ((v - mean) / np.sqrt(var + eps)).astype(x.dtype)
