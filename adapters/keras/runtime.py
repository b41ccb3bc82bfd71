"""Keras runtime: which process runs a backend (Keras picks one per process), tensors, and one layer
call with its gradients the backend's own way (the jitted JAX programs cached here). Split from
adapters.py; shared by its plans, its no-argument calls and the synchronized programs."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from normconf.reference import Grads

from .. import _compile_cache, _counters, _devices
from ..base import require
from ..plan import dtype_name

# ---------------------------------------------------------------------------------------------
# Which process runs a backend.

_import_lock = threading.Lock()


def _usable_here(backend: str) -> bool:
    """Whether this process can run Keras with `backend`; imports Keras (with it) when nothing else
    has chosen a backend yet."""
    with _import_lock:
        if "keras" not in sys.modules:
            chosen = os.environ.get("KERAS_BACKEND") or backend
            if chosen != backend:
                return False
            os.environ["KERAS_BACKEND"] = backend
        import keras

        if not _CONFIGURED and keras.backend.backend() == backend:  # the backend's device and TF32 (_devices)
            configure = {
                "tensorflow": lambda: _devices.tf_configure(sys.modules["tensorflow"]),
                "jax": lambda: (
                    _devices.jax_configure(sys.modules["jax"]),
                    _counters.watch_jax(),
                    _compile_cache.configure_jax(sys.modules["jax"]),
                ),
                "torch": lambda: _devices.torch_device(sys.modules["torch"]),
            }.get(backend)
            if configure is not None:
                configure()
            _CONFIGURED.append(backend)
        return keras.backend.backend() == backend


_CONFIGURED: list = []


def _keras():
    import keras

    return keras


def _precision(backend: str, dtype: str):
    """float64 on JAX needs x64, which a float64 user turns on; scoped to this call."""
    if backend == "jax" and dtype == "float64":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Tensors and calls, per backend.


def _tensor(value, dtype: str):
    keras = _keras()
    value = np.asarray(value, dtype=np.float64)
    if keras.backend.backend() == "jax":  # rounded on the host: a cast on the device compiles per shape
        import jax.numpy as jnp

        value = value.astype(jnp.dtype(dtype))
    return keras.ops.convert_to_tensor(value, dtype=dtype)


def _numpy(t) -> np.ndarray:
    keras = _keras()
    if keras.backend.backend() == "jax":  # NumPy reads every JAX dtype (bfloat16 through ml_dtypes)
        return np.asarray(t).astype(np.float64)
    if keras.backend.standardize_dtype(t.dtype) in ("float16", "bfloat16"):
        t = keras.ops.cast(t, "float32")
    if hasattr(t, "detach"):  # torch: Keras' convert_to_numpy goes through np.array(tensor), which warns
        return t.detach().cpu().numpy().astype(np.float64)
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


_JITTED: dict = {}


def mixed(layer) -> bool:
    """Whether the layer runs under a mixed dtype policy ("mixed_float16"): compute and variable dtypes
    differ, so its __call__ enters an autocast scope."""
    policy = layer.dtype_policy
    return policy.compute_dtype != policy.variable_dtype


def _stateless_call(layer):
    """(trainable, non_trainable, x, **kwargs) -> (y, non_trainable after): `layer.stateless_call`, or
    for a layer under a mixed policy what a Model's stateless_call (Keras' JAX trainer) does with it -
    its __call__ in a StatelessScope, which enters the policy's autocast scope (`Layer.stateless_call`
    calls `call` directly and skips it)."""
    if not mixed(layer):
        return layer.stateless_call
    keras = _keras()

    def stateless(trainable, non_trainable, x, **kwargs):
        mapping = [
            *zip(layer.trainable_variables, trainable, strict=True),
            *zip(layer.non_trainable_variables, non_trainable, strict=True),
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            y = layer(x, **kwargs)
        return y, [scope.get_current_value(v) for v in layer.non_trainable_variables]

    return stateless


def _jitted(layer, shape: tuple, kwargs: dict):
    """forward_and_back of `layer.stateless_call` under `jax.jit`, as Keras' JAX trainer runs a training
    step: one compilation per program instead of one per primitive and shape, which is what eager JAX
    costs; a call without a cotangent runs it with a zero one (forward and gradient properties share
    it). Layers of one configuration built for one input shape share it (the variables are arguments),
    so such a layer seen before costs no compilation."""
    import jax

    config = {k: v for k, v in layer.get_config().items() if k != "name"}  # a name is unique per layer
    key = (
        type(layer).__name__,
        repr(sorted(config.items())),
        tuple(sorted(kwargs.items())),
        tuple(shape),
        tuple(tuple(v.shape) for v in layer.variables),
    )
    if key not in _JITTED:
        stateless = _stateless_call(layer)

        @jax.jit
        def forward_and_back(x_, trainable_, non_trainable_, g):
            y_, vjp, updated_ = jax.vjp(
                lambda a, t: stateless(t, non_trainable_, a, **kwargs),
                x_,
                trainable_,
                has_aux=True,
            )
            return y_, updated_, vjp(g.astype(y_.dtype))

        shapes: dict = {}

        def out_shape(x_, trainable_, non_trainable_) -> tuple:
            """y's shape (traced once per layer and shape, never compiled): a zero cotangent's."""
            if not shapes:
                traced = jax.eval_shape(
                    lambda *a: stateless(a[1], a[2], a[0], **kwargs)[0],
                    x_,
                    trainable_,
                    non_trainable_,
                )
                shapes["y"] = tuple(traced.shape)
            return shapes["y"]

        _JITTED[key] = forward_and_back, out_shape
    return _JITTED[key]


def _call(backend: str, layer, x, dtype: str, cotangent, wrt: dict, **kwargs):
    """(y, gradients, y's dtype name): y = layer(x, **kwargs) as float64 NumPy and, given a cotangent, the
    gradients of sum(y * cotangent) w.r.t. x and the layer variables in `wrt` (canonical name ->
    variable); variables the call updates (moving statistics) hold their new values afterwards."""
    xt = _tensor(x, dtype)
    grads = {}
    if backend == "jax":
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        forward_and_back, out_shape = _jitted(layer, np.shape(x), kwargs)
        # one program per layer and shape, a training step's: without a cotangent it runs with a zero one
        g = np.zeros(out_shape(xt, trainable, non_trainable)) if cotangent is None else cotangent
        y, updated, (dx, dtrainable) = forward_and_back(xt, trainable, non_trainable, _tensor(g, dtype))
        if cotangent is not None:
            grads["x"] = dx
            for key, var in wrt.items():
                grads[key] = dtrainable[next(i for i, v in enumerate(layer.trainable_variables) if v is var)]
        for var, value in zip(layer.non_trainable_variables, updated, strict=True):
            var.assign(value)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xt)
            for var in wrt.values():
                tape.watch(var.value)
            y = layer(xt, **kwargs)
        if cotangent is not None:
            keys = ["x", *wrt]
            values = tape.gradient(
                y,
                [xt, *(v.value for v in wrt.values())],
                output_gradients=tf.cast(_tensor(cotangent, "float64"), y.dtype),
            )
            grads = dict(zip(keys, values, strict=True))
    elif backend == "torch":
        if cotangent is not None:
            xt.requires_grad_(True)
        y = layer(xt, **kwargs)
        if cotangent is not None:
            y.backward(_tensor(cotangent, dtype).to(y.dtype))
            grads["x"] = xt.grad
            grads.update({key: var.value.grad for key, var in wrt.items()})
    else:  # numpy: no autodiff (declared gradients=False)
        y = layer(xt, **kwargs)
    out = None
    if cotangent is not None:
        out = Grads(
            _numpy(grads["x"]),
            *(None if grads.get(k) is None else _numpy(grads[k]) for k in ("scale", "offset")),
        )
    return _numpy(y), out, dtype_name(y)


def _read(var):
    """A Keras variable's value as a backend tensor (a tf.Variable is read, not wrapped)."""
    value = var.value
    return value.read_value() if hasattr(value, "read_value") else value


def _load(var, value) -> None:
    var.assign(_tensor(value, var.dtype))


class _Layers:
    """`keras.layers`, where a layer this release lacks is not expressible rather than an error (a run
    over several releases, `normconf run --versions`: RMSNormalization came in Keras 3.9)."""

    def __getattr__(self, name: str):
        keras = _keras()
        layer = getattr(keras.layers, name, None)
        require(layer is not None, f"keras.layers.{name} is not in Keras {keras.__version__}")
        return layer
