"""Implementations that follow a convention other than the spec's canonical one, and say so.

    normconf check examples/declared_conventions.py   # CONFORMS: each is checked against its declaration

- layer_norm: the Annotated Transformer's LayerNorm, `a_2 * (x - mean) / (std + eps) + b_2` with PyTorch's
  `x.std(-1)` - the unbiased standard deviation, eps outside the root (LN.P4). Undeclared, the same
  code fails LN.S1 and the failure names this declaration.
- batch_norm: Keras-style running statistics, the biased variance feeding the running variance (BN.P4).
"""

import numpy as np

from normconf.adapters.plugin import implementation
from normconf.reference import RunningStats


@implementation(
    "layer_norm",
    arrays="torch",
    dtypes=("float64",),  # in float32 its x.std squares overflow from |x| ~ 1.8e19: NUM.D1 reports that
    conventions={"normalize_var": "unbiased", "eps_placement": "outside_sqrt"},
)
def annotated_transformer_layer_norm(x, *, eps, scale=None, offset=None):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    y = (x - mean) / (std + eps)
    if scale is not None:
        y = scale * y
    return y if offset is None else y + offset


@implementation("batch_norm", dtypes=("float32", "float64"), conventions={"running_var": "biased"})
def batch_norm(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Channels on axis 1; momentum weights the new batch (as canonical); statistics in float64."""
    axes = (0, *range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    v = x.astype(np.float64)
    use_batch = training or state is None
    mean, var = (v.mean(axis=axes), v.var(axis=axes)) if use_batch else (state.mean, state.var)
    y = (v - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = y if scale is None else y * scale.reshape(shape)
    y = y if offset is None else y + offset.reshape(shape)
    if training and state is not None:
        w = 1.0 / (state.num_batches_tracked + 1) if momentum is None else momentum
        state = RunningStats(
            ((1 - w) * state.mean + w * mean).astype(x.dtype),
            ((1 - w) * state.var + w * var).astype(x.dtype),
            state.num_batches_tracked + 1,
        )
    return y.astype(x.dtype), state
