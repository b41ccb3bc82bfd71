"""Keras 3: the normalization layers, on each of Keras' backends (tensorflow, jax, torch, numpy).

Keras picks its backend once per process, when it is first imported (`KERAS_BACKEND`). An adapter
runs in this process when this process can use its backend (Keras not imported yet and
`KERAS_BACKEND` unset or equal, or Keras already imported with that backend); otherwise its calls go
to a persistent child process started with `KERAS_BACKEND=<backend>` (`_isolated`).

Layers are built as a user would build them (`dtype=` the input dtype), their weights and moving
statistics loaded from the canonical parameters, and called; gradients come from the backend's own
autodiff (`tf.GradientTape`, `jax.vjp` over `Layer.stateless_call`, torch autograd). The NumPy
backend has none. The facts and their sources: declarations.py and the spec's D clauses.

Parameters are canonical: one a caller leaves out means the canonical default (the reference
function's), not Keras'; Keras' defaults are declared, in canonical terms, as Conventions.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices, _isolated, _replicas, _repro
from ..base import Adapter, Outcome, Unsupported, channel_axis_of, require
from ..plan import Executed, Planned, dtype_name
from .declarations import BACKENDS, declarations_for
from .default_calls import KERAS_DEFAULT_CALLS
from .layer_plan import LayerPlan
from .runtime import _call, _keras, _Layers, _load, _numpy, _precision, _read, _tensor, _usable_here
from .sync_programs import _sync_program


def _affine_weights(params, names=(("scale", "gamma"), ("offset", "beta"))) -> tuple[dict, dict]:
    """(weights, wrt) for the canonical scale and offset given: loaded into, and differentiated as,
    the layer's gamma and beta (or the attributes `names` says)."""
    given = {key: attr for key, attr in names if params.get(key) is not None}
    return {attr: params[key] for key, attr in given.items()}, given


def _sorted_axes(axes, ndim: int) -> list[int]:
    return sorted({int(a) % ndim for a in ((axes,) if isinstance(axes, int) else axes)})


# a repro's gradient lines per backend, given the layer call's keyword arguments (as `_call` does it)
KERAS_GRADIENTS = {
    "jax": lambda call: [
        "import jax",
        "trainable = [v.value for v in layer.trainable_variables]",
        "non_trainable = [v.value for v in layer.non_trainable_variables]",
        "@jax.jit  # as Keras' JAX trainer runs a step",
        "def forward_and_back(x_, t_, n_, g_):",
        "    y_, vjp, updated_ = jax.vjp(lambda a, t: layer.stateless_call(t, n_, a"
        f"{', ' + call if call else ''}), x_, t_, has_aux=True)",
        "    return y_, updated_, vjp(g_.astype(y_.dtype))",
        "y, updated, (dx, dtrainable) = forward_and_back(x, trainable, non_trainable, g)",
        "grads = {'x': dx, **{v.path: d for v, d in zip(layer.trainable_variables, dtrainable)}}",
        "for variable, value in zip(layer.non_trainable_variables, updated):",
        "    variable.assign(value)",
    ],
    "tensorflow": lambda call: [
        "import tensorflow as tf",
        "with tf.GradientTape() as tape:",
        "    tape.watch(x)",
        f"    y = layer(x{', ' + call if call else ''})",
        "values = tape.gradient(y, [x, *(v.value for v in layer.trainable_variables)], "
        "output_gradients=tf.cast(g, y.dtype))",
        "grads = dict(zip(['x', *(v.path for v in layer.trainable_variables)], values))",
    ],
    "torch": lambda call: [
        "x.requires_grad_(True)",
        f"y = layer(x{', ' + call if call else ''})",
        "y.backward(g.to(y.dtype))",
        "grads = {'x': x.grad, **{v.path: v.value.grad for v in layer.trainable_variables}}",
    ],
}


# a repro's stateless call of a layer under a mixed policy, as runtime._stateless_call makes it
MIXED_STATELESS_CALL = [
    "def stateless_call(trainable, non_trainable, x, **kwargs):",
    "    # as a Model's stateless_call (Keras' JAX trainer) calls its layers: through __call__, which enters",
    "    # the mixed policy's autocast scope (layer.stateless_call calls layer.call and skips it)",
    "    mapping = [*zip(layer.trainable_variables, trainable),",
    "               *zip(layer.non_trainable_variables, non_trainable)]",
    "    with keras.StatelessScope(state_mapping=mapping) as scope:",
    "        y = layer(x, **kwargs)",
    "    return y, [scope.get_current_value(v) for v in layer.non_trainable_variables]",
]


# backend -> the ISA caps that reach its kernels (Adapter.isa_capped): NumPy's own dispatch is not capped
ISA_CAPPED = {"tensorflow": ("onednn",), "jax": ("xla",), "torch": ("aten",), "numpy": ()}


class Keras(Adapter):
    """The `keras.layers` normalization layers on one Keras backend."""

    def __init__(self, backend: str = "tensorflow"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown Keras backend {backend!r}; one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.name = f"keras[{backend}]"
        self.family, self.requires = BACKENDS[backend]
        self.isa_capped = ISA_CAPPED[backend]
        self.declarations = declarations_for(backend)

    def startup(self) -> str:
        return f"import os; os.environ['KERAS_BACKEND'] = {self.backend!r}; import keras"

    # -- where to run ---------------------------------------------------------------------------

    def _here(self) -> bool:
        if _usable_here(self.backend):
            return True
        if _isolated.in_child():
            raise RuntimeError(
                f"{self.name}: this isolated child imported Keras with backend {_keras().backend.backend()!r}"
            )
        return False

    def child_env(self) -> dict[str, str]:
        """What a child process running this adapter needs in its environment: Keras' backend."""
        return {
            "KERAS_BACKEND": self.backend,
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }

    def _child(self) -> _isolated.Isolated:
        return _isolated.isolated(self.name, self.child_env(), compiles=self.compiles)

    def run(self, norm: str, x, params: dict, *, dtype: str = "float64", cotangent=None) -> Outcome:
        declaration = self.declarations.get(norm)
        if declaration is None:  # answered here, without starting a child
            raise Unsupported(f"{self.name} has no {norm}")
        if dtype not in declaration.dtypes:
            raise Unsupported(f"{declaration.api} does not take {dtype} inputs")
        if cotangent is not None and not declaration.gradients:
            raise Unsupported(f"{declaration.api} has no gradients on the {self.backend} backend")
        if not self._here():
            return self._child().run(norm, x, params, dtype=dtype, cotangent=cotangent)
        with _precision(self.backend, dtype):
            return super().run(norm, x, params, dtype=dtype, cotangent=cotangent)

    def no_argument_calls(self):
        return {norm: call for norm, call in KERAS_DEFAULT_CALLS.items() if norm in self.declarations}

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        if not self._here():
            return self._child().call("run_framework_defaults", norm, x, hints, dtype=dtype)
        with _precision(self.backend, dtype):
            return super().run_framework_defaults(norm, x, hints, dtype=dtype)

    def environment(self):
        if not self._here():
            return self._child().environment()
        keras = _keras()
        env = {
            "adapter": self.name,
            "framework": "keras",
            "version": keras.__version__,
            "backend": keras.backend.backend(),
            "floatx": keras.config.floatx(),
            "epsilon": keras.config.epsilon(),
            "process": f"pid {os.getpid()}",
        }
        device = {
            "tensorflow": lambda: _devices.tf_environment(sys.modules["tensorflow"]),
            "jax": lambda: _devices.jax_environment(sys.modules["jax"]),
            "torch": lambda: _devices.torch_environment(sys.modules["torch"]),
        }.get(self.backend)
        env.update(device() if device is not None else {"device": "cpu"})
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}[self.backend]
        env[f"{module}_version"] = sys.modules[module].__version__ if module in sys.modules else None
        if self.backend == "jax":
            env["jax_enable_x64"] = "only for float64 runs (jax.enable_x64)"
        if self.backend == "tensorflow":
            env["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get(
                "TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on for x86 CPU builds)"
            )
        return env

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        if not self._here():  # written where the backend can be imported
            return self._child().call("framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent)
        if norm == "sync_batch_norm" and not _replicas.here():  # where the logical CPUs exist
            return _isolated.isolated(self.name, _replicas.tf_env(self.child_env())).call(
                "framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent
            )
        with _precision(self.backend, dtype):
            return super().framework_repro(norm, x, params, dtype=dtype, cotangent=cotangent)

    # -- plans ----------------------------------------------------------------------------------

    def layer_dtype(self, dtype: str) -> str:
        """The `dtype=` a layer computing in `dtype` is built with: the dtype itself (a mixed policy's
        adapter: its policy name, policy.py)."""
        return dtype

    def _plan(self, layer, kwargs, x, params, dtype, cotangent, *, weights=None, wrt=None, call=None, **rest):
        """The layer plan with the canonical affine as gamma/beta (unless `weights`/`wrt` say
        otherwise); its Outcome is y and the gradients (or `finish(executed)`)."""
        if weights is None:
            weights, wrt = _affine_weights(params)
        if "dtype" in kwargs:
            kwargs = {**kwargs, "dtype": self.layer_dtype(kwargs["dtype"])}
        finish = rest.pop("finish", None)
        plan = LayerPlan(
            layer,
            kwargs,
            rest.pop("build_shape", x.shape),
            weights,
            call or {},
            x,
            dtype,
            cotangent,
            wrt or {},
            **rest,
        )

        def outcome(executed: Executed) -> Outcome:
            grads = None
            if cotangent is not None:
                grads = Grads(*(executed.grads.get(k) for k in ("x", "scale", "offset")))
            return Outcome(executed.y, grads=grads) if finish is None else finish(executed, grads)

        return Planned(plan, outcome)

    def _built(self, plan: LayerPlan):
        """The plan's layer, built and with its weights loaded."""
        layer = getattr(_Layers(), plan.layer)(**plan.kwargs)
        layer.build(plan.build_shape)
        for attr, value in plan.weights.items():
            _load(getattr(layer, attr), value)
        return layer

    def execute_plan(self, plan: LayerPlan) -> Executed:
        if plan.replica_sizes is not None:
            return self._execute_synchronized(plan)
        layer = self._built(plan)
        wrt = {key: getattr(layer, attr) for key, attr in plan.wrt.items()}
        y, grads, y_dtype = _call(self.backend, layer, plan.x, plan.dtype, plan.cotangent, wrt, **plan.call)
        found = {} if grads is None else {"x": grads.x, "scale": grads.scale, "offset": grads.offset}
        after = {attr: _numpy(_read(getattr(layer, attr))) for attr in plan.reads}
        return Executed({"layer": layer}, y, found, after, y_dtype)

    def _execute_synchronized(self, plan: LayerPlan) -> Executed:
        """BatchNormalization(synchronized=True) in `tf.distribute.MirroredStrategy.run` over logical CPU
        devices, one replica batch each (unequal sizes allowed); gradients by a GradientTape per replica,
        the weights' summed over replicas as the strategy's optimizer step would. The layer and its traced
        step are kept per program (_SyncProgram) and reset to their built values before each call."""
        program = _sync_program(plan)
        strategy, layer = program.strategy, program.layer
        with strategy.scope():
            for var, value in program.initial:
                var.assign(value)
            for attr, value in plan.weights.items():
                _load(getattr(layer, attr), value)
        sizes = plan.replica_sizes
        parts = [_tensor(part, plan.dtype) for part in _replicas.split(plan.x, sizes)]
        xs = strategy.experimental_distribute_values_from_function(
            lambda ctx: parts[ctx.replica_id_in_sync_group]
        )
        grads = {}
        if plan.cotangent is None:
            ys = strategy.run(program.step, args=(xs,))
        else:
            cotangents = [_tensor(part, plan.dtype) for part in _replicas.split(plan.cotangent, sizes)]
            gs = strategy.experimental_distribute_values_from_function(
                lambda ctx: cotangents[ctx.replica_id_in_sync_group]
            )
            ys, per_replica = strategy.run(program.step, args=(xs, gs))
            local = [strategy.experimental_local_results(g) for g in per_replica]
            grads = {key: sum(_numpy(g) for g in local[1 + k]) for k, key in enumerate(plan.wrt)}
            grads["x"] = np.concatenate([_numpy(g) for g in local[0]])
        local_ys = strategy.experimental_local_results(ys)
        y = np.concatenate([_numpy(t) for t in local_ys])
        after = {}
        for attr in plan.reads:
            copies = [_numpy(v) for v in strategy.experimental_local_results(getattr(layer, attr).value)]
            if any(not np.array_equal(c, copies[0], equal_nan=True) for c in copies):  # SBN.S3
                raise RuntimeError(f"the replicas hold different {attr}: {[c.tolist() for c in copies]}")
            after[attr] = copies[0]
        return Executed({"layer": layer}, y, grads, after, dtype_name(local_ys[0]))

    def render_plan(self, plan: LayerPlan) -> str:
        """The layer built and loaded as the plan says and called, with gradients the backend's own way
        (jax.vjp of stateless_call under jit, GradientTape, backward); a synchronized step in a
        MirroredStrategy over logical CPUs made before TF starts."""
        if plan.replica_sizes is not None:
            return self._render_synchronized(plan)
        to_numpy = (
            "keras.ops.convert_to_numpy(keras.ops.cast(v.detach() if hasattr(v, 'detach') else v, 'float32' "
            "if keras.backend.standardize_dtype(v.dtype) in ('float16', 'bfloat16') else v.dtype))"
        )
        lines = [*_repro.HEADER, "import os", f"os.environ['KERAS_BACKEND'] = {self.backend!r}"]
        if self.backend == "jax" and plan.dtype == "float64":
            lines += ["import jax", "jax.config.update('jax_enable_x64', True)"]
        lines += [
            "import keras",
            *_repro.show_function(to_numpy),
            f"layer = keras.layers.{plan.layer}({_repro.arguments((), plan.kwargs)})",
            f"layer.build({tuple(plan.build_shape)!r})",
            *(
                f"layer.{attr}.assign(keras.ops.convert_to_tensor(np.array({_repro.values(value)}), "
                f"dtype=layer.{attr}.dtype))"
                for attr, value in plan.weights.items()
            ),
            f"x = keras.ops.convert_to_tensor(np.array({_repro.values(plan.x)}), dtype={plan.dtype!r})",
        ]
        call = _repro.arguments((), plan.call)
        if plan.cotangent is None and self.backend == "jax":
            lines += [
                "import jax",
                "non_trainable = [v.value for v in layer.non_trainable_variables]",
                "forward = jax.jit(lambda x_, t_, n_: layer.stateless_call(t_, n_, x_"
                f"{', ' + call if call else ''}))  # as Keras' JAX trainer runs a step",
                "y, updated = forward(x, [v.value for v in layer.trainable_variables], non_trainable)",
                "for variable, value in zip(layer.non_trainable_variables, updated):",
                "    variable.assign(value)",
            ]
        elif plan.cotangent is None:
            lines.append(f"y = layer(x{', ' + call if call else ''})")
        else:
            lines.append(
                f"g = keras.ops.convert_to_tensor(np.array({_repro.values(plan.cotangent)}), "
                f"dtype={plan.dtype!r})"
            )
            lines += KERAS_GRADIENTS[self.backend](call)
        lines += [
            "show('y', y)",
            "for variable in layer.non_trainable_variables:",
            "    show(variable.path, variable.value)",
        ]
        if plan.cotangent is not None:
            lines.append("show('grad', grads)")
        if self.backend == "jax" and str(plan.kwargs.get("dtype", "")).startswith("mixed_"):
            at = next(i for i, line in enumerate(lines) if line.startswith("x = ")) + 1
            lines[at:at] = MIXED_STATELESS_CALL
            lines = [line.replace("layer.stateless_call(", "stateless_call(") for line in lines]
        return _repro.script(lines)

    def _render_synchronized(self, plan: LayerPlan) -> str:
        sizes, x = plan.replica_sizes, plan.x
        weights = {k: _repro.Source(_repro.values(v)) for k, v in plan.weights.items()}
        lines = [
            *_repro.HEADER,
            "import os",
            "os.environ['KERAS_BACKEND'] = 'tensorflow'",
            "import tensorflow as tf",
            "cpu = tf.config.list_physical_devices('CPU')[0]  # logical devices: before TF starts",
            "tf.config.set_logical_device_configuration(cpu, "
            f"[tf.config.LogicalDeviceConfiguration()] * {len(sizes)})",
            "import keras",
            *_repro.show_function("tf.cast(v, tf.float64)"),
            f"sizes = {sizes!r}",
            "strategy = tf.distribute.MirroredStrategy("
            "[d.name for d in tf.config.list_logical_devices('CPU')][:len(sizes)])",
            "with strategy.scope():",
            f"    layer = keras.layers.{plan.layer}({_repro.arguments((), plan.kwargs)})",
            f"    layer.build({tuple(plan.build_shape)!r})",
            f"    weights = {_repro.plain(weights)}",
            "    for name, value in weights.items():",
            "        variable = getattr(layer, name)",
            "        variable.assign(keras.ops.convert_to_tensor(np.array(value), dtype=variable.dtype))",
            f"x = np.array({_repro.values(x)})  # every replica's rows, in order",
            "split = lambda a: [keras.ops.convert_to_tensor(p, dtype="
            f"{plan.dtype!r}"
            ") for p in np.split(a, np.cumsum(sizes)[:-1])]",
            "per_replica = lambda parts: strategy.experimental_distribute_values_from_function("
            "lambda ctx: parts[ctx.replica_id_in_sync_group])",
            "xs = per_replica(split(x))",
            "local = strategy.experimental_local_results",
        ]
        call = _repro.arguments((), plan.call)
        if plan.cotangent is None:
            lines += [f"ys = strategy.run(tf.function(lambda xr: layer(xr, {call})), args=(xs,))"]
        else:
            keys = list(plan.wrt)
            lines += [
                f"g = np.array({_repro.values(plan.cotangent)})",
                f"variables = [{', '.join(f'layer.{plan.wrt[k]}.value' for k in keys)}]",
                "def step(xr, gr):",
                "    with tf.GradientTape() as tape:",
                "        tape.watch(xr)",
                f"        yr = layer(xr, {call})",
                "    return yr, tape.gradient(yr, [xr, *variables], output_gradients=tf.cast(gr, yr.dtype))",
                "ys, grads_per_replica = strategy.run(tf.function(step), args=(xs, per_replica(split(g))))",
                "parts = [local(t) for t in grads_per_replica]",
                "grads = {'x': tf.concat([tf.cast(t, tf.float64) for t in parts[0]], 0),",
                f"         **{{key: sum(tf.cast(t, tf.float64) for t in parts[1 + i]) "
                f"for i, key in enumerate({keys!r})}}}}",
            ]
        lines += [
            "y = tf.concat([tf.cast(t, tf.float64) for t in local(ys)], 0)",
            "show('y', y)",
            "show('moving_mean', local(layer.moving_mean.value)[0])",
            "show('moving_variance', local(layer.moving_variance.value)[0])",
            *(["show('grad', grads)"] if plan.cotangent is not None else []),
        ]
        return _repro.script(lines)

    # -- norms ----------------------------------------------------------------------------------

    def _batch_norm(self, x, params, dtype, cotangent, **synchronized):
        """BatchNormalization's plan (synchronized: over `replica_sizes`, built for any batch size)."""
        require(
            params["running_var"] == "biased",
            "Keras updates moving_variance with the biased batch variance (BN.D1)",
        )
        momentum = params["momentum"]
        require(momentum is not None, "Keras has no cumulative average, momentum=None (BN.D7)")
        state, training = params.get("state"), params["training"]
        kwargs = {
            "axis": channel_axis_of(x, params),
            "momentum": 1.0 - momentum,
            "epsilon": params["eps"],
            "center": params.get("offset") is not None,
            "scale": params.get("scale") is not None,
            "dtype": dtype,
            **synchronized,
        }
        weights, wrt = _affine_weights(params)
        if state is not None:
            weights |= {"moving_mean": state.mean, "moving_variance": state.var}

        def finish(executed, grads):
            new_state = state
            if state is not None and training:
                after = executed.after
                new_state = RunningStats(
                    after["moving_mean"], after["moving_variance"], state.num_batches_tracked + 1
                )
            return Outcome(executed.y, new_state, grads)

        # No state: the batch statistics normalize in either mode (BN.S4); the moving ones are dropped.
        return self._plan(
            "BatchNormalization",
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            weights=weights,
            wrt=wrt,
            call={"training": training or state is None},
            reads=("moving_mean", "moving_variance") if state is not None and training else (),
            finish=finish,
            **(
                {"build_shape": (None,) + x.shape[1:], "replica_sizes": tuple(params["replica_sizes"])}
                if synchronized
                else {}
            ),
        )

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._batch_norm(x, params, dtype, cotangent)

    def _run_sync_batch_norm(self, x, params, dtype, cotangent):
        """BatchNormalization(synchronized=True) over logical CPU devices (`_execute_synchronized`), in a
        child that made them before TF started where this process could not."""
        if not _replicas.here():
            return _replicas.run_in_child(
                self, _replicas.tf_env(self.child_env()), x, params, dtype, cotangent
            )
        require(
            params["weighting"] == "count",
            "Keras pools the replicas by count: weighting='count' only (SBN.D2)",
        )
        return self._batch_norm(x, params, dtype, cotangent, synchronized=True)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        kwargs = {
            "axis": _sorted_axes(params["axes"], x.ndim),
            "epsilon": params["eps"],
            "center": params.get("offset") is not None,
            "scale": params.get("scale") is not None,
            "dtype": dtype,
        }
        return self._plan("LayerNormalization", kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(params["assignment"] == "contiguous", "Keras groups contiguous channels (GN.D1)")
        kwargs = {
            "groups": params["groups"],
            "axis": channel_axis_of(x, params),
            "epsilon": params["eps"],
            "center": params.get("offset") is not None,
            "scale": params.get("scale") is not None,
            "dtype": dtype,
        }
        return self._plan("GroupNormalization", kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "keras.layers.RMSNormalization has no offset")
        axes = _sorted_axes(params["axes"], x.ndim)
        kwargs = {"axis": axes, "epsilon": params["eps"], "dtype": dtype}
        scale = params.get("scale")
        # The layer always has a scale: absent canonically means ones (exactly x1), not differentiated.
        weights = {"scale": np.ones(tuple(x.shape[a] for a in axes)) if scale is None else scale}
        wrt = {} if scale is None else {"scale": "scale"}
        return self._plan("RMSNormalization", kwargs, x, params, dtype, cotangent, weights=weights, wrt=wrt)

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(params["p"] == 2, "keras.layers.UnitNormalization is p = 2 only")
        require(
            params["eps_placement"] == "max_norm",
            "UnitNormalization bounds the norm: eps_placement='max_norm' only (LP.D1)",
        )
        require(params["eps"] == 1e-12, "UnitNormalization hard-codes epsilon=1e-12")
        axes = params["axes"]
        axes = list(range(x.ndim)) if axes is None else _sorted_axes(axes, x.ndim)
        kwargs = {"axis": axes, "dtype": dtype}
        return self._plan("UnitNormalization", kwargs, x, params, dtype, cotangent, weights={}, wrt={})

    def _run_channel_normalize(self, x, params, dtype, cotangent):
        floor = _keras().config.epsilon()
        require(
            params["std_floor"] == floor,
            f"keras.layers.Normalization floors the std at keras.config.epsilon() = {floor} (CN.D2)",
        )
        axis = channel_axis_of(x, params, -3)
        channels = x.shape[axis]
        mean = np.broadcast_to(np.ravel(np.asarray(params["mean"], dtype=np.float64)), (channels,))
        std = np.broadcast_to(np.ravel(np.asarray(params["std"], dtype=np.float64)), (channels,))
        kwargs = {"axis": axis, "mean": mean, "variance": std**2, "dtype": dtype}
        return self._plan("Normalization", kwargs, x, params, dtype, cotangent, weights={}, wrt={})


__all__ = ["Keras", "Unsupported"]


# One adapter per backend, each registered by name (pyproject.toml, entry points "normconf.adapters")
class KerasTensorflow(Keras):
    cost = 14.2  # see Adapter.cost

    def __init__(self):
        super().__init__("tensorflow")


class KerasJax(Keras):
    cost = 14.1  # see Adapter.cost (program pool, cold cache, 2026-12-07)
    compiles = True  # each layer call runs under jax.jit

    def __init__(self):
        super().__init__("jax")


class KerasTorch(Keras):
    cost = 3.3  # see Adapter.cost

    def __init__(self):
        super().__init__("torch")


class KerasNumpy(Keras):
    cost = 2.1  # see Adapter.cost

    def __init__(self):
        super().__init__("numpy")
