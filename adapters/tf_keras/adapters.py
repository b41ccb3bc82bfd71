"""Keras 2 (`tf_keras`): the legacy Keras layers TF model code and transformers' TF models still use.

Imported as `tf_keras` directly (no TF_USE_LEGACY_KERAS needed), on TensorFlow; it runs beside Keras 3 in
one process. Layers are built as a user builds them (`dtype=` the input dtype), their weights and moving
statistics assigned from the canonical parameters, and called under a `tf.GradientTape`; every call is a
plan (plan.py) on TensorFlow's runtime, so its repro is the same call with tf_keras alone. The facts and
their sources: declarations.py and the spec's D clauses (BN.D23, LN.D12, GN.D11, LP.D8).

Parameters are canonical; Keras 2's defaults are declared, in canonical terms, as Conventions.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices
from ..base import Adapter, Outcome, Unsupported, channel_axis_of, require, stepped
from ..plan import Block, Executed, Get, Input, Plan, Planned, Step, Symbol
from ..tensorflow.adapters import TF, _numpy, _tensor, _tf
from .declarations import DECLARATIONS, MIXED, MIXED_DECLARATIONS

RUNTIME = dataclasses.replace(TF, imports=(*TF.imports, "import tf_keras"))
LAYERS = "tf_keras.layers"


def _variable_dtype(norm: str, dtype: str) -> str:
    """BatchNormalization raises half-precision variables to float32 (`_param_dtype`); the other layers
    keep theirs in the layer's dtype."""
    return "float32" if norm == "batch_norm" and dtype in ("float16", "bfloat16") else dtype


def _layer_plan(
    layer: str,
    kwargs: dict,
    x,
    dtype: str,
    cotangent,
    *,
    weights=None,
    wrt=None,
    call=None,
    reads=None,
    policy: str | None = None,
) -> tuple[Plan, list]:
    """tf_keras.layers.<layer>(**kwargs), built for x's shape, `weights` (attribute -> (values, dtype))
    assigned, called on x with `call` under a GradientTape watching x and the variables in `wrt`
    (canonical name -> attribute) when there is a cotangent; `reads` (name -> attribute) read after.
    With `policy` ("mixed_float16"): the layer's dtype is tf_keras.mixed_precision.Policy(policy)."""
    x_in = Input("x", x, dtype)
    made = ()
    if policy is not None:
        made = (Step("policy", Symbol("tf_keras.mixed_precision.Policy"), (policy,)),)
        kwargs = {**kwargs, "dtype": Get("policy")}
    setup = [
        *made,
        Step("layer", Symbol(f"{LAYERS}.{layer}"), (), kwargs),
        Step(None, Get("layer", "build"), (tuple(x.shape),)),
        *(
            Step(None, Get("layer", f"{attr}.assign"), (Input(attr, value, vdtype),))
            for attr, (value, vdtype) in (weights or {}).items()
        ),
    ]
    forward = Step("y", Get("layer"), (x_in,), call or {})
    leaves = {"x": x_in, **{key: Get("layer", attr) for key, attr in (wrt or {}).items()}}
    grads = {}
    if cotangent is None:
        steps = [*setup, forward]
    else:
        watch = Step(None, Get("tape", "watch"), (list(leaves.values()),))
        tape = Block(
            "tape",
            Symbol("tensorflow.GradientTape"),
            (),
            {"watch_accessed_variables": False},
            (watch, forward),
        )
        gradient = Step(
            "grads",
            Get("tape", "gradient"),
            (Get("y"), list(leaves.values())),
            {"output_gradients": Input("g", cotangent, dtype)},
        )
        steps = [*setup, tape, gradient]
        grads = {key: Get("grads", str(i)) for i, key in enumerate(leaves)}
    after = {name: Get("layer", attr) for name, attr in (reads or {}).items()}
    return Plan(RUNTIME, tuple(steps), grads, after), list(leaves)


def _grads(executed: Executed, params, cotangent) -> Grads | None:
    """The gradients in the canonical parameters' shapes (the layer's variables may be shaped otherwise)."""
    if cotangent is None:
        return None
    g = executed.grads
    shaped = {
        key: None if key not in g else np.reshape(g[key], np.shape(params[key]))
        for key in ("scale", "offset")
    }
    return Grads(g["x"], shaped["scale"], shaped["offset"])


def _affine(params, vdtype: str) -> tuple[dict, dict, dict]:
    """(kwargs center/scale, weights, wrt) for the canonical scale and offset given: the layer's gamma and
    beta (variables of `vdtype`), created only where given."""
    given = {
        key: attr for key, attr in (("scale", "gamma"), ("offset", "beta")) if params.get(key) is not None
    }
    kwargs = {"center": "offset" in given, "scale": "scale" in given}
    return kwargs, {attr: (params[key], vdtype) for key, attr in given.items()}, given


def _sorted_axes(axes, ndim: int) -> list[int]:
    return sorted({int(a) % ndim for a in ((axes,) if isinstance(axes, int) else axes)})


# BatchNormalization(fused=True) is accepted for these (rank, axis) only, and never for float64 (BN.D23)
FUSED_AXES = {4: (1, 3), 5: (1, 4)}


class TfKeras(Adapter):
    """`tf_keras.layers` BatchNormalization, LayerNormalization, GroupNormalization, UnitNormalization
    and Normalization, on TensorFlow."""

    name = "tf_keras"
    family = "tensorflow"
    isa_capped = ("onednn",)
    requires = ("tf_keras", "tensorflow")
    cost = 3.4  # see Adapter.cost (33.5 s for the quick profile, calls in process, 2026-12)
    declarations = DECLARATIONS

    def startup(self) -> str:
        return "import tf_keras"

    def environment(self):
        tf = _tf()
        import tf_keras

        return {
            "adapter": self.name,
            "framework": "tf_keras",
            "version": tf_keras.__version__,
            "tensorflow_version": tf.__version__,
            **_devices.tf_environment(tf),
            "floatx": tf_keras.backend.floatx(),
            "epsilon": tf_keras.backend.epsilon(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get(
                "TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on for x86 CPU builds)"
            ),
        }

    def no_argument_calls(self):
        return DEFAULT_CALLS

    def variable_dtype(self, norm: str, dtype: str) -> str:
        """The dtype of the layer's variables for a `dtype` input (the policy adapter's: float32)."""
        return _variable_dtype(norm, dtype)

    def layer_policy(self, dtype: str) -> str | None:
        """The mixed-precision policy the layer is built under (None: `dtype=` the input dtype)."""
        return None

    def _planned(self, norm, layer, kwargs, x, params, dtype, cotangent, finish=None, **rest) -> Planned:
        policy = self.layer_policy(dtype)
        kwargs = kwargs if policy is not None else {**kwargs, "dtype": dtype}
        plan, _ = _layer_plan(layer, kwargs, x, dtype, cotangent, policy=policy, **rest)

        def outcome(executed: Executed) -> Outcome:
            grads = _grads(executed, params, cotangent)
            return Outcome(executed.y, grads=grads) if finish is None else finish(executed, grads)

        return Planned(plan, outcome)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        momentum = params["momentum"]
        require(momentum is not None, "Keras has no cumulative average, momentum=None (BN.D7)")
        axis = channel_axis_of(x, params)
        # fused=True is the only way to an unbiased running variance: the fused kernel's (BN.D23)
        fused = params["running_var"] == "unbiased"
        if fused:
            require(
                axis in FUSED_AXES.get(x.ndim, ()) and dtype != "float64",
                "tf_keras updates moving_variance with the unbiased variance only in its fused kernel: "
                "rank 4 or 5, axis 1 or last, not float64 (BN.D23)",
            )
        state, training = params.get("state"), params["training"]
        vdtype = self.variable_dtype("batch_norm", dtype)
        affine, weights, wrt = _affine(params, vdtype)
        if state is not None:
            weights |= {"moving_mean": (state.mean, vdtype), "moving_variance": (state.var, vdtype)}
        kwargs = {
            "axis": axis,
            "momentum": 1.0 - momentum,
            "epsilon": params["eps"],
            "fused": fused,
            **affine,
        }
        updates = state is not None and training
        finish = None  # no state: y and the gradients
        if updates:
            finish = stepped(
                state, True, lambda executed: (executed.after["mean"], executed.after["variance"])
            )
        elif state is not None:  # eval: the state is read, not changed
            finish = lambda executed, grads: Outcome(executed.y, state, grads)  # noqa: E731

        # No state: the batch statistics normalize in either mode (BN.S4); the moving ones are dropped.
        return self._planned(
            "batch_norm",
            "BatchNormalization",
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            finish,
            weights=weights,
            wrt=wrt,
            call={"training": training or state is None},
            reads={"mean": "moving_mean", "variance": "moving_variance"} if updates else None,
        )

    def _run_layer_norm(self, x, params, dtype, cotangent):
        affine, weights, wrt = _affine(params, self.variable_dtype("layer_norm", dtype))
        kwargs = {"axis": _sorted_axes(params["axes"], x.ndim), "epsilon": params["eps"], **affine}
        return self._planned(
            "layer_norm", "LayerNormalization", kwargs, x, params, dtype, cotangent, weights=weights, wrt=wrt
        )

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(params["assignment"] == "contiguous", "Keras groups contiguous channels (GN.D1)")
        affine, weights, wrt = _affine(params, self.variable_dtype("group_norm", dtype))
        kwargs = {
            "groups": params["groups"],
            "axis": channel_axis_of(x, params),
            "epsilon": params["eps"],
            **affine,
        }
        return self._planned(
            "group_norm", "GroupNormalization", kwargs, x, params, dtype, cotangent, weights=weights, wrt=wrt
        )

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(params["p"] == 2, "tf_keras.layers.UnitNormalization is p = 2 only")
        require(
            params["eps_placement"] == "max_power_sum",
            "UnitNormalization is tf.linalg.l2_normalize: eps_placement='max_power_sum' only (LP.D8)",
        )
        require(params["eps"] == 1e-12, "UnitNormalization keeps l2_normalize's epsilon=1e-12")
        axes = params["axes"]
        axes = list(range(x.ndim)) if axes is None else _sorted_axes(axes, x.ndim)
        return self._planned("lp_normalize", "UnitNormalization", {"axis": axes}, x, params, dtype, cotangent)

    def _run_channel_normalize(self, x, params, dtype, cotangent):
        require(
            params["std_floor"] == 1e-7,
            "tf_keras.layers.Normalization floors the std at tf_keras.backend.epsilon() = 1e-7 (CN.D2)",
        )
        axis = channel_axis_of(x, params, -3)
        channels = x.shape[axis]
        mean = np.broadcast_to(np.ravel(np.asarray(params["mean"], dtype=np.float64)), (channels,))
        std = np.broadcast_to(np.ravel(np.asarray(params["std"], dtype=np.float64)), (channels,))
        kwargs = {"axis": axis, "mean": mean.tolist(), "variance": (std**2).tolist()}
        return self._planned("channel_normalize", "Normalization", kwargs, x, params, dtype, cotangent)


def _default_layer(build, implied=lambda x, layer: {}, **call):
    """A no-argument call: the layer `build(layers, x, hints)` in the float32 policy, called on x in
    `dtype` (the layer casts it); BatchNorm in training, as fit() calls it."""

    def run(x, hints, dtype):
        import tf_keras

        layer = build(tf_keras.layers, x, hints)
        y = layer(_tensor(x, dtype), **call)
        state = None
        if getattr(layer, "moving_mean", None) is not None:
            state = RunningStats(_numpy(layer.moving_mean), _numpy(layer.moving_variance), 1)
        return Outcome(_numpy(y), state), implied(x, layer)

    return run


DEFAULT_CALLS = {
    # which kernel fused=None chose decides the running-variance estimator (BN.D23)
    "batch_norm": _default_layer(
        lambda layers, x, h: layers.BatchNormalization(),
        lambda x, layer: {
            "state": RunningStats.initial(x.shape[-1]),
            "training": True,
            "running_var": "unbiased" if layer.fused else "biased",
        },
        training=True,
    ),
    "layer_norm": _default_layer(lambda layers, x, h: layers.LayerNormalization()),
    "group_norm": _default_layer(lambda layers, x, h: layers.GroupNormalization(groups=h["groups"])),
    "lp_normalize": _default_layer(lambda layers, x, h: layers.UnitNormalization()),
}


class TfKerasMixed(TfKeras):
    """tf_keras under the mixed policy (MP.P1) as its users turn it on: the layer's dtype is
    tf_keras.mixed_precision.Policy("mixed_float16") (or "mixed_bfloat16"), its variables float32 and
    loaded in float32, the activations in the half type. What the policy leaves in which dtype:
    declarations.py (MIXED_DECLARATIONS) and the spec's MP.D20-D29."""

    name = "tf_keras@mixed"
    policy = MIXED
    cost = 0.1  # see Adapter.cost: 0.03 of tf_keras's seconds in the gate's quick run (2026-12-08)
    declarations = MIXED_DECLARATIONS

    def variable_dtype(self, norm, dtype):
        return self.parameter_dtype(norm, dtype)

    def layer_policy(self, dtype):
        return f"mixed_{dtype}"

    def no_argument_calls(self):
        return {}


__all__ = ["TfKeras", "TfKerasMixed", "Unsupported"]
