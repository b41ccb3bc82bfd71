"""equinox's normalization layers ('ema' and 'batch' BatchNorm modes), run per sample under jax.vmap
with axis_name, as ModulePlans under one jax.jit per program."""

from __future__ import annotations

from normconf.reference import RunningStats

from .. import _repro
from ..base import (
    NormDeclaration,
    Outcome,
    as_float64,
    channel_axis_of,
    require,
    stepped,
    trailing,
)
from .common import JaxBase
from .declarations import (
    ALL_DTYPES,
    AT_LEAST_FLOAT32,
    EQX_BN_BATCH_CONVENTIONS,
    EQX_BN_CONVENTIONS,
    EQX_GN_CONVENTIONS,
    EQX_LN_CONVENTIONS,
    EQX_RMS_CONVENTIONS,
    INPUT_DTYPE,
)
from .runtime import (
    array,
    compiled_vjp,
    jitted,
    layer_momentum,
    load_jax,
    load_jnp,
    rms_eps,
    running,
    to_numpy,
)


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
            norm="batch_norm",
            api="equinox.nn.BatchNorm",
            dtypes=ALL_DTYPES,
            conventions=EQX_BN_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="equinox.nn.LayerNorm",
            dtypes=ALL_DTYPES,
            conventions=EQX_LN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="equinox.nn.GroupNorm",
            dtypes=ALL_DTYPES,
            conventions=EQX_GN_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            norm="rms_norm",
            api="equinox.nn.RMSNorm",
            dtypes=ALL_DTYPES,
            conventions=EQX_RMS_CONVENTIONS,
            accumulation=AT_LEAST_FLOAT32,
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
            mean, var = (array(plan.state[k], plan.held) for k in ("mean", "var"))
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
                f"extra = extra.set(model.{averages}, (array({mean}, {plan.held!r}), "
                f"array({var}, {plan.held!r})))",
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
            "dtype": self.parameter_dtype("batch_norm", dtype),  # weight, bias and the running statistics
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

    def _trailing(self, norm, module, api, x, params, dtype, cotangent, **kwargs):
        """LayerNorm / RMSNorm: shape = the trailing normalized axes, vmapped over the leading ones."""
        count = trailing(params["axes"], x.ndim)
        require(
            count is not None, f"{api} normalizes each whole (vmapped) sample: trailing axes only (LN.D3)"
        )
        lead = x.ndim - count
        kwargs = {
            "use_weight": params.get("scale") is not None,
            "use_bias": params.get("offset") is not None,
            "dtype": self.parameter_dtype(norm, dtype),  # the weight's and bias's
            **kwargs,
        }
        return self._plan(
            module, (x.shape[lead:],), kwargs, x, params, dtype, cotangent, options={"lead": lead}
        )

    def _run_layer_norm(self, x, params, dtype, cotangent):
        return self._trailing(
            "layer_norm", "LayerNorm", "equinox LayerNorm", x, params, dtype, cotangent, eps=params["eps"]
        )

    def _run_rms_norm(self, x, params, dtype, cotangent):
        eps = rms_eps("equinox RMSNorm", params)
        return self._trailing("rms_norm", "RMSNorm", "equinox RMSNorm", x, params, dtype, cotangent, eps=eps)

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
            "dtype": self.parameter_dtype("group_norm", dtype),
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
            norm="batch_norm",
            api="equinox.nn.BatchNorm(mode='batch')",
            dtypes=ALL_DTYPES,
            conventions=EQX_BN_BATCH_CONVENTIONS,
            accumulation=INPUT_DTYPE,
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
