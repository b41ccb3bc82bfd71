"""flax.nnx's normalization layers, run as ModulePlans under one jax.jit per program."""

from __future__ import annotations

import math

from normconf.reference import RunningStats

from .. import _repro
from ..base import (
    NormDeclaration,
    Outcome,
    channel_axis_of,
    require,
    stepped,
)
from .common import JaxBase
from .declarations import (
    ALL_DTYPES,
    AT_LEAST_FLOAT32,
    HALF_OUT_FLOAT32,
    NNX_BN_CONVENTIONS,
    NNX_GN_CONVENTIONS,
    NNX_IN_CONVENTIONS,
    NNX_LN_CONVENTIONS,
    NNX_RMS_CONVENTIONS,
)
from .runtime import (
    array,
    compiled_vjp,
    jitted,
    layer_momentum,
    load_jax,
    no_state,
    normalized_axes,
    rms_eps,
    running,
    to_numpy,
)


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
            norm="batch_norm",
            api="flax.nnx.BatchNorm",
            dtypes=ALL_DTYPES,
            conventions=NNX_BN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
            # promote_dtype(x, its float32 BatchStats, ...) with dtype=None: result_type, float32 (MP.N2)
            output=HALF_OUT_FLOAT32,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="flax.nnx.LayerNorm",
            dtypes=ALL_DTYPES,
            conventions=NNX_LN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="flax.nnx.GroupNorm",
            dtypes=ALL_DTYPES,
            conventions=NNX_GN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            norm="instance_norm",
            api="flax.nnx.InstanceNorm",
            dtypes=ALL_DTYPES,
            conventions=NNX_IN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            norm="rms_norm",
            api="flax.nnx.RMSNorm",
            dtypes=ALL_DTYPES,
            conventions=NNX_RMS_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
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

    def _dtypes(self, norm, dtype) -> dict:
        """The layer's dtype arguments: its parameters' dtype (the input's; float32 under a policy)."""
        return {"param_dtype": self.parameter_dtype(norm, dtype)}

    def _affine_kwargs(self, norm, params, dtype, bias=True) -> dict:
        out = {"use_scale": params.get("scale") is not None, **self._dtypes(norm, dtype)}
        if bias:
            out["use_bias"] = params.get("offset") is not None
        return out

    def _run_batch_norm(self, x, params, dtype, cotangent):
        state, training = running("nnx BatchNorm", params)
        axis = channel_axis_of(x, params)
        kwargs = {"axis": axis, "momentum": layer_momentum(params["momentum"]), "epsilon": params["eps"]}
        kwargs |= self._affine_kwargs("batch_norm", params, dtype)
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
        kwargs |= self._affine_kwargs("layer_norm", params, dtype)
        features = (math.prod(x.shape[a] for a in axes),)
        return self._plan("LayerNorm", features, kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == x.ndim - 1, "nnx GroupNorm takes channels last only (GN.P2)")
        require(
            params["assignment"] == "contiguous",
            "nnx GroupNorm groups contiguous channels (GN.D1)",
        )
        kwargs = {"num_groups": params["groups"], "group_size": None, "epsilon": params["eps"]}
        kwargs |= self._affine_kwargs("group_norm", params, dtype)
        return self._plan("GroupNorm", (x.shape[-1],), kwargs, x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        no_state("nnx InstanceNorm", params)
        axis = channel_axis_of(x, params)
        kwargs = {"epsilon": params["eps"], "feature_axes": axis} | self._affine_kwargs(
            "instance_norm", params, dtype
        )
        return self._plan("InstanceNorm", (x.shape[axis],), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "nnx RMSNorm has no bias (RMS.P2)")
        axes = normalized_axes(x, params)
        kwargs = {"epsilon": rms_eps("nnx RMSNorm", params), "reduction_axes": axes, "feature_axes": axes}
        kwargs |= self._affine_kwargs("rms_norm", params, dtype, bias=False)
        features = (math.prod(x.shape[a] for a in axes),)
        return self._plan("RMSNorm", features, kwargs, x, params, dtype, cotangent)


# ------------------------------------------------------------------------------------------------
# dm-haiku
