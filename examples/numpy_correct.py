"""Correct NumPy norms computed differently from the reference: they must pass.

    normconf check examples/numpy_correct.py          # CONFORMS

- layer_norm: Welford's one-pass running mean and variance, element by element (in float64: float32
  squares overflow from |x| ~ 1.8e19, which NUM.D1 reports).
- rms_norm: pairwise (tree) summation of the squares in float64, eps inside the root, the last axis.
- group_norm: float16 and float32 inputs with statistics accumulated in float32 (declared), the
  sums formed by np.add.reduce in float32 - not float64 - on each group scaled by its largest |x|
  first, so that no square overflows (eps scaled with it).
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
    rows = rows.astype(np.float64)
    mean = np.zeros(rows.shape[0])
    m2 = np.zeros(rows.shape[0])
    for i in range(rows.shape[1]):  # Welford: one pass, numerically stable
        delta = rows[:, i] - mean
        mean = mean + delta / (i + 1)
        m2 = m2 + delta * (rows[:, i] - mean)
    var = m2 / max(rows.shape[1], 1)
    y_rows = ((rows - mean[:, None]) / np.sqrt(var + eps)[:, None]).astype(x.dtype)
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
    v = x.astype(np.float64)
    mean_square = _pairwise_sum(v * v) / x.shape[-1]
    y = v / np.sqrt(mean_square + eps)[..., None]
    return (y if scale is None else y * scale).astype(x.dtype)


@implementation(
    "group_norm", dtypes=("float16", "float32"), accumulation={"float16": "float32", "float32": "float32"}
)
def group_norm(x, *, groups, eps, scale=None, offset=None):
    """Channels on axis 1, contiguous groups; statistics in float32 whatever the input dtype."""
    n, c = x.shape[:2]
    g = x.astype(np.float32).reshape(n, groups, -1)
    top = np.max(np.abs(g), axis=-1, keepdims=True, initial=np.float32(0))
    top = np.where((top == 0) | ~np.isfinite(top), np.float32(1), top)  # nothing to scale, or inf / NaN
    g = g / top
    mean = np.add.reduce(g, axis=-1, keepdims=True, dtype=np.float32) / np.float32(g.shape[-1])
    centred = g - mean
    var = np.add.reduce(centred * centred, axis=-1, keepdims=True, dtype=np.float32) / np.float32(g.shape[-1])
    y = (centred / np.sqrt(var + np.float32(eps) / (top * top))).reshape(x.shape)
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
    v = x.astype(np.float64)  # float32 squares would overflow from |x| ~ 1.8e19 (NUM.D1)
    if training or state is None:
        mean, var = v.mean(axis=axes), v.var(axis=axes)
    else:
        mean, var = state.mean.astype(np.float64), state.var.astype(np.float64)
    y = (v - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if scale is not None:
        y = y * scale.reshape(shape)
    if offset is not None:
        y = y + offset.reshape(shape)
    if training and state is not None:
        n = x.size // x.shape[1]
        w = 1.0 / (state.num_batches_tracked + 1) if momentum is None else momentum
        state = RunningStats(
            ((1 - w) * state.mean + w * mean).astype(x.dtype),
            ((1 - w) * state.var + w * var * (n / (n - 1))).astype(x.dtype),
            state.num_batches_tracked + 1,
        )
    return y.astype(x.dtype), state
