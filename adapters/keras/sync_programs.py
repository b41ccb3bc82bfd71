"""Synchronized BatchNormalization (keras[tensorflow], SBN): one MirroredStrategy per device set and
one built layer with its traced step per program, both made once and kept. Split from adapters.py,
whose `_execute_synchronized` runs them."""

from __future__ import annotations

from dataclasses import dataclass

from .. import _counters, _replicas
from ..base import require
from .layer_plan import LayerPlan
from .runtime import _Layers, _numpy, _read

_STRATEGIES: dict = {}


def _mirrored(devices: tuple[str, ...]):
    """One MirroredStrategy per device set (made once: it starts the collective runtime)."""
    if devices not in _STRATEGIES:
        import tensorflow as tf

        _STRATEGIES[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _STRATEGIES[devices]


@dataclass(frozen=True)
class _SyncProgram:
    """A synchronized BatchNormalization built once per program - layer configuration, replica shapes,
    dtype, call and the variables differentiated - with its step traced once (tf.function): tracing a
    new step per call cost ~0.4 s of every SyncBatchNorm example. `initial` holds every variable's
    value as built, restored before each call, so a call sees a fresh layer."""

    strategy: object
    layer: object
    step: object
    initial: tuple


_SYNC_PROGRAMS: dict = {}


def _sync_program(plan: LayerPlan) -> _SyncProgram:
    import tensorflow as tf

    devices = _replicas.tf_logical_cpus()
    sizes = plan.replica_sizes
    require(len(sizes) <= len(devices), f"{len(sizes)} replicas, {len(devices)} logical devices")
    key = (
        plan.layer,
        repr(sorted(plan.kwargs.items())),
        tuple(plan.build_shape),
        tuple(sizes),
        tuple(plan.x.shape[1:]),
        plan.dtype,
        repr(sorted(plan.call.items())),
        tuple(plan.wrt.items()),
        plan.cotangent is None,
    )
    if key in _SYNC_PROGRAMS:
        return _SYNC_PROGRAMS[key]
    strategy = _mirrored(tuple(devices[: len(sizes)]))
    with strategy.scope():
        layer = getattr(_Layers(), plan.layer)(**plan.kwargs)
        layer.build(plan.build_shape)
    initial = tuple((var, _numpy(_read(var))) for var in layer.variables)
    variables = [getattr(layer, attr).value for attr in plan.wrt.values()]
    if plan.cotangent is None:
        step = tf.function(lambda xr: layer(xr, **plan.call))
    else:

        def differentiated(xr, gr):
            with tf.GradientTape() as tape:
                tape.watch(xr)
                yr = layer(xr, **plan.call)
            return yr, tape.gradient(yr, [xr, *variables], output_gradients=tf.cast(gr, yr.dtype))

        step = tf.function(differentiated)
    _counters.traced()
    _SYNC_PROGRAMS[key] = _SyncProgram(strategy, layer, step, initial)
    return _SYNC_PROGRAMS[key]
