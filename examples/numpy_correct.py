"""Correct NumPy norms computed differently from the reference: they must pass.

    normconf check examples/numpy_correct.py          # CONFORMS

- layer_norm: Welford's one-pass running mean and variance, element by element.
- rms_norm: pairwise (tree) summation of the squares, eps inside the root, the last axis.
- group_norm: float16 and float32 inputs with statistics accumulated in float32 (declared), the
  sums formed by np.add.reduce in float32 - not float64.
- batch_norm: with running statistics: a stateful implementation (`state` in, `(y, state)` out).
"""

import numpy as np

from normconf.adapters.plugin import implementation
from normconf.reference import RunningStats


@implementation("layer_norm", dtypes=("float32", "float64"))
def layer_norm(x, *, axes, eps, scale=None, offset=None):
    axes = tuple(sorted(a % x.ndim for a in axes))
    kept = [a for a in range(x.ndim) if a not in axes]
    rows = np.moveaxis(x, kept, range(len(kept))).reshape(
        int(np.prod([x.shape[a] for a in kept])), int(np.prod([x.shape[a] for a in axes]))
    )  # no -1: may be empty
    mean = np.zeros(rows.shape[0], dtype=x.dtype)
    m2 = np.zeros(rows.shape[0], dtype=x.dtype)
    for i in range(rows.shape[1]):  # Welford: one pass, numerically stable
        delta = rows[:, i] - mean
        mean = mean + delta / x.dtype.type(i + 1)
        m2 = m2 + delta * (rows[:, i] - mean)
    var = m2 / x.dtype.type(rows.shape[1])
    y_rows = (rows - mean[:, None]) / np.sqrt(var + x.dtype.type(eps))[:, None]
    y = np.moveaxis(
        y_rows.reshape([x.shape[a] for a in kept] + [x.shape[a] for a in axes]), range(len(kept)), kept
    )
    param_shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if scale is not None:
        y = y * scale.reshape(param_shape)
    if offset is not None:
        y = y + offset.reshape(param_shape)
    return y


def _pairwise_sum(v):
    """Sum over the last axis by halving: error growth log2(n) instead of n."""
    while v.shape[-1] > 1:
        if v.shape[-1] % 2:
            v = np.concatenate([v, np.zeros_like(v[..., :1])], axis=-1)
        v = v[..., 0::2] + v[..., 1::2]
    return v[..., 0]


@implementation("rms_norm", dtypes=("float32", "float64"))
def rms_norm(x, *, eps, scale=None):
    mean_square = _pairwise_sum(x * x) / x.dtype.type(x.shape[-1])
    y = x / np.sqrt(mean_square + x.dtype.type(eps))[..., None]
    return y if scale is None else y * scale


@implementation(
    "group_norm", dtypes=("float16", "float32"), accumulation={"float16": "float32", "float32": "float32"}
)
def group_norm(x, *, groups, eps, scale=None, offset=None):
    """Channels on axis 1, contiguous groups; statistics in float32 whatever the input dtype."""
    n, c = x.shape[:2]
    g = x.astype(np.float32).reshape(n, groups, -1)
    mean = np.add.reduce(g, axis=-1, keepdims=True, dtype=np.float32) / np.float32(g.shape[-1])
    centred = g - mean
    var = np.add.reduce(centred * centred, axis=-1, keepdims=True, dtype=np.float32) / np.float32(g.shape[-1])
    y = (centred / np.sqrt(var + np.float32(eps))).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if scale is not None:
        y = y * scale.astype(np.float32).reshape(shape)
    if offset is not None:
        y = y + offset.astype(np.float32).reshape(shape)
    return y.astype(x.dtype)


@implementation("batch_norm", dtypes=("float32", "float64"))
def batch_norm(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Channels on axis 1; PyTorch's conventions: momentum weights the new batch, unbiased running
    variance."""
    axes = (0, *range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training or state is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = state.mean, state.var
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + x.dtype.type(eps))
    if scale is not None:
        y = y * scale.reshape(shape)
    if offset is not None:
        y = y + offset.reshape(shape)
    if training and state is not None:
        n = x.size // x.shape[1]
        w = x.dtype.type(1.0 / (state.num_batches_tracked + 1) if momentum is None else momentum)
        state = RunningStats(
            (1 - w) * state.mean + w * mean,
            (1 - w) * state.var + w * var * x.dtype.type(n / (n - 1)),
            state.num_batches_tracked + 1,
        )
    return y, state
