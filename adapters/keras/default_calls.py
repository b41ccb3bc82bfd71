"""Keras' no-argument calls (`Adapter.no_argument_calls`): each layer built and called with every
argument left at Keras' default, and the canonical parameters that call implies. Split from
adapters.py."""

from __future__ import annotations

import numpy as np

from normconf.reference import RunningStats

from ..base import Outcome
from .runtime import _call, _keras, _Layers, _numpy, _read, _tensor


def _default_layer(build, implied=lambda x: {}, **call):
    """A no-argument call: the layer `build(layers, x, hints)` in Keras' floatx policy, called on x
    converted to `dtype` (Keras casts it to the policy's compute dtype); BatchNorm in training, as
    fit() calls it (called bare it would run in inference and update nothing)."""

    def run(x, hints, dtype):
        layer = build(_Layers(), x, hints)
        if _keras().backend.backend() == "jax":  # jitted, as Keras' JAX trainer runs it (one program)
            layer.build(np.shape(x))
            y, _, _ = _call("jax", layer, x, dtype, None, {}, **call)
        else:
            y = layer(_tensor(x, dtype), **call)
        state = None
        if getattr(layer, "moving_mean", None) is not None:
            state = RunningStats(_numpy(_read(layer.moving_mean)), _numpy(_read(layer.moving_variance)), 1)
        return Outcome(_numpy(y), state), implied(x)

    return run


KERAS_DEFAULT_CALLS = {
    "batch_norm": _default_layer(
        lambda layers, x, h: layers.BatchNormalization(),
        lambda x: {"state": RunningStats.initial(x.shape[-1]), "training": True},
        training=True,
    ),
    "layer_norm": _default_layer(lambda layers, x, h: layers.LayerNormalization()),
    "group_norm": _default_layer(lambda layers, x, h: layers.GroupNormalization(groups=h["groups"])),
    "rms_norm": _default_layer(lambda layers, x, h: layers.RMSNormalization()),
    "lp_normalize": _default_layer(lambda layers, x, h: layers.UnitNormalization()),
}
