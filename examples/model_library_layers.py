"""Norm layers in the shapes model libraries ship them, checked as they are (NumPy ports, float32 math).

    normconf check examples/model_library_layers.py:layer_norm_2d
    normconf check examples/model_library_layers.py:batch_norm_float_momentum
    normconf check examples/model_library_layers.py:normalize
    normconf check examples/model_library_layers.py:gemma_rms_norm

- layer_norm_2d: a channels-first LayerNorm2d (timm's, ConvNeXt's): normalizes the channel axis of an
  NCHW input. Its layout is declared once (`conventions={"axes": (1,)}`), and an input of another rank
  is refused with `Unsupported` - the rest is judged.
- batch_norm_float_momentum: a BatchNorm whose momentum is a float - no cumulative average. It
  declares `refuses={"momentum": [None]}`: examples drawing momentum=None are not run (counted, with
  the reason), every other example is.
- normalize: torchvision's `Normalize` shape, `(x - mean) / std` per channel at axis -3.
- gemma_rms_norm: Gemma's RMSNorm, statistics in float32, `x̂ · (1 + weight)` with the weight kept in the
  model's dtype - declared `scale_form="one_plus"` (RMS.N3), so the suite hands it weight as it is.

Each computes its statistics in float32 (declared), so each is range limited where squares leave
float32 (NUM.D1), as every framework computing in float32 is.
"""

import numpy as np

from normconf.adapters import Unsupported
from normconf.adapters.plugin import implementation
from normconf.reference import RunningStats

FLOAT32 = {"float32": "float32"}


@implementation("layer_norm", dtypes=("float32",), conventions={"axes": (1,)}, accumulation=FLOAT32)
def layer_norm_2d(x, *, eps, scale=None, offset=None):
    if x.ndim != 4:
        raise Unsupported(f"LayerNorm2d takes NCHW inputs only, not rank {x.ndim}")
    mean = x.mean(axis=1, keepdims=True)
    var = np.square(x - mean).mean(axis=1, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(eps))
    if scale is not None:
        y = y * scale[:, None, None]
    if offset is not None:
        y = y + offset[:, None, None]
    return y


@implementation("batch_norm", dtypes=("float32",), refuses={"momentum": [None]}, accumulation=FLOAT32)
def batch_norm_float_momentum(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Channels on axis 1; momentum weights the new batch, the unbiased variance updates the state."""
    axes = (0, *range(2, x.ndim))
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    if training or state is None:
        mean = x.mean(axis=axes)
        var = np.square(x - mean.reshape(shape)).mean(axis=axes)
    else:
        mean, var = state.mean, state.var
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + np.float32(eps))
    if scale is not None:
        y = y * scale.reshape(shape)
    if offset is not None:
        y = y + offset.reshape(shape)
    if training and state is not None:
        n = x.size // x.shape[1]
        w = np.float32(momentum)
        state = RunningStats(
            (1 - w) * state.mean + w * mean,
            (1 - w) * state.var + w * var * np.float32(n / (n - 1)),
            state.num_batches_tracked + 1,
        )
    return y, state


@implementation("channel_normalize", dtypes=("float32",), conventions={"channel_axis": -3})
def normalize(x, *, mean, std):
    shape = [1] * x.ndim
    shape[-3] = -1
    return (x - mean.reshape(shape)) / std.reshape(shape)


@implementation(
    "rms_norm",
    dtypes=("float16", "float32"),
    scale_form="one_plus",
    accumulation={"float16": "float32", "float32": "float32"},
)
def gemma_rms_norm(x, *, eps, scale=None):
    """The last axis; computed in float32, weight applied as (1 + weight), cast back."""
    v = x.astype(np.float32)
    y = v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + np.float32(eps))
    if scale is not None:
        y = y * (np.float32(1.0) + scale.astype(np.float32))
    return y.astype(x.dtype)
