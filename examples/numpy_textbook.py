"""Every norm as a textbook writes it: two-pass statistics in the input's own dtype, nothing guarded.

    normconf check examples/numpy_textbook.py        # CONFORMS (semantics, accuracy, special values);
                                                     # range limited: squares leave float32 ... (NUM.D1)

Each function is the spec's equation in float32 NumPy - mean, then the mean of the squared deviations,
then divide - with `accumulation` declaring what it is: statistics in float32. Nothing rescales the
input first, so a statistic's sum of squares leaves float32 from |x| ≈ 1.8e19 / sqrt(n) and the group
comes out as its offset (or NaN) there: the range limit NUM.L3 names, the same one every framework
computing in float32 has. Everything else - the equations, the conventions, the accuracy on
ill-conditioned inputs, NaN and inf - holds.
"""

import numpy as np

from normconf.adapters.plugin import implementation
from normconf.reference import RunningStats

FLOAT32 = {"float32": "float32"}


def _shape(x, axes):
    """The shape a parameter over `axes` broadcasts in."""
    return [x.shape[a] if a in axes else 1 for a in range(x.ndim)]


def _affine(y, scale, offset, shape):
    if scale is not None:
        y = y * scale.reshape(shape)
    if offset is not None:
        y = y + offset.reshape(shape)
    return y


def _standardize(x, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(eps)), mean, var


@implementation("layer_norm", dtypes=("float32",), accumulation=FLOAT32)
def layer_norm(x, *, axes, eps, scale=None, offset=None):
    axes = tuple(a % x.ndim for a in axes)
    y, _, _ = _standardize(x, axes, eps)
    return _affine(y, scale, offset, _shape(x, axes))


@implementation("rms_norm", dtypes=("float32",), accumulation=FLOAT32)
def rms_norm(x, *, axes, eps, scale=None):
    axes = tuple(a % x.ndim for a in axes)
    y = x / np.sqrt(np.square(x).mean(axis=axes, keepdims=True) + np.float32(eps))
    return _affine(y, scale, None, _shape(x, axes))


@implementation("group_norm", dtypes=("float32",), accumulation=FLOAT32)
def group_norm(x, *, groups, eps, scale=None, offset=None):
    """Channels on axis 1, contiguous groups."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, -1)
    y, _, _ = _standardize(grouped, (2,), eps)
    return _affine(y.reshape(x.shape), scale, offset, _shape(x, (1,)))


@implementation("instance_norm", dtypes=("float32",), accumulation=FLOAT32)
def instance_norm(x, *, eps, scale=None, offset=None):
    """Channels on axis 1, statistics per sample and channel, no running statistics."""
    y, _, _ = _standardize(x, tuple(range(2, x.ndim)), eps)
    return _affine(y, scale, offset, _shape(x, (1,)))


@implementation("batch_norm", dtypes=("float32",), accumulation=FLOAT32)
def batch_norm(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Channels on axis 1; momentum weights the new batch (None: the cumulative average), the unbiased
    variance updates the running variance."""
    axes = (0, *range(2, x.ndim))
    shape = _shape(x, (1,))
    if training or state is None:
        y, mean, var = _standardize(x, axes, eps)
        mean, var = mean.reshape(-1), var.reshape(-1)
    else:
        mean, var = state.mean, state.var
        y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + np.float32(eps))
    if training and state is not None:
        n = x.size // x.shape[1]
        w = np.float32(1 / (state.num_batches_tracked + 1) if momentum is None else momentum)
        state = RunningStats(
            (1 - w) * state.mean + w * mean,
            (1 - w) * state.var + w * var * np.float32(n / (n - 1)),
            state.num_batches_tracked + 1,
        )
    return _affine(y, scale, offset, shape), state


@implementation("local_response_norm", dtypes=("float32",), accumulation=FLOAT32)
def local_response_norm(x, *, size, alpha, beta, k):
    """Across channels on axis 1, alpha divided by size, the even window's extra channel before: each
    window's squares summed directly (zeros beyond the edges)."""
    pad = [(0, 0)] * x.ndim
    pad[1] = (size // 2, (size - 1) // 2)
    squares = np.pad(np.square(x), pad)
    total = np.lib.stride_tricks.sliding_window_view(squares, size, axis=1).sum(axis=-1)
    return x / (np.float32(k) + np.float32(alpha / size) * total) ** np.float32(beta)


@implementation("lp_normalize", dtypes=("float32",), accumulation=FLOAT32)
def lp_normalize(x, *, p, axes, eps):
    """x / max(||x||_p, eps), as torch.nn.functional.normalize."""
    axes = tuple(a % x.ndim for a in axes)
    norm = (np.abs(x) ** np.float32(p)).sum(axis=axes, keepdims=True) ** np.float32(1 / p)
    return x / np.maximum(norm, np.float32(eps))
