"""dm-haiku's normalization modules, transformed (hk.transform_with_state) and run as ModulePlans under
one jax.jit per program."""

from __future__ import annotations

import math

import numpy as np

from normconf.reference import RunningStats

from .. import _replicas, _repro
from ..base import (
    NormDeclaration,
    Outcome,
    channel_axis_of,
    require,
)
from .common import _INIT_STRUCTURE, JaxBase, _device_tree
from .declarations import (
    ALL_DTYPES,
    HK_BN_CONVENTIONS,
    HK_GN_CONVENTIONS,
    HK_IN_CONVENTIONS,
    HK_LN_CONVENTIONS,
    HK_RMS_CONVENTIONS,
    INPUT_DTYPE,
    SRC_HK_BN_STATS,
    sync_conventions,
)
from .runtime import (
    array,
    compiled_vjp,
    host,
    jitted,
    load_jax,
    no_state,
    normalized_axes,
    rms_eps,
    running,
    sync_run,
    to_numpy,
    tree_literal,
)


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
            norm="batch_norm",
            api="haiku.BatchNorm",
            dtypes=ALL_DTYPES,
            conventions=HK_BN_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "sync_batch_norm": NormDeclaration(
            norm="sync_batch_norm",
            api="haiku.BatchNorm(cross_replica_axis=...) under jax.pmap",
            dtypes=ALL_DTYPES,
            conventions=HK_BN_CONVENTIONS
            + sync_conventions(
                SRC_HK_BN_STATS,
                "lax.pmean of the replicas' mean and mean of squares; no mask: equal batches only",
            ),
            accumulation=INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="haiku.LayerNorm",
            dtypes=ALL_DTYPES,
            conventions=HK_LN_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            norm="instance_norm",
            api="haiku.InstanceNorm",
            dtypes=ALL_DTYPES,
            conventions=HK_IN_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="haiku.GroupNorm",
            dtypes=ALL_DTYPES,
            conventions=HK_GN_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            norm="rms_norm",
            api="haiku.RMSNorm",
            dtypes=ALL_DTYPES,
            conventions=HK_RMS_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
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
            self.name,  # a policy's layer holds other dtypes
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
                if name.endswith(suffix):  # the averages in their held dtype, the counter in haiku's
                    state[name] = {
                        k: v if isinstance(v, np.ndarray) else np.asarray(v, state[name][k].dtype)
                        for k, v in ema.items()
                    }
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
            self.name,
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
        loaded, held = {}, self.parameter_dtype("batch_norm", dtype)
        if state is not None:
            k = state.num_batches_tracked
            channel = channel_axis_of(x, params)
            stat_shape = tuple(x.shape[i] if i == channel else 1 for i in range(x.ndim))
            for ema, value in (("mean_ema", state.mean), ("var_ema", state.var)):
                average = np.asarray(value, dtype=np.float64).reshape(stat_shape)
                # haiku's invariant: average = hidden / (1 - d^counter); hidden = 0 before any update.
                # (Built on the host: device arithmetic would compile for every new shape.)
                hidden = average * (1.0 - decay**k) if k else np.zeros_like(average)
                loaded[ema] = {"counter": k, "hidden": host(hidden, held), "average": host(average, held)}
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
