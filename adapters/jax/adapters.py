"""JAX family: flax.linen, flax.nnx, dm-haiku and equinox normalization layers.

Declarations (with their sources) live in declarations.py and the JAX plumbing in runtime.py. JAX is
imported only when a layer runs. float64 needs JAX's 64-bit mode: the adapters switch
`jax_enable_x64` on before creating any array (a process-wide flag, recorded by `environment()`);
lower dtypes are always requested explicitly, so the flag changes nothing for them.

Each run is a `ModulePlan`: the layer's constructor call, the canonical scale and offset, the
framework's own state as loaded, and how the layer is called. `execute_plan` builds the layer and calls
it under one `jax.jit` per configuration (gradients by `jax.vjp` inside it, w.r.t. x and the
parameters as loaded); `render_plan` writes the same call as a script with the library alone.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices, _replicas, _repro
from ..base import (
    Adapter,
    NormDeclaration,
    Outcome,
    as_float64,
    channel_axis_of,
    require,
    stepped,
    trailing,
)
from ..plan import Executed, Planned
from .declarations import (
    ALL_DTYPES,
    AT_LEAST_FLOAT32,
    EQX_BN_BATCH_CONVENTIONS,
    EQX_BN_CONVENTIONS,
    EQX_GN_CONVENTIONS,
    EQX_LN_CONVENTIONS,
    EQX_RMS_CONVENTIONS,
    HK_BN_CONVENTIONS,
    HK_GN_CONVENTIONS,
    HK_IN_CONVENTIONS,
    HK_LN_CONVENTIONS,
    HK_RMS_CONVENTIONS,
    INPUT_DTYPE,
    LINEN_BN_CONVENTIONS,
    LINEN_GN_CONVENTIONS,
    LINEN_IN_CONVENTIONS,
    LINEN_LN_CONVENTIONS,
    LINEN_RMS_CONVENTIONS,
    NNX_BN_CONVENTIONS,
    NNX_GN_CONVENTIONS,
    NNX_IN_CONVENTIONS,
    NNX_LN_CONVENTIONS,
    NNX_RMS_CONVENTIONS,
    SRC_HK_BN_STATS,
    SRC_LINEN_SYNC,
    sync_conventions,
)
from .runtime import (
    JAX_HEADER,
    ModulePlan,
    array,
    compiled_vjp,
    host,
    jitted,
    keywords,
    layer_momentum,
    load_jax,
    load_jnp,
    no_state,
    normalized_axes,
    rms_eps,
    running,
    sync_run,
    to_numpy,
    tree_literal,
)


class JaxBase(Adapter):
    family = "jax"
    isa_capped = ("xla",)
    compiles = True  # one jax.jit program per layer configuration and shape
    framework = ""  # the importable module whose version environment() reports
    library = ""  # where the plan's layer classes live: "flax.linen"
    repro_import = ""  # how the script imports it

    def environment(self):
        jax = load_jax()
        import jaxlib

        module = importlib.import_module(self.framework)
        return {
            "adapter": self.name,
            "framework": self.framework,
            "version": getattr(module, "__version__", "unknown"),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            **_devices.jax_environment(jax),
            "x64": bool(jax.config.jax_enable_x64),
            "compiled": "jax.jit",  # each layer call runs jitted, as in a user's training step
        }

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        """Below float64 as a user who never turned on 64-bit mode: layers that take their dtype from
        JAX's default float (equinox's) would otherwise build float64 parameters and state."""
        with load_jax().enable_x64(dtype == "float64"):
            return super().run_framework_defaults(norm, x, hints, dtype=dtype)

    # -- plans ----------------------------------------------------------------------------------

    def _plan(self, module, args, kwargs, x, params, dtype, cotangent, *, finish=None, **plan) -> Planned:
        """The plan of `module(*args, **kwargs)` on x with the canonical affine in `params`; its Outcome
        is y and the gradients, or `finish(executed, grads)` (the state after is `executed.after`)."""
        affine = {k: params[k] for k in ("scale", "offset") if params.get(k) is not None}
        module_plan = ModulePlan(module, tuple(args), kwargs, x, dtype, affine, cotangent, **plan)

        def outcome(executed: Executed) -> Outcome:
            grads = None
            if cotangent is not None:
                grads = Grads(*(executed.grads.get(k) for k in ("x", "scale", "offset")))
            return Outcome(executed.y, grads=grads) if finish is None else finish(executed, grads)

        return Planned(module_plan, outcome)

    def _layer(self, plan: ModulePlan, **extra):
        """The plan's layer, constructed (with `extra` keyword arguments the script spells itself)."""
        load_jax()
        return getattr(importlib.import_module(self.library), plan.module)(*plan.args, **plan.kwargs, **extra)

    def execute_plan(self, plan: ModulePlan) -> Executed:
        affine = {k: array(v, plan.dtype) for k, v in plan.affine.items()}
        if plan.replica_sizes is not None:
            y, aux, grads = self._synchronized(plan, affine)
        else:
            y, aux, grads = self._call(plan, array(plan.x, plan.dtype), affine)
        found = {} if grads is None else {"x": grads.x, "scale": grads.scale, "offset": grads.offset}
        return Executed({}, to_numpy(y), found, {"state": aux})

    def _call(self, plan: ModulePlan, x, affine):
        """(y, state after, grads): the layer called on x the library's way (compiled_vjp)."""
        raise NotImplementedError

    def _synchronized(self, plan: ModulePlan, affine):
        """(y, state after, grads) of a synchronized step (sync_run)."""
        raise NotImplementedError

    def render_plan(self, plan: ModulePlan) -> str:
        """The layer built as the plan says and a `forward(x, params, extra)` doing what the compiled
        call does, jitted the same way (vjp inside the jit when there are gradients); params = the
        canonical scale/offset, extra = the framework state as loaded."""
        if plan.replica_sizes is not None:
            return self._render_synchronized(plan)
        lines = [
            *JAX_HEADER,
            self.repro_import,
            f"x = array({_repro.values(plan.x)}, {plan.dtype!r})",
            "params = {"
            + ", ".join(f"{k!r}: array({_repro.values(v)}, {plan.dtype!r})" for k, v in plan.affine.items())
            + "}",
            *self._repro_body(plan),
        ]
        if plan.cotangent is None:
            lines += ["y, aux = jax.jit(forward)(x, params, extra)"]
        else:
            lines += [
                f"g = array({_repro.values(plan.cotangent)}, {plan.dtype!r})",
                "@jax.jit",
                "def forward_and_back(x, params, extra, g):",
                "    y, pullback, aux = jax.vjp(lambda a, b: forward(a, b, extra), x, params, has_aux=True)",
                "    return y, aux, pullback(g.astype(y.dtype))",
                "y, aux, (dx, dparams) = forward_and_back(x, params, extra, g)",
                "grads = {'x': dx, **dparams}",
            ]
        lines += [
            "show('y', y)",
            "show('state after', aux)",
            *(["show('grad', grads)"] if plan.cotangent is not None else []),
        ]
        return _repro.script(lines)

    def _constructor(self, plan: ModulePlan, **extra) -> str:
        """The layer's constructor call as the script writes it (`extra`: keyword arguments as source)."""
        arguments = _repro.arguments(
            plan.args, {**plan.kwargs, **{k: _repro.Source(v) for k, v in extra.items()}}
        )
        return f"{plan.module}({arguments})"

    def _repro_body(self, plan: ModulePlan) -> list[str]:
        """Lines defining `extra` and `forward(x, params, extra) -> (y, state after)`."""
        raise NotImplementedError

    def _render_synchronized(self, plan: ModulePlan) -> str:
        """A synchronized step alone: the CPU devices made first (XLA_FLAGS), the layer with its replica
        axis, and the same `jax.pmap` over the replicas' padded batches that `sync_run` makes."""
        sizes, masked = plan.replica_sizes, plan.options["masked"]
        lines = [
            "import os",
            f"os.environ['XLA_FLAGS'] = {_replicas.jax_env()['XLA_FLAGS']!r}  # before JAX starts",
            *JAX_HEADER,
            self.repro_import,
            f"sizes = {tuple(sizes)!r}",
            f"x = np.array({_repro.values(plan.x)})  # every replica's rows, in order",
            "params = {"
            + ", ".join(f"{k!r}: array({_repro.values(v)}, {plan.dtype!r})" for k, v in plan.affine.items())
            + "}",
            *self._sync_repro_body(plan),
            "def padded(rows):  # replica r's rows, padded to the largest batch",
            "    out = np.zeros((len(sizes), max(sizes)) + rows.shape[1:])",
            "    for r, part in enumerate(np.split(rows, np.cumsum(sizes)[:-1])):",
            "        out[r, :len(part)] = part",
            f"    return array(out.tolist(), {plan.dtype!r})",
            "mask = np.zeros((len(sizes), max(sizes)) + (1,) * (x.ndim - 1), dtype=bool)",
            "for r, n in enumerate(sizes):",
            "    mask[r, :n] = True",
            f"mask = mask if {masked!r} else None  # flax's mask only where the batches differ",
            "devices = jax.devices('cpu')[:len(sizes)]",
            "rows = lambda a: np.concatenate([np.asarray(a[r, :n]) for r, n in enumerate(sizes)])",
        ]
        axes = f"(0, {0 if masked else None}, None, None"
        if plan.cotangent is None:
            lines += [
                "step = jax.pmap(lambda xr, mr, aff, ext: fn(xr, aff, ext, mr), axis_name='r', "
                f"in_axes={axes}), "
                "devices=devices)",
                "y, aux = step(padded(x), mask, params, extra)",
                "y = rows(y)",
            ]
        else:
            lines += [
                f"g = np.array({_repro.values(plan.cotangent)})",
                "def forward_and_back(xr, mr, aff, ext, gr):",
                "    y, pullback, aux = jax.vjp(lambda a, p: fn(a, p, ext, mr), xr, aff, has_aux=True)",
                "    return y, aux, pullback(gr.astype(y.dtype))",
                f"step = jax.pmap(forward_and_back, axis_name='r', in_axes={axes}, 0), devices=devices)",
                "y, aux, (dx, dparams) = step(padded(x), mask, params, extra, padded(g))",
                "y = rows(y)",
                "grads = {'x': rows(dx), **{k: np.asarray(v).sum(axis=0) for k, v in dparams.items()}}",
            ]
        lines += [
            "show('y', y)",
            "show('state after (replica 0)', jax.tree.map(lambda a: a[0], aux))",
            *(["show('grad', grads)"] if plan.cotangent is not None else []),
        ]
        return _repro.script(lines)

    def _sync_repro_body(self, plan: ModulePlan) -> list[str]:
        """Lines defining `extra` and `fn(xr, aff, extra, mask) -> (y, new state)` as the adapter's own."""
        raise NotImplementedError

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        if norm == "sync_batch_norm" and not _replicas.here():  # where the replicas' devices exist
            return _isolated_repro(self, norm, x, params, dtype, cotangent)
        return super().framework_repro(norm, x, params, dtype=dtype, cotangent=cotangent)


def _isolated_repro(adapter, norm, x, params, dtype, cotangent):
    from .. import _isolated

    return _isolated.isolated(adapter.name, _replicas.jax_env()).call(
        "framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent
    )


def _loaded_zeros(abstract):
    """Arrays of zeros shaped as an abstract (eval_shape) tree, built on the host."""
    jax = load_jax()
    return jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), abstract)


def _host_tree(tree):
    """A tree of arrays as NumPy arrays in their own dtypes (a plan's state: literal in the script)."""
    if isinstance(tree, dict):
        return {k: _host_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def _device_tree(tree):
    jax = load_jax()
    return jax.tree.map(jax.device_put, tree)


# ------------------------------------------------------------------------------------------------
# flax.linen


def _linen():
    load_jax()
    import flax.linen as nn

    return nn


def _linen_default(build, stateful=False):
    """A no-argument call: `build(nn, x, hints)` initialized and applied as a user would; BatchNorm
    (whose `use_running_average` has no default) in training mode, its batch_stats coming back."""

    def call(x, hints, dtype):
        jax = load_jax()
        module, xj = build(_linen(), x, hints), array(x, dtype)
        kwargs = {"use_running_average": False} if stateful else {}

        def init_and_apply(xj):  # one program per shape, as a user's jitted step
            variables = module.init(jax.random.key(0), xj, **kwargs)
            if not stateful:
                return module.apply(variables, xj), None
            y, updates = module.apply(variables, xj, mutable=["batch_stats"], **kwargs)
            return y, updates["batch_stats"]

        y, stats = jitted(("flax.linen default", repr(module), stateful), init_and_apply)(xj)
        if not stateful:
            return Outcome(to_numpy(y)), {}
        state = RunningStats(to_numpy(stats["mean"]), to_numpy(stats["var"]), 1)
        return Outcome(to_numpy(y), state), {"state": RunningStats.initial(x.shape[-1]), "training": True}

    return call


# flax.linen and haiku: (configuration, init options, x's shape and dtype) -> the variables' shapes, as
# init traced abstractly (a trace costs more than the compiled call it prepares)
_INIT_STRUCTURE: dict = {}

LINEN_DEFAULT_CALLS = {
    "batch_norm": _linen_default(lambda nn, x, h: nn.BatchNorm(), stateful=True),
    "layer_norm": _linen_default(lambda nn, x, h: nn.LayerNorm()),
    "group_norm": _linen_default(lambda nn, x, h: nn.GroupNorm()),
    "instance_norm": _linen_default(lambda nn, x, h: nn.InstanceNorm()),
    "rms_norm": _linen_default(lambda nn, x, h: nn.RMSNorm()),
}


class FlaxLinen(JaxBase):
    """`flax.linen` modules, initialized and applied functionally (`init` / `apply`)."""

    name = "flax.linen"
    cost = 16.4  # see Adapter.cost (program pool, cold cache, 2026-12-07)
    framework = "flax"
    requires = ("jax", "flax")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "flax.linen.BatchNorm",
            ALL_DTYPES,
            LINEN_BN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "flax.linen.LayerNorm",
            ALL_DTYPES,
            LINEN_LN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "flax.linen.GroupNorm",
            ALL_DTYPES,
            LINEN_GN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "flax.linen.InstanceNorm",
            ALL_DTYPES,
            LINEN_IN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm",
            "flax.linen.RMSNorm",
            ALL_DTYPES,
            LINEN_RMS_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "sync_batch_norm": NormDeclaration(
            "sync_batch_norm",
            "flax.linen.BatchNorm(axis_name=...) under jax.pmap",
            ALL_DTYPES,
            LINEN_BN_CONVENTIONS
            + sync_conventions(
                SRC_LINEN_SYNC,
                "lax.pmean of the replicas' means of x and |x|^2; unequal batches through `mask`",
            ),
            AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
    }

    library, repro_import = "flax.linen", "import flax.linen as nn"

    def no_argument_calls(self):
        return LINEN_DEFAULT_CALLS

    def _call(self, plan, x, affine):
        """Init on x, load the canonical affine (and batch_stats), apply; state after = batch_stats."""
        jax = load_jax()
        module = self._layer(plan)
        init, call = plan.options.get("init", {}), plan.options.get("call", {})
        # Only the variables' structure matters (their values are replaced below): tracing init abstractly
        # spares compiling the random initializers for every new shape, and the structure is traced once
        # per configuration and input (a trace costs more than the compiled call)
        signature = (repr(module), tuple(sorted(init.items())), x.shape, str(x.dtype))
        if signature not in _INIT_STRUCTURE:
            _INIT_STRUCTURE[signature] = jax.eval_shape(
                lambda xj: module.init(jax.random.key(0), xj, **init), x
            )
        variables = _loaded_zeros(_INIT_STRUCTURE[signature])
        if "batch_stats" in plan.state:
            variables = {**variables, "batch_stats": _device_tree(plan.state["batch_stats"])}

        def fn(xj, aff, variables):
            shapes = {name: v.shape for name, v in variables.get("params", {}).items()}
            params = {
                name: aff[key].reshape(shapes[name])
                for key, name in (("scale", "scale"), ("offset", "bias"))
                if key in aff
            }
            full = {**variables, "params": params}
            if "batch_stats" in variables:
                y, updates = module.apply(full, xj, mutable=["batch_stats"], **call)
                return y, updates["batch_stats"]
            return module.apply(full, xj, **call), None

        key = ("flax.linen", repr(module), tuple(sorted(call.items())))
        return compiled_vjp(key, fn, x, affine, variables, plan.cotangent)

    def _repro_body(self, plan):
        init, call = plan.options.get("init", {}), plan.options.get("call", {})
        stateful = "batch_stats" in plan.state
        lines = [
            f"module = nn.{self._constructor(plan)}",
            f"extra = module.init(jax.random.key(0), x{keywords(init)})",
        ]
        if stateful:
            lines.append(f"extra['batch_stats'] = {tree_literal(plan.state['batch_stats'])}")
        lines += [
            "def forward(x, params, extra):",
            "    shapes = {name: v.shape for name, v in extra.get('params', {}).items()}",
            "    loaded = {name: params[key].reshape(shapes[name]) "
            "for key, name in (('scale', 'scale'), ('offset', 'bias')) if key in params}",
            "    full = {**extra, 'params': loaded}",
        ]
        if stateful:
            lines += [
                f"    y, updates = module.apply(full, x, mutable=['batch_stats']{keywords(call)})",
                "    return y, updates['batch_stats']",
            ]
        else:
            lines += [f"    return module.apply(full, x{keywords(call)}), None"]
        return lines

    def _batch_norm(self, x, params, dtype, cotangent, **synchronized):
        state, training = running("flax BatchNorm", params)
        kwargs = {
            "axis": channel_axis_of(x, params),
            "momentum": layer_momentum(params["momentum"]),
            "epsilon": params["eps"],
            "use_scale": params.get("scale") is not None,
            "use_bias": params.get("offset") is not None,
            "param_dtype": dtype,
            **synchronized,
        }
        loaded = {}
        if state is not None:
            # flax holds the statistics' dtype after any update (float32 for half, float64 for float64).
            acc = AT_LEAST_FLOAT32[dtype]
            loaded = {"batch_stats": {"mean": host(state.mean, acc), "var": host(state.var, acc)}}
        # Without running statistics the batch statistics normalize in eval too (BN.S4).
        use_running_average = not training and state is not None

        finish = stepped(state, training, lambda e: (e.after["state"]["mean"], e.after["state"]["var"]))

        if synchronized:
            sizes = tuple(params["replica_sizes"])
            options = {"use_running_average": use_running_average, "masked": len(set(sizes)) > 1}
            return self._plan(
                "BatchNorm",
                (),
                kwargs,
                x,
                params,
                dtype,
                cotangent,
                finish=finish,
                options=options,
                state=loaded,
                replica_sizes=sizes,
            )
        options = {
            "init": {"use_running_average": False},
            "call": {"use_running_average": use_running_average},
        }
        return self._plan(
            "BatchNorm", (), kwargs, x, params, dtype, cotangent, finish=finish, options=options, state=loaded
        )

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._batch_norm(x, params, dtype, cotangent)

    def _run_sync_batch_norm(self, x, params, dtype, cotangent):
        """BatchNorm(axis_name="r") under pmap; unequal batches through its `mask` (SBN.D1)."""
        if not _replicas.here():
            return _replicas.run_in_child(self, _replicas.jax_env(), x, params, dtype, cotangent)
        require(
            params["weighting"] == "equal",
            "flax averages the replicas' statistics: weighting='equal' only (SBN.D1)",
        )
        return self._batch_norm(x, params, dtype, cotangent, axis_name="r")

    def _synchronized(self, plan, affine):
        jax = load_jax()
        module = self._layer(plan)
        sizes = plan.replica_sizes
        shape = (max(sizes),) + plan.x.shape[1:]
        abstract = jax.eval_shape(
            lambda: module.init(
                jax.random.key(0), np.zeros(shape, dtype=np.float32), use_running_average=False
            )
        )
        variables = _loaded_zeros(abstract)
        if "batch_stats" in plan.state:
            variables["batch_stats"] = _device_tree(plan.state["batch_stats"])
        use_running_average = plan.options["use_running_average"]

        def fn(xr, aff, variables, mask):
            names = {"scale": "scale", "offset": "bias"}
            full = {**variables, "params": {names[k]: v for k, v in aff.items()}}
            kwargs = {"use_running_average": use_running_average, "mask": mask}
            if "batch_stats" in variables:
                y, updates = module.apply(full, xr, mutable=["batch_stats"], **kwargs)
                return y, updates["batch_stats"]
            return module.apply(full, xr, **kwargs), None

        return sync_run(
            fn, plan.x, sizes, plan.dtype, affine, variables, plan.cotangent, masked=plan.options["masked"]
        )

    def _sync_repro_body(self, plan):
        return [
            f"module = nn.{self._constructor(plan)}",
            f"extra = {tree_literal(plan.state)}",
            "def fn(xr, aff, extra, mask):",
            "    full = {**extra, 'params': "
            "{{'scale': 'scale', 'offset': 'bias'}[k]: v for k, v in aff.items()}}",
            f"    kwargs = dict(use_running_average={plan.options['use_running_average']!r}, mask=mask)",
            "    if 'batch_stats' in extra:",
            "        y, updates = module.apply(full, xr, mutable=['batch_stats'], **kwargs)",
            "        return y, updates['batch_stats']",
            "    return module.apply(full, xr, **kwargs), None",
        ]

    def _affine_kwargs(self, params, dtype, scale="use_scale", bias="use_bias") -> dict:
        out = {scale: params.get("scale") is not None, "param_dtype": dtype}
        if bias:
            out[bias] = params.get("offset") is not None
        return out

    def _run_layer_norm(self, x, params, dtype, cotangent):
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": params["eps"], "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs(params, dtype)
        return self._plan("LayerNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == x.ndim - 1, "flax GroupNorm takes channels last only (GN.P2)")
        require(
            params["assignment"] == "contiguous",
            "flax GroupNorm groups contiguous channels (GN.D1)",
        )
        kwargs = {"num_groups": params["groups"], "group_size": None, "epsilon": params["eps"]}
        kwargs |= self._affine_kwargs(params, dtype)
        return self._plan("GroupNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        no_state("flax InstanceNorm", params)
        kwargs = {"epsilon": params["eps"], "feature_axes": channel_axis_of(x, params)}
        kwargs |= self._affine_kwargs(params, dtype)
        return self._plan("InstanceNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "flax RMSNorm has no bias (RMS.P2)")
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": rms_eps("flax RMSNorm", params), "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs(params, dtype, bias=None)
        return self._plan("RMSNorm", (), kwargs, x, params, dtype, cotangent)


# ------------------------------------------------------------------------------------------------
# flax.nnx


def _nnx():
    load_jax()
    from flax import nnx

    return nnx


def _nnx_default(build, stateful=False):
    """A no-argument call: the nnx module `build(nnx, x, hints)` (features from x, rngs) called on x;
    BatchNorm in its default mode (batch statistics, running averages updated)."""

    def call(x, hints, dtype):
        nnx = _nnx()
        graphdef, state = nnx.split(build(nnx, x, hints))

        def apply(state, xj):  # one program per shape, as a user's jitted step
            module = nnx.merge(graphdef, state, copy=True)
            y = module(xj)
            return y, ((module.mean.get_value(), module.var.get_value()) if stateful else None)

        y, stats = jitted(("flax.nnx default", graphdef), apply)(state, array(x, dtype))
        if not stateful:
            return Outcome(to_numpy(y)), {}
        state = RunningStats(to_numpy(stats[0]), to_numpy(stats[1]), 1)
        return Outcome(to_numpy(y), state), {"state": RunningStats.initial(x.shape[-1]), "training": True}

    return call


NNX_DEFAULT_CALLS = {
    "batch_norm": _nnx_default(lambda nnx, x, h: nnx.BatchNorm(x.shape[-1], rngs=nnx.Rngs(0)), stateful=True),
    "layer_norm": _nnx_default(lambda nnx, x, h: nnx.LayerNorm(x.shape[-1], rngs=nnx.Rngs(0))),
    "group_norm": _nnx_default(
        lambda nnx, x, h: nnx.GroupNorm(x.shape[-1], num_groups=h["groups"], rngs=nnx.Rngs(0))
    ),
    "instance_norm": _nnx_default(lambda nnx, x, h: nnx.InstanceNorm(x.shape[-1], rngs=nnx.Rngs(0))),
    "rms_norm": _nnx_default(lambda nnx, x, h: nnx.RMSNorm(x.shape[-1], rngs=nnx.Rngs(0))),
}


class FlaxNnx(JaxBase):
    """`flax.nnx` modules (stateful objects; running statistics are `nnx.BatchStat` variables)."""

    name = "flax.nnx"
    cost = 13.3  # see Adapter.cost (program pool, cold cache, 2026-12-07)
    framework = "flax"
    requires = ("jax", "flax")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "flax.nnx.BatchNorm",
            ALL_DTYPES,
            NNX_BN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "flax.nnx.LayerNorm",
            ALL_DTYPES,
            NNX_LN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "flax.nnx.GroupNorm",
            ALL_DTYPES,
            NNX_GN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "flax.nnx.InstanceNorm",
            ALL_DTYPES,
            NNX_IN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm", "flax.nnx.RMSNorm", ALL_DTYPES, NNX_RMS_CONVENTIONS, AT_LEAST_FLOAT32, gradients=True
        ),
    }

    library, repro_import = "flax.nnx", "from flax import nnx"

    def no_argument_calls(self):
        return NNX_DEFAULT_CALLS

    def _call(self, plan, x, affine):
        """Split the module (its running statistics loaded in the BatchStat's own dtype, float32 fixed
        by nnx), then per call merge a copy, load the canonical affine into it and call it; state after
        = the running statistics (BatchNorm)."""
        nnx = _nnx()
        module = self._layer(plan, rngs=nnx.Rngs(0))
        for name, value in plan.state.items():
            variable = getattr(module, name)
            variable.set_value(array(value, variable.get_value().dtype))
        graphdef, state = nnx.split(module)
        use_running_average = plan.options.get("use_running_average")
        kwargs = {} if use_running_average is None else {"use_running_average": use_running_average}

        def fn(xj, aff, state):
            m = nnx.merge(graphdef, state, copy=True)
            for key, attr in (("scale", "scale"), ("offset", "bias")):
                if key in aff:
                    variable = getattr(m, attr)
                    variable.set_value(aff[key].reshape(variable.get_value().shape))
            y = m(xj, **kwargs)
            return y, ((m.mean.get_value(), m.var.get_value()) if kwargs else None)

        return compiled_vjp(("flax.nnx", graphdef, use_running_average), fn, x, affine, state, plan.cotangent)

    def _repro_body(self, plan):
        use_running_average = plan.options.get("use_running_average")
        lines = [f"module = nnx.{self._constructor(plan, rngs='nnx.Rngs(0)')}"]
        lines += [  # BatchNorm: the running statistics as loaded, in the variable's own dtype
            f"module.{name}.set_value(array({_repro.values(value)}, module.{name}.get_value().dtype))"
            for name, value in plan.state.items()
        ]
        call = "" if use_running_average is None else f", use_running_average={use_running_average!r}"
        return [
            *lines,
            "graphdef, extra = nnx.split(module)",
            "def forward(x, params, extra):",
            "    m = nnx.merge(graphdef, extra, copy=True)",
            "    for key, attr in (('scale', 'scale'), ('offset', 'bias')):",
            "        if key in params:",
            "            variable = getattr(m, attr)",
            "            variable.set_value(params[key].reshape(variable.get_value().shape))",
            f"    y = m(x{call})",
            "    return y, "
            + ("None" if use_running_average is None else "(m.mean.get_value(), m.var.get_value())"),
        ]

    def _affine_kwargs(self, params, dtype, bias=True) -> dict:
        out = {"use_scale": params.get("scale") is not None, "param_dtype": dtype}
        if bias:
            out["use_bias"] = params.get("offset") is not None
        return out

    def _run_batch_norm(self, x, params, dtype, cotangent):
        state, training = running("nnx BatchNorm", params)
        axis = channel_axis_of(x, params)
        kwargs = {"axis": axis, "momentum": layer_momentum(params["momentum"]), "epsilon": params["eps"]}
        kwargs |= self._affine_kwargs(params, dtype)
        loaded = {} if state is None else {"mean": state.mean, "var": state.var}
        # Without running statistics the batch statistics normalize in eval too (BN.S4).
        options = {"use_running_average": not training and state is not None}

        finish = stepped(state, training, lambda e: e.after["state"])

        return self._plan(
            "BatchNorm",
            (x.shape[axis],),
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            finish=finish,
            options=options,
            state=loaded,
        )

    def _run_layer_norm(self, x, params, dtype, cotangent):
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": params["eps"], "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs(params, dtype)
        features = (math.prod(x.shape[a] for a in axes),)
        return self._plan("LayerNorm", features, kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == x.ndim - 1, "nnx GroupNorm takes channels last only (GN.P2)")
        require(
            params["assignment"] == "contiguous",
            "nnx GroupNorm groups contiguous channels (GN.D1)",
        )
        kwargs = {"num_groups": params["groups"], "group_size": None, "epsilon": params["eps"]}
        kwargs |= self._affine_kwargs(params, dtype)
        return self._plan("GroupNorm", (x.shape[-1],), kwargs, x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        no_state("nnx InstanceNorm", params)
        axis = channel_axis_of(x, params)
        kwargs = {"epsilon": params["eps"], "feature_axes": axis} | self._affine_kwargs(params, dtype)
        return self._plan("InstanceNorm", (x.shape[axis],), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "nnx RMSNorm has no bias (RMS.P2)")
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": rms_eps("nnx RMSNorm", params), "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs(params, dtype, bias=False)
        features = (math.prod(x.shape[a] for a in axes),)
        return self._plan("RMSNorm", features, kwargs, x, params, dtype, cotangent)


# ------------------------------------------------------------------------------------------------
# dm-haiku


def _haiku():
    load_jax()
    import haiku as hk

    return hk


def _haiku_format(api: str, x, params, norm_clause: str) -> str:
    axis = channel_axis_of(x, params)
    require(
        axis in (1, x.ndim - 1),
        f"{api} takes channels_first (axis 1) or channels_last (axis -1) only ({norm_clause})",
    )
    return "channels_last" if axis == x.ndim - 1 else "channels_first"


def _haiku_default(build, stateful=False):
    """A no-argument call: `build(hk, x, hints)` under transform_with_state, init and applied on x; what
    haiku requires is passed (create_scale/create_offset=True, whose initial 1 and 0 are the canonical
    absent affine; axis=-1). BatchNorm in training: its first zero-debiased EMA update weights the batch
    by 1, whatever the required decay_rate."""

    def call(x, hints, dtype):
        hk, jax = _haiku(), load_jax()
        args = (True,) if stateful else ()
        f = hk.transform_with_state(lambda xj: build(hk, x, hints)(xj, *args))

        def init_and_apply(xj):  # one program per shape, as a user's jitted step
            params, state = f.init(jax.random.key(0), xj)
            return f.apply(params, state, None, xj)

        key = ("haiku default", build, tuple(sorted(hints.items())))
        y, new = jitted(key, init_and_apply)(array(x, dtype))
        if not stateful:
            return Outcome(to_numpy(y)), {}
        mean, var = (
            [v for k, v in new.items() if k.endswith(ema)][0]["average"] for ema in ("mean_ema", "var_ema")
        )
        channels = x.shape[-1]
        return (
            Outcome(to_numpy(y), RunningStats(to_numpy(mean).reshape(-1), to_numpy(var).reshape(-1), 1)),
            {"state": RunningStats.initial(channels), "training": True, "momentum": 1.0},
        )

    return call


HAIKU_DEFAULT_CALLS = {
    "batch_norm": _haiku_default(lambda hk, x, h: hk.BatchNorm(True, True, decay_rate=0.9), stateful=True),
    "layer_norm": _haiku_default(
        lambda hk, x, h: hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)
    ),
    "instance_norm": _haiku_default(lambda hk, x, h: hk.InstanceNorm(create_scale=True, create_offset=True)),
    "group_norm": _haiku_default(lambda hk, x, h: hk.GroupNorm(h["groups"])),
    "rms_norm": _haiku_default(lambda hk, x, h: hk.RMSNorm(axis=-1)),
}


class Haiku(JaxBase):
    """dm-haiku modules under `hk.transform_with_state`."""

    name = "haiku"
    cost = 17.7  # see Adapter.cost (program pool, cold cache, 2026-12-07)
    own_schedule = "BN.D9"
    framework = "haiku"
    requires = ("jax", "haiku")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "haiku.BatchNorm",
            ALL_DTYPES,
            HK_BN_CONVENTIONS,
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "sync_batch_norm": NormDeclaration(
            "sync_batch_norm",
            "haiku.BatchNorm(cross_replica_axis=...) under jax.pmap",
            ALL_DTYPES,
            HK_BN_CONVENTIONS
            + sync_conventions(
                SRC_HK_BN_STATS,
                "lax.pmean of the replicas' mean and mean of squares; no mask: equal batches only",
            ),
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm", "haiku.LayerNorm", ALL_DTYPES, HK_LN_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
        "instance_norm": NormDeclaration(
            "instance_norm", "haiku.InstanceNorm", ALL_DTYPES, HK_IN_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
        "group_norm": NormDeclaration(
            "group_norm", "haiku.GroupNorm", ALL_DTYPES, HK_GN_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
        "rms_norm": NormDeclaration(
            "rms_norm", "haiku.RMSNorm", ALL_DTYPES, HK_RMS_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
    }

    library, repro_import = "haiku", "import haiku as hk"

    def no_argument_calls(self):
        return HAIKU_DEFAULT_CALLS

    def _setup(self, plan, x_shape, dtype, synced=True):
        """(transformed function, module name, parameter shapes, the state as loaded, host arrays): init
        traced abstractly on the shape (parameters are replaced by the canonical affine and haiku's
        initial state is all zeros - EMA counters, hidden values, averages - so nothing runs eagerly),
        then the plan's EMAs (by name suffix: mean_ema, var_ema) loaded. A synchronized layer takes its
        shapes from the same layer without the replica axis (init would need the axis)."""
        hk, jax = _haiku(), load_jax()
        local = {k: v for k, v in plan.kwargs.items() if k != "cross_replica_axis"}
        shaped = hk.transform_with_state(
            lambda xj, *args: getattr(hk, plan.module)(*plan.args, **local)(xj, *args)
        )
        init_args = plan.options.get("init", ())
        signature = (
            plan.module,
            repr(plan.args),
            repr(sorted(local.items())),
            repr(init_args),
            x_shape,
            str(dtype),
        )
        if signature not in _INIT_STRUCTURE:  # traced once per configuration and input
            _INIT_STRUCTURE[signature] = jax.eval_shape(
                lambda xj: shaped.init(None, xj, *init_args), np.zeros(x_shape, dtype)
            )
        params, state = _INIT_STRUCTURE[signature]
        state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)
        for name in state:
            for suffix, ema in plan.state.items():
                if name.endswith(suffix):
                    state[name] = {k: np.asarray(v, state[name][k].dtype) for k, v in ema.items()}
        f = hk.transform_with_state(lambda xj, *args: self._layer(plan)(xj, *args)) if synced else shaped
        (module_name,) = params.keys() if params else ("",)
        shapes = {name: v.shape for name, v in params.get(module_name, {}).items()}
        return f, module_name, shapes, state

    def _call(self, plan, x, affine):
        f, module_name, shapes, state = self._setup(plan, x.shape, x.dtype)
        call_args = plan.options.get("call", ())

        def fn(xj, aff, state):
            loaded = {
                module_name: {key: aff[key].reshape(shapes[key]) for key in ("scale", "offset") if key in aff}
            }
            return f.apply(loaded if aff else {}, state, None, xj, *call_args)

        key = (
            "haiku",
            plan.module,
            plan.args,  # the module's configuration: everything `make` closes over
            repr(sorted(plan.kwargs.items())),
            module_name,
            tuple(sorted(shapes.items())),
            call_args,
        )
        return compiled_vjp(key, fn, x, affine, _device_tree(state), plan.cotangent)

    def _repro_body(self, plan):
        _, module_name, shapes, state = self._setup(plan, plan.x.shape, host(0, plan.dtype).dtype)
        call_args = plan.options.get("call", ())
        return [
            f"f = hk.transform_with_state(lambda x, *args: hk.{self._constructor(plan)}(x, *args))",
            f"extra = {tree_literal(state)}  # haiku's initial state (zeros) with the EMAs loaded",
            f"module_name, shapes = {module_name!r}, {shapes!r}",
            "def forward(x, params, extra):",
            "    loaded = {module_name: {k: params[k].reshape(shapes[k]) "
            "for k in ('scale', 'offset') if k in params}}",
            "    return f.apply(loaded if params else {}, extra, None, x, "
            f"*{_repro.plain(tuple(call_args))})",
        ]

    def _batch_norm(self, x, params, dtype, cotangent, cross_replica_axis=None):
        """The plan of an hk.BatchNorm call.

        hk.BatchNorm's EMAs are zero-debiased (BN.D9): with decay_rate d the update at haiku step t
        weights the new batch by w_t = (1 - d) / (1 - d^t). The canonical update has one constant
        momentum w; with the direct mapping d = 1 - w, w_t = w exactly only when w = 1 (d = 0; at
        t = 1 every d gives w_1 = 1). Any other momentum in a training step with running statistics
        is unsupported: choosing d per call to hit w would model a user who changes decay_rate every
        step, which hides the divergence instead of reporting it.
        """
        data_format = _haiku_format("haiku BatchNorm", x, params, "BN.P1")
        state, training = running("haiku BatchNorm", params)
        decay = 0.0  # unused unless running statistics are updated
        if training and state is not None:
            momentum = params["momentum"]
            decay = 1.0 - momentum
            step = state.num_batches_tracked + 1
            weight = (1.0 - decay) / (1.0 - decay**step) if decay < 1.0 else math.nan
            require(
                weight == momentum or self._own_schedule_on,
                f"haiku BatchNorm zero-debiases its running averages (BN.D9): with decay_rate {decay:g} its "
                f"step {step} weights the new batch by (1 - d)/(1 - d^t) = {weight:.6g}, not the constant "
                f"momentum {momentum:g}; only momentum=1 (decay_rate=0) is expressible",
            )
        loaded = {}
        if state is not None:
            k = state.num_batches_tracked
            channel = channel_axis_of(x, params)
            stat_shape = tuple(x.shape[i] if i == channel else 1 for i in range(x.ndim))
            for ema, value in (("mean_ema", state.mean), ("var_ema", state.var)):
                average = np.asarray(value, dtype=np.float64).reshape(stat_shape)
                # haiku's invariant: average = hidden / (1 - d^counter); hidden = 0 before any update.
                # (Built on the host: device arithmetic would compile for every new shape.)
                hidden = average * (1.0 - decay**k) if k else np.zeros_like(average)
                loaded[ema] = {"counter": k, "hidden": host(hidden, dtype), "average": host(average, dtype)}
        kwargs = {
            "create_scale": params.get("scale") is not None,
            "create_offset": params.get("offset") is not None,
            "decay_rate": decay,
            "eps": params["eps"],
            "data_format": data_format,
            "cross_replica_axis": cross_replica_axis,
        }
        # training: is_training; eval with state: the EMAs; eval without state: the batch's own
        # statistics, not updating anything (test_local_stats, BN.S4).
        options = {"init": (True, False), "call": (training, not training and state is None)}

        def finish(executed, grads):
            return Outcome(executed.y, self._ema_state(executed.after["state"], state), grads)

        extra = {}
        if cross_replica_axis is not None:
            extra = {"replica_sizes": tuple(params["replica_sizes"])}
            options["masked"] = False
        return self._plan(
            "BatchNorm",
            (),
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            finish=finish,
            options=options,
            state=loaded,
            **extra,
        )

    @staticmethod
    def _ema_state(new, state) -> RunningStats | None:
        if state is None:
            return None
        mean_key, var_key = (
            [name for name in new if name.endswith(ema)][0] for ema in ("mean_ema", "var_ema")
        )
        return RunningStats(
            to_numpy(new[mean_key]["average"]).reshape(-1),
            to_numpy(new[var_key]["average"]).reshape(-1),
            int(new[mean_key]["counter"]),
        )

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._batch_norm(x, params, dtype, cotangent)

    def _run_sync_batch_norm(self, x, params, dtype, cotangent):
        """BatchNorm(cross_replica_axis="r") under pmap; replicas hold equal shards (no mask: SBN.D1)."""
        if not _replicas.here():
            return _replicas.run_in_child(self, _replicas.jax_env(), x, params, dtype, cotangent)
        require(
            params["weighting"] == "equal",
            "haiku averages the replicas' statistics: weighting='equal' only (SBN.D1)",
        )
        sizes = tuple(params["replica_sizes"])
        require(
            len(set(sizes)) == 1, "haiku BatchNorm has no mask: every replica holds an equal batch under pmap"
        )
        return self._batch_norm(x, params, dtype, cotangent, cross_replica_axis="r")

    def _synchronized(self, plan, affine):
        sizes = plan.replica_sizes
        shard = (sizes[0],) + plan.x.shape[1:]
        f, module_name, shapes, hk_state = self._setup(plan, shard, host(0, plan.dtype).dtype)
        call_args = plan.options["call"]

        def fn(xr, aff, hk_state, mask):
            loaded = {module_name: {k: aff[k].reshape(shapes[k]) for k in aff}}
            return f.apply(loaded if aff else {}, hk_state, None, xr, *call_args)

        return sync_run(
            fn, plan.x, sizes, plan.dtype, affine, _device_tree(hk_state), plan.cotangent, masked=False
        )

    def _sync_repro_body(self, plan):
        sizes = plan.replica_sizes
        shard = (sizes[0],) + plan.x.shape[1:]
        _, module_name, shapes, hk_state = self._setup(plan, shard, host(0, plan.dtype).dtype)
        return [
            f"f = hk.transform_with_state(lambda x, *args: hk.{self._constructor(plan)}(x, *args))",
            f"extra = {tree_literal(hk_state)}",
            f"module_name, shapes = {module_name!r}, {shapes!r}",
            "def fn(xr, aff, extra, mask):  # haiku has no mask: every replica holds an equal batch",
            "    loaded = {module_name: {k: v.reshape(shapes[k]) for k, v in aff.items()}}",
            f"    return f.apply(loaded if aff else {{}}, extra, None, xr, *{plan.options['call']!r})",
        ]

    def _affine_kwargs(self, params) -> dict:
        return {
            "create_scale": params.get("scale") is not None,
            "create_offset": params.get("offset") is not None,
        }

    def _run_layer_norm(self, x, params, dtype, cotangent):
        axes = normalized_axes(x, params)
        kwargs = {"axis": axes, **self._affine_kwargs(params), "eps": params["eps"], "param_axis": axes}
        return self._plan("LayerNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        no_state("haiku InstanceNorm", params)
        data_format = _haiku_format("haiku InstanceNorm", x, params, "IN.P1")
        kwargs = {**self._affine_kwargs(params), "eps": params["eps"], "data_format": data_format}
        return self._plan("InstanceNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        data_format = _haiku_format("haiku GroupNorm", x, params, "GN.P2")
        require(
            params["assignment"] == "contiguous",
            "haiku GroupNorm groups contiguous channels (GN.D1)",
        )
        kwargs = {**self._affine_kwargs(params), "eps": params["eps"], "data_format": data_format}
        return self._plan("GroupNorm", (params["groups"],), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "haiku RMSNorm has no offset (create_scale only; RMS.P2)")
        axes = normalized_axes(x, params)
        kwargs = {
            "axis": axes,
            "eps": rms_eps("haiku RMSNorm", params),
            "create_scale": params.get("scale") is not None,
            "param_axis": axes,
        }
        return self._plan("RMSNorm", (), kwargs, x, params, dtype, cotangent)


# ------------------------------------------------------------------------------------------------
# equinox


def _eqx():
    load_jax()
    import equinox as eqx

    return eqx


def _with_affine(model, aff):
    """`model` with its weight / bias replaced by the canonical scale / offset (absent ones keep 1 / 0)."""
    eqx = _eqx()
    for key, attr in (("scale", "weight"), ("offset", "bias")):
        if key in aff:
            model = eqx.tree_at(lambda m, attr=attr: getattr(m, attr), model, aff[key])
    return model


def _per_sample(model, xj, lead: int):
    """Apply a per-sample equinox layer over the `lead` leading axes of xj (flattened, then vmapped)."""
    if lead == 0:
        return model(xj)
    rows = xj.reshape((-1,) + xj.shape[lead:])
    return load_jax().vmap(model)(rows).reshape(xj.shape)


def _equinox_default(build, lead):
    """A no-argument call: the per-sample layer `build(eqx, x, hints)` (its required shape / channels
    from x) vmapped over the `lead(x)` leading axes."""

    def call(x, hints, dtype):
        eqx = _eqx()
        arrays, static = eqx.partition(build(eqx, x, hints), eqx.is_array)

        def apply(arrays, xj):  # one program per shape, as a user's jitted step
            return _per_sample(eqx.combine(arrays, static), xj, lead(x))

        y = jitted(("equinox default", static, lead(x)), apply)(arrays, array(x, dtype))
        return Outcome(to_numpy(y)), {}

    return call


def _equinox_batch_default(x, hints, dtype):
    """BatchNorm(channels, axis_name) with its own state, in its default mode (training) under the
    named vmap: the first step replaces the running state by the batch's statistics."""
    model, state = _eqx().nn.make_with_state(_eqx().nn.BatchNorm)(x.shape[1], axis_name="batch")
    y, new = _batch_step(model, state, array(x, dtype))
    mean, var = new.get(model.ema_state_index)
    return (
        Outcome(to_numpy(y), RunningStats(to_numpy(mean), to_numpy(var), 1)),
        {"state": RunningStats.initial(x.shape[1]), "training": True, "momentum": 1.0},
    )


# mode -> (the state index of its running averages, of its first-time flag or counter)
EQX_STATE_INDICES = {
    "ema": ("ema_state_index", "ema_first_time_index"),
    "batch": ("batch_state_index", "batch_counter"),
}


def _eqx_state_indices(model):
    return tuple(getattr(model, name) for name in EQX_STATE_INDICES[model.mode])


def _equinox_batch_mode_default(x, hints, dtype):
    """BatchNorm(channels, axis_name, mode="batch") with its own state, one training step under the named
    vmap: normalized by the batch statistics. Its state after the step is not a canonical one (BN.D22:
    the debiased variance is 99 + v), so only y is compared; the running averages are the hazards'."""
    model, state = _eqx().nn.make_with_state(_eqx().nn.BatchNorm)(x.shape[1], axis_name="batch", mode="batch")
    y, _ = _batch_step(model, state, array(x, dtype))
    return Outcome(to_numpy(y)), {"training": True}


def _batch_step(model, state, xj):
    """One training step of an equinox BatchNorm under the named vmap, jitted (one program per shape)."""
    eqx, jax = _eqx(), load_jax()
    arrays, static = eqx.partition(model, eqx.is_array)

    def step(arrays, state, xj):
        layer = eqx.combine(arrays, static)
        return jax.vmap(layer, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(xj, state)

    return jitted(("equinox default", static), step)(arrays, state, xj)


EQUINOX_DEFAULT_CALLS = {
    "batch_norm": _equinox_batch_default,
    "layer_norm": _equinox_default(lambda eqx, x, h: eqx.nn.LayerNorm(x.shape[-1:]), lambda x: x.ndim - 1),
    "group_norm": _equinox_default(lambda eqx, x, h: eqx.nn.GroupNorm(h["groups"], x.shape[1]), lambda x: 1),
    "rms_norm": _equinox_default(lambda eqx, x, h: eqx.nn.RMSNorm(x.shape[-1:]), lambda x: x.ndim - 1),
}


class Equinox(JaxBase):
    """equinox layers, which take one unbatched sample: batches go through `jax.vmap`."""

    name = "equinox"
    cost = 8.1  # see Adapter.cost (program pool, cold cache, 2026-12-07)
    framework = "equinox"
    requires = ("jax", "equinox")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "equinox.nn.BatchNorm",
            ALL_DTYPES,
            EQX_BN_CONVENTIONS,
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "equinox.nn.LayerNorm",
            ALL_DTYPES,
            EQX_LN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "equinox.nn.GroupNorm",
            ALL_DTYPES,
            EQX_GN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm",
            "equinox.nn.RMSNorm",
            ALL_DTYPES,
            EQX_RMS_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
    }

    library, repro_import = "equinox.nn", "import equinox as eqx"

    def no_argument_calls(self):
        return EQUINOX_DEFAULT_CALLS

    def _call(self, plan, x, affine):
        eqx, jax = _eqx(), load_jax()
        if plan.module != "BatchNorm":  # a per-sample layer over the `lead` leading axes
            arrays, static = eqx.partition(self._layer(plan), eqx.is_array)
            lead = plan.options["lead"]

            def fn(xj, aff, arrays):
                return _per_sample(_with_affine(eqx.combine(arrays, static), aff), xj, lead), None

            return compiled_vjp(("equinox", static, lead), fn, x, affine, arrays, plan.cotangent)
        # BatchNorm over the batch axis named "batch" of a vmap; state after = the running (mean, var)
        model, eqx_state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(*plan.args, **plan.kwargs)
        averages, flag = _eqx_state_indices(model)
        if plan.state:
            mean, var = (array(plan.state[k], plan.dtype) for k in ("mean", "var"))
            eqx_state = eqx_state.set(averages, (mean, var))
            eqx_state = eqx_state.set(flag, load_jnp().array(plan.state["flag"]))
        arrays, static = eqx.partition(model, eqx.is_array)
        inference = plan.options["inference"]

        def fn(xj, aff, extra):
            m = _with_affine(eqx.combine(extra[0], static), aff)
            y, new = jax.vmap(
                lambda xi, s: m(xi, s, inference=inference),
                axis_name="batch",
                in_axes=(0, None),
                out_axes=(0, None),
            )(xj, extra[1])
            return y, new.get(averages)

        return compiled_vjp(
            ("equinox", static, inference), fn, x, affine, (arrays, eqx_state), plan.cotangent
        )

    def _repro_body(self, plan):
        affine = [
            "    for key, attr in (('scale', 'weight'), ('offset', 'bias')):",
            "        if key in params:",
            "            m = eqx.tree_at(lambda m, attr=attr: getattr(m, attr), m, params[key])",
        ]
        if plan.module != "BatchNorm":
            lead = plan.options["lead"]
            return [
                f"model = eqx.nn.{self._constructor(plan)}",
                "extra = None",
                "def forward(x, params, extra):",
                "    m = model",
                *affine,
                f"    rows = x.reshape((-1,) + x.shape[{lead}:])" if lead else "    rows = x",
                "    return " + ("jax.vmap(m)(rows).reshape(x.shape)" if lead else "m(rows)") + ", None",
            ]
        arguments = _repro.arguments(plan.args, plan.kwargs)
        lines = [f"model, extra = eqx.nn.make_with_state(eqx.nn.BatchNorm)({arguments})"]
        averages, flag = EQX_STATE_INDICES[plan.kwargs["mode"]]
        if plan.state:
            mean, var = (_repro.values(plan.state[k]) for k in ("mean", "var"))
            lines += [
                f"extra = extra.set(model.{averages}, (array({mean}, {plan.dtype!r}), "
                f"array({var}, {plan.dtype!r})))",
                f"extra = extra.set(model.{flag}, jnp.array({plan.state['flag']!r}))",
            ]
        return [
            *lines,
            "def forward(x, params, extra):",
            "    m = model",
            *affine,
            f"    y, new = jax.vmap(lambda xi, s: m(xi, s, inference={plan.options['inference']!r}), "
            "axis_name='batch', "
            "in_axes=(0, None), out_axes=(0, None))(x, extra)",
            f"    return y, new.get(model.{averages})",
        ]

    def _run_batch_norm(self, x, params, dtype, cotangent):
        """mode="ema" (the default): a canonical state maps to the running buffers, and
        num_batches_tracked = 0 to equinox's `first_time` flag. A first training step normalizes by
        the batch statistics and *replaces* the running state by them (canonical momentum 1); later
        steps normalize by (1 - m)·batch + m·running, the updated running averages (BN.D10), which
        is reported as it comes out. Without a canonical state (BN.S4) every call is a first step on
        a fresh state, which normalizes by the batch statistics; its state is dropped.
        """
        state, training = self._batch_norm_checks(x, params)
        loaded = {}
        if state is not None:
            loaded = {
                "mean": state.mean,
                "var": state.var,
                "flag": bool(state.num_batches_tracked == 0),  # first_time
            }
        finish = stepped(state, training, lambda e: e.after["state"])
        return self._batch_norm_plan("ema", x, params, dtype, cotangent, loaded, finish)

    @staticmethod
    def _batch_norm_checks(x, params):
        """(state, training), once the channel axis is equinox's."""
        require(
            channel_axis_of(x, params) == 1,
            "equinox BatchNorm normalizes axis 0 of each vmapped sample: channel_axis=1 only (BN.P1)",
        )
        return running("equinox BatchNorm", params)

    def _batch_norm_plan(self, mode, x, params, dtype, cotangent, loaded, finish):
        """The plan of BatchNorm(C, axis_name="batch", mode=mode) with `loaded` state (averages, flag)."""
        state, training = params.get("state"), params["training"]
        kwargs = {
            "axis_name": "batch",
            "eps": params["eps"],
            "channelwise_affine": params.get("scale") is not None or params.get("offset") is not None,
            "momentum": layer_momentum(params["momentum"]),
            "mode": mode,
            "dtype": dtype,
        }
        options = {"inference": not training and state is not None}
        args = (x.shape[1],)
        return self._plan(
            "BatchNorm",
            args,
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            finish=finish,
            options=options,
            state=loaded,
        )

    def _trailing(self, module, api, x, params, dtype, cotangent, **kwargs):
        """LayerNorm / RMSNorm: shape = the trailing normalized axes, vmapped over the leading ones."""
        count = trailing(params["axes"], x.ndim)
        require(
            count is not None, f"{api} normalizes each whole (vmapped) sample: trailing axes only (LN.D3)"
        )
        lead = x.ndim - count
        kwargs = {
            "use_weight": params.get("scale") is not None,
            "use_bias": params.get("offset") is not None,
            "dtype": dtype,
            **kwargs,
        }
        return self._plan(
            module, (x.shape[lead:],), kwargs, x, params, dtype, cotangent, options={"lead": lead}
        )

    def _run_layer_norm(self, x, params, dtype, cotangent):
        return self._trailing(
            "LayerNorm", "equinox LayerNorm", x, params, dtype, cotangent, eps=params["eps"]
        )

    def _run_rms_norm(self, x, params, dtype, cotangent):
        eps = rms_eps("equinox RMSNorm", params)
        return self._trailing("RMSNorm", "equinox RMSNorm", x, params, dtype, cotangent, eps=eps)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(
            channel_axis_of(x, params) == 1,
            "equinox GroupNorm takes channels first per sample: channel_axis=1 only (GN.P2)",
        )
        require(
            params["assignment"] == "contiguous",
            "equinox GroupNorm groups contiguous channels (GN.D1)",
        )
        # channelwise_affine creates both weight and bias; an absent one keeps its 1 or 0, exactly.
        kwargs = {
            "eps": params["eps"],
            "channelwise_affine": params.get("scale") is not None or params.get("offset") is not None,
            "dtype": dtype,
        }
        args = (params["groups"], x.shape[1])
        return self._plan("GroupNorm", args, kwargs, x, params, dtype, cotangent, options={"lead": 1})


class EquinoxBatchMode(Equinox):
    """`equinox.nn.BatchNorm(mode="batch")`, the mode equinox recommends for new code (the default
    'legacy' means 'ema', run by the equinox adapter)."""

    name = "equinox[batch]"
    cost = 2.9  # see Adapter.cost (one norm of equinox's four; program pool, cold, 2026-12-07)
    own_schedule = "BN.D22"
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "equinox.nn.BatchNorm(mode='batch')",
            ALL_DTYPES,
            EQX_BN_BATCH_CONVENTIONS,
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
    }

    def no_argument_calls(self):
        return {"batch_norm": _equinox_batch_mode_default}

    def _run_batch_norm(self, x, params, dtype, cotangent):
        """Training normalizes by the batch statistics; the state is a hidden average h with a counter
        k, read at inference as h / (1 - m^k) (h itself at k = 0). A canonical state (average a, count k)
        loads losslessly as h = a·(1 - m^k) (a at k = 0): equinox's own initial state (0, 1) at count 0
        is the canonical one. A step makes h' = m·h + (1 - m)·batch, k + 1, so the read average weights
        the batch by (1 - m)/(1 - m^(k+1)) and, at k = 0, divides the initial variance too (BN.D22): a
        constant canonical momentum is expressible only as 1 (m = 0), except under `run_own_schedule`.
        """
        state, training = self._batch_norm_checks(x, params)
        m = layer_momentum(params["momentum"])
        if training and state is not None:
            require(
                m == 0.0 or self._own_schedule_on,
                f"equinox BatchNorm(mode='batch') zero-debiases its running averages (BN.D22): with "
                f"momentum {m:g} a step weights the new batch by (1 - m)/(1 - m^t), not the constant "
                f"canonical momentum {params['momentum']:g}; only momentum=1 (equinox's 0) is expressible",
            )
        debias = lambda k: 1.0 if k == 0 else 1.0 - m**k  # noqa: E731 - equinox's inference scale
        loaded = {}
        if state is not None:
            k = state.num_batches_tracked
            require(
                m < 1.0 or k == 0,
                "equinox's momentum lies in (0, 1), exclusive: at 1 (canonical momentum 0) a counted state "
                "is read as 0 / (1 - 1^k), NaN (BN.D22)",
            )
            loaded = {"mean": state.mean * debias(k), "var": state.var * debias(k), "flag": k}

        def finish(executed, grads):
            if state is None:
                return Outcome(executed.y, None, grads)
            k = state.num_batches_tracked + int(training)
            mean, var = (as_float64(v) / debias(k) for v in executed.after["state"])
            return Outcome(executed.y, RunningStats(mean, var, k), grads)

        return self._batch_norm_plan("batch", x, params, dtype, cotangent, loaded, finish)


__all__ = ["Equinox", "EquinoxBatchMode", "FlaxLinen", "FlaxNnx", "Haiku"]
