"""flax.linen's normalization layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm and the
synchronized BatchNorm through axis_name), run as ModulePlans under one jax.jit per program."""

from __future__ import annotations

import numpy as np

from normconf.reference import RunningStats

from .. import _replicas
from ..base import (
    NormDeclaration,
    Outcome,
    channel_axis_of,
    require,
    stepped,
)
from .common import _INIT_STRUCTURE, JaxBase, _device_tree, _loaded_zeros
from .declarations import (
    ALL_DTYPES,
    AT_LEAST_FLOAT32,
    LINEN_BN_CONVENTIONS,
    LINEN_GN_CONVENTIONS,
    LINEN_IN_CONVENTIONS,
    LINEN_LN_CONVENTIONS,
    LINEN_RMS_CONVENTIONS,
    SRC_LINEN_SYNC,
    sync_conventions,
)
from .runtime import (
    array,
    compiled_vjp,
    host,
    jitted,
    keywords,
    layer_momentum,
    load_jax,
    no_state,
    normalized_axes,
    rms_eps,
    running,
    sync_run,
    to_numpy,
    tree_literal,
)


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
            norm="batch_norm",
            api="flax.linen.BatchNorm",
            dtypes=ALL_DTYPES,
            conventions=LINEN_BN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="flax.linen.LayerNorm",
            dtypes=ALL_DTYPES,
            conventions=LINEN_LN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="flax.linen.GroupNorm",
            dtypes=ALL_DTYPES,
            conventions=LINEN_GN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            norm="instance_norm",
            api="flax.linen.InstanceNorm",
            dtypes=ALL_DTYPES,
            conventions=LINEN_IN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            norm="rms_norm",
            api="flax.linen.RMSNorm",
            dtypes=ALL_DTYPES,
            conventions=LINEN_RMS_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "sync_batch_norm": NormDeclaration(
            norm="sync_batch_norm",
            api="flax.linen.BatchNorm(axis_name=...) under jax.pmap",
            dtypes=ALL_DTYPES,
            conventions=LINEN_BN_CONVENTIONS
            + sync_conventions(
                SRC_LINEN_SYNC,
                "lax.pmean of the replicas' means of x and |x|^2; unequal batches through `mask`",
            ),
            accumulation=AT_LEAST_FLOAT32,
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
            **self._dtypes("batch_norm", dtype),
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

    def _dtypes(self, norm, dtype) -> dict:
        """The layer's dtype arguments: its parameters' dtype (the input's; float32 under a policy)."""
        return {"param_dtype": self.parameter_dtype(norm, dtype)}

    def _affine_kwargs(self, norm, params, dtype, bias=True) -> dict:
        out = {"use_scale": params.get("scale") is not None, **self._dtypes(norm, dtype)}
        if bias:
            out["use_bias"] = params.get("offset") is not None
        return out

    def _run_layer_norm(self, x, params, dtype, cotangent):
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": params["eps"], "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs("layer_norm", params, dtype)
        return self._plan("LayerNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == x.ndim - 1, "flax GroupNorm takes channels last only (GN.P2)")
        require(
            params["assignment"] == "contiguous",
            "flax GroupNorm groups contiguous channels (GN.D1)",
        )
        kwargs = {"num_groups": params["groups"], "group_size": None, "epsilon": params["eps"]}
        kwargs |= self._affine_kwargs("group_norm", params, dtype)
        return self._plan("GroupNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        no_state("flax InstanceNorm", params)
        kwargs = {"epsilon": params["eps"], "feature_axes": channel_axis_of(x, params)}
        kwargs |= self._affine_kwargs("instance_norm", params, dtype)
        return self._plan("InstanceNorm", (), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "flax RMSNorm has no bias (RMS.P2)")
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": rms_eps("flax RMSNorm", params), "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs("rms_norm", params, dtype, bias=False)
        return self._plan("RMSNorm", (), kwargs, x, params, dtype, cotangent)


# ------------------------------------------------------------------------------------------------
# flax.nnx
