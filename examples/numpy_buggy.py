"""Hand-written NumPy norms, each with one deliberate, common bug: what a failing verdict looks like.

    normconf check examples/numpy_buggy.py            # DOES NOT CONFORM, each finding names its clause

- layer_norm: eps added outside the square root, (x - mean) / (std + eps)          -> LN.S1, LN.N1
- group_norm: channel c put in group c % G instead of c // (C/G)                    -> GN.S1, GN.P4
- batch_norm: normalizes with the unbiased variance (x.var(ddof=1))                 -> BN.S1, BN.N2
- local_response_norm: the window is one channel short, range(c - half, c + half)   -> LRN.S1, LRN.N1
"""

import numpy as np

from normconf.adapters.plugin import implementation


def _affine(y, scale, offset, shape):
    if scale is not None:
        y = y * scale.reshape(shape)
    if offset is not None:
        y = y + offset.reshape(shape)
    return y


@implementation("layer_norm", dtypes=("float32", "float64"))
def layer_norm(x, *, eps, scale=None, offset=None):
    """The last axis only: `axes` is not a parameter, so the suite draws axes=(-1,)."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return _affine((x - mean) / (std + eps), scale, offset, (-1,))  # BUG: eps outside the root


@implementation("group_norm", dtypes=("float32", "float64"))
def group_norm(x, *, groups, eps, scale=None, offset=None):
    """Channels on axis 1."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, c // groups, groups, -1)  # BUG: groups interleaved (c % G), not contiguous
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    var = grouped.var(axis=(1, 3), keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return _affine(y, scale, offset, (1, c) + (1,) * (x.ndim - 2))


@implementation("batch_norm", dtypes=("float32", "float64"))
def batch_norm(x, *, eps, scale=None, offset=None):
    """Training-mode batch statistics, channels on axis 1, no running statistics."""
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=1)  # BUG: the unbiased variance normalizes
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return _affine((x - mean) / np.sqrt(var + eps), scale, offset, shape)


@implementation("local_response_norm", dtypes=("float32", "float64"))
def local_response_norm(x, *, size, alpha, beta, k):
    """Across channels on axis 1, alpha divided by size, as PyTorch."""
    half = size // 2
    squares = np.square(x)
    total = np.zeros_like(x)
    for c in range(x.shape[1]):
        window = range(max(0, c - half), min(x.shape[1], c + half))  # BUG: one channel short
        for j in window:
            total[:, c] += squares[:, j]
    return x / (k + alpha / size * total) ** beta
