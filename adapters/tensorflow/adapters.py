"""TensorFlow: the `tf.nn` / `tf.math` functions (and the v1 fused BatchNorm kernel, the only TF op
with running statistics).

`tf.nn.moments` + `tf.nn.batch_normalization` is TF's own BatchNorm without running statistics;
`tf.compat.v1.nn.fused_batch_norm` (`FusedBatchNormV3`) is the stateful one, kept as its own adapter
because its dtypes, layouts and running-variance estimator differ. Gradients come from
`tf.GradientTape`. Facts and sources: the Conventions below and the spec's BN/LRN/LP clauses.

Parameters are canonical: one a caller leaves out means the canonical default (the reference
function's), not TF's; TF's defaults are declared, in canonical terms, as Conventions.
"""

from __future__ import annotations

import os

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices, _repro
from ..base import Adapter, Convention, NormDeclaration, Outcome, channel_axis_of, require
from ..plan import Block, Executed, Get, Input, Plan, Planned, Runtime, Step, Symbol

TF = "https://github.com/tensorflow/tensorflow/blob/v2.21.0"
SRC_MOMENTS = f"{TF}/tensorflow/python/ops/nn_impl.py#L1239-L1285"
SRC_BN_REQUIRED_EPS = f"{TF}/tensorflow/python/ops/nn_impl.py#L1431-L1437"
SRC_BN_PARAMS = f"{TF}/tensorflow/python/ops/nn_impl.py#L1445-L1463"
SRC_BN_FORM = f"{TF}/tensorflow/python/ops/nn_impl.py#L1490-L1497"
SRC_FUSED_SIGNATURE = f"{TF}/tensorflow/python/ops/nn_impl.py#L1502-L1512"
SRC_FUSED_LAYOUT = f"{TF}/tensorflow/python/ops/nn_impl.py#L1547-L1548"
SRC_FUSED_FACTOR = f"{TF}/tensorflow/python/ops/nn_impl.py#L1552-L1567"
SRC_FUSED_KERNEL = (
    "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/kernels/fused_batch_norm_op.cc"
)
SRC_FUSED_OP = "https://www.tensorflow.org/api_docs/python/tf/raw_ops/FusedBatchNormV3"
SRC_LRN_OP = "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/ops/nn_ops.cc"
SRC_LRN_DOC = "https://www.tensorflow.org/api_docs/python/tf/nn/local_response_normalization"
SRC_LRN_KERNEL = "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/kernels/lrn_op.cc"
SRC_L2_SIGNATURE = f"{TF}/tensorflow/python/ops/nn_impl.py#L541-L545"
SRC_L2_FORM = f"{TF}/tensorflow/python/ops/nn_impl.py#L575-L576"

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
SAME = {d: d for d in ALL_DTYPES}
# tf.nn.moments upcasts float16 only: bfloat16 statistics stay bfloat16 (measured on TF 2.21).
# tf.nn.moments sums float16 in float32 but returns float16 statistics, which batch_normalization then
# uses (and adds eps to) in float16: the statistics' precision is float16 (spec BN.D14).
MOMENTS_ACCUMULATION = {
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float32": "float32",
    "float64": "float64",
}

BN_CONVENTIONS = (
    Convention(
        "channel_axis",
        "axes (the reduced ones)",
        -1,
        SRC_BN_PARAMS,
        note="any axis: moments reduces every other one; 1-D parameters broadcast only with depth last",
    ),
    Convention(
        "eps_required",
        "variance_epsilon",
        True,
        SRC_BN_REQUIRED_EPS,
        note="no default: a required argument, passed the canonical eps",
    ),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN_FORM),
    Convention("algebraic_form", "—", "x*inv + (offset - mean*inv)", SRC_BN_FORM, clause="BN.D5"),
    Convention("variance", "— (moments)", "biased, two-pass", SRC_MOMENTS),
    Convention(
        "statistics_dtype",
        "— (moments)",
        "the input dtype",
        SRC_MOMENTS,
        clause="BN.D14",
        note="float16 is summed in float32 and the statistics cast back to float16; bfloat16 is not "
        "upcast: its mean and squared deviations round to bfloat16 (measured, TF 2.21)",
    ),
)
FUSED_CONVENTIONS = (
    Convention(
        "channel_axis",
        "data_format",
        -1,
        SRC_FUSED_LAYOUT,
        note="'NHWC'/'NDHWC' (default) = -1; 'NCHW'/'NCDHW' = 1; 4-D and 5-D only",
    ),
    Convention(
        "eps",
        "epsilon",
        1e-3,
        SRC_FUSED_SIGNATURE,
        clause="BN.D3",
        note="the Python wrapper's default; the raw op's attribute default is 1e-4",
    ),
    Convention(
        "momentum",
        "exponential_avg_factor",
        1.0,
        SRC_FUSED_FACTOR,
        note="weight on the new batch, as canonical; 1.0 = the running stats become the batch stats",
    ),
    Convention("running_var", "— (fixed)", "unbiased", SRC_FUSED_KERNEL, clause="BN.D1"),
    Convention("eps_placement", "—", "inside_sqrt", SRC_FUSED_KERNEL),
    Convention(
        "parameter_dtype",
        "scale, offset, mean, variance",
        "float32",
        SRC_FUSED_OP,
        note="U = float32 only on CPU; x may be float16/bfloat16/float32, float64 is rejected",
    ),
)
LRN_CONVENTIONS = (
    Convention(
        "size",
        "depth_radius",
        11,
        SRC_LRN_OP,
        note="size = 2*depth_radius + 1; depth_radius=5; odd sizes only",
    ),
    Convention("alpha", "alpha", 1.0, SRC_LRN_OP),
    Convention("beta", "beta", 0.5, SRC_LRN_OP),
    Convention("k", "bias", 1.0, SRC_LRN_OP),
    Convention("channel_axis", "— (last axis of 4-D NHWC)", -1, SRC_LRN_KERNEL),
    Convention("alpha_over_size", "—", False, SRC_LRN_DOC, clause="LRN.D1"),
)
LP_CONVENTIONS = (
    Convention("p", "— (l2 only)", 2.0, SRC_L2_SIGNATURE),
    Convention("axes", "axis", None, SRC_L2_SIGNATURE, note="None = all axes"),
    Convention("eps", "epsilon", 1e-12, SRC_L2_SIGNATURE),
    Convention(
        "eps_placement", "— (maximum on the squared sum)", "max_power_sum", SRC_L2_FORM, clause="LP.D1"
    ),
)


def _tf():
    import tensorflow as tf

    if not _CONFIGURED:
        _devices.tf_configure(tf)
        _CONFIGURED.append(True)
    return tf


_CONFIGURED: list = []


def _tensor(value, dtype: str):
    tf = _tf()
    return tf.cast(tf.constant(np.asarray(value, dtype=np.float64)), getattr(tf, dtype))


def _numpy(t) -> np.ndarray:
    return _tf().cast(t, _tf().float64).numpy()


TF = Runtime(
    imports=("import tensorflow as tf",),
    tensor=lambda value: _tensor(value.value, value.dtype),
    tensor_source=lambda value: (
        f"tf.cast(tf.constant({_repro.values(value.value)}, tf.float64), tf.{value.dtype})"
    ),
    numpy=lambda t: _numpy(t),
    numpy_source="tf.cast(v, tf.float64)",
    aliases=(("tensorflow", "tf"),),
)


def _taped(steps: list, leaves: dict, cotangent, dtype: str, finish=None, after=None, y=None) -> Planned:
    """The steps, under a GradientTape watching the leaves given (canonical name -> Input, absent: None)
    when there is a cotangent; then the gradients of sum(y * g). `finish(executed, grads)` makes the
    Outcome (by default y and the gradients, reshaped to the canonical parameters' flat shape)."""
    present = {k: v for k, v in leaves.items() if v is not None}
    y, grads = y or Get("y"), {}
    if cotangent is not None:
        watch = Step(None, Get("tape", "watch"), (list(present.values()),))
        tape = Block(
            "tape",
            Symbol("tensorflow.GradientTape"),
            (),
            {"watch_accessed_variables": False},
            (watch, *steps),
        )
        gradient = Step(
            "grads",
            Get("tape", "gradient"),
            (y, list(present.values())),
            {"output_gradients": Input("g", cotangent, dtype)},
        )
        steps = [tape, gradient]
        grads = {key: Get("grads", str(i)) for i, key in enumerate(present)}

    def outcome(executed: Executed) -> Outcome:
        found = None
        if cotangent is not None:
            g = executed.grads
            flat = {k: None if k not in g else g[k].reshape(-1) for k in ("scale", "offset")}
            found = Grads(g["x"], flat["scale"], flat["offset"])
        return (finish or (lambda e, found: Outcome(e.y, grads=found)))(executed, found)

    return Planned(Plan(TF, tuple(steps), grads, after or {}, y), outcome)


def _along(value, ndim: int, axis: int) -> np.ndarray:
    """A (C,) array reshaped to broadcast along `axis` of a rank-`ndim` input."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.reshape(value, shape)


class TfBase(Adapter):
    family = "tensorflow"
    isa_capped = ("onednn",)
    requires = ("tensorflow",)

    def environment(self):
        tf = _tf()
        return {
            "adapter": self.name,
            "framework": "tensorflow",
            "version": tf.__version__,
            **_devices.tf_environment(tf),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get(
                "TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on for x86 CPU builds)"
            ),
        }


class TfNn(TfBase):
    """`tf.nn.moments` + `tf.nn.batch_normalization`, `tf.nn.local_response_normalization`,
    `tf.math.l2_normalize`."""

    name = "tf.nn"
    cost = 1.0  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            norm="batch_norm",
            api="tf.nn.moments + tf.nn.batch_normalization",
            dtypes=ALL_DTYPES,
            conventions=BN_CONVENTIONS,
            accumulation=MOMENTS_ACCUMULATION,
            gradients=True,
            stateful=False,
        ),
        # CPU kernels are registered for float and half only (bfloat16: NotFoundError, float64 rejected).
        "local_response_norm": NormDeclaration(
            norm="local_response_norm",
            api="tf.nn.local_response_normalization",
            dtypes=("float16", "float32"),
            conventions=LRN_CONVENTIONS,
            accumulation={"float16": "float16", "float32": "float32"},
            gradients=True,
        ),
        "lp_normalize": NormDeclaration(
            norm="lp_normalize",
            api="tf.math.l2_normalize",
            dtypes=ALL_DTYPES,
            conventions=LP_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
    }

    def no_argument_calls(self):
        return DEFAULT_CALLS

    def _run_batch_norm(self, x, params, dtype, cotangent):
        require(
            params.get("state") is None,
            "tf.nn.batch_normalization keeps no running statistics (tf.compat.v1.nn.fused_batch_norm does)",
        )
        axis = channel_axis_of(x, params)
        reduced = [a for a in range(x.ndim) if a != axis]
        x_in = Input("x", x, dtype)
        scale, offset = (
            None if params.get(key) is None else Input(key, _along(params[key], x.ndim, axis), dtype)
            for key in ("scale", "offset")
        )
        # With no state the batch statistics normalize in either mode (BN.S4).
        steps = [
            Step("moments", Symbol("tensorflow.nn.moments"), (x_in,), {"axes": reduced, "keepdims": True}),
            Step(
                "y",
                Symbol("tensorflow.nn.batch_normalization"),
                (x_in, Get("moments", "0"), Get("moments", "1"), offset, scale, params["eps"]),
            ),
        ]
        return _taped(steps, {"x": x_in, "scale": scale, "offset": offset}, cotangent, dtype)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        require(x.ndim == 4, "tf.nn.local_response_normalization takes 4-D (NHWC) input only")
        require(
            channel_axis_of(x, params) == 3, "tf.nn.local_response_normalization windows over the last axis"
        )
        require(not params["alpha_over_size"], "TF does not divide alpha by the window size (LRN.D1)")
        size = params["size"]
        require(size % 2 == 1, "TF's window is 2*depth_radius + 1: odd sizes only")
        x_in = Input("x", x, dtype)
        kwargs = {
            "depth_radius": (size - 1) // 2,
            "bias": params["k"],
            "alpha": params["alpha"],
            "beta": params["beta"],
        }
        step = Step("y", Symbol("tensorflow.nn.local_response_normalization"), (x_in,), kwargs)
        return _taped([step], {"x": x_in}, cotangent, dtype)

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(params["p"] == 2, "tf.math.l2_normalize is p = 2 only")
        require(
            params["eps_placement"] == "max_power_sum",
            "tf.math.l2_normalize floors the squared sum: eps_placement='max_power_sum' only (LP.D1)",
        )
        axes = params["axes"]
        axis = None if axes is None else [int(a) for a in ((axes,) if isinstance(axes, int) else axes)]
        x_in = Input("x", x, dtype)
        step = Step(
            "y", Symbol("tensorflow.math.l2_normalize"), (x_in,), {"axis": axis, "epsilon": params["eps"]}
        )
        return _taped([step], {"x": x_in}, cotangent, dtype)


FUSED_LAYOUTS = {(4, -1): "NHWC", (4, 1): "NCHW", (5, -1): "NDHWC", (5, 1): "NCDHW"}


class TfFusedBatchNorm(TfBase):
    """`tf.compat.v1.nn.fused_batch_norm` (op `FusedBatchNormV3`): TF's BatchNorm with running statistics."""

    name = "tf.fused_batch_norm"
    cost = 0.3  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            norm="batch_norm",
            api="tf.compat.v1.nn.fused_batch_norm",
            dtypes=("float16", "bfloat16", "float32"),
            conventions=FUSED_CONVENTIONS,
            accumulation={"float16": "float32", "bfloat16": "float32", "float32": "float32"},
            gradients=True,
            stateful=True,
        ),
    }

    def no_argument_calls(self):
        return FUSED_DEFAULT_CALLS

    def _run_batch_norm(self, x, params, dtype, cotangent):
        require(x.ndim in (4, 5), "fused_batch_norm takes 4-D or 5-D input only")
        axis = channel_axis_of(x, params)
        layout = FUSED_LAYOUTS.get((x.ndim, 1 if axis == 1 else -1 if axis == x.ndim - 1 else None))
        require(layout is not None, "fused_batch_norm's channel axis is 1 (NC...) or the last (N...C)")
        require(
            params["running_var"] == "unbiased",
            "fused_batch_norm's running variance is Bessel-corrected (BN.D1)",
        )
        momentum = params["momentum"]
        require(momentum is not None, "fused_batch_norm has no cumulative average (BN.D7)")
        state, training = params.get("state"), params["training"]
        channels = x.shape[axis]
        x_in = Input("x", x, dtype)
        # scale and offset are float32 inputs of the op; absent = ones and zeros (exactly x1 and +0).
        scale = Input(
            "scale", np.ones(channels) if params.get("scale") is None else params["scale"], "float32"
        )
        offset = Input(
            "offset", np.zeros(channels) if params.get("offset") is None else params["offset"], "float32"
        )
        is_training = training or state is None  # no state: batch statistics in either mode (BN.S4)
        mean = var = None
        factor = 1.0
        if state is not None:
            mean, var = Input("mean", state.mean, "float32"), Input("variance", state.var, "float32")
            factor = float(momentum)
        if is_training and factor == 1.0:
            mean = var = None  # the wrapper requires None here; the batch statistics replace the state
        kwargs = {
            "mean": mean,
            "variance": var,
            "epsilon": params["eps"],
            "data_format": layout,
            "is_training": is_training,
            "exponential_avg_factor": factor,
        }
        step = Step("out", Symbol("tensorflow.compat.v1.nn.fused_batch_norm"), (x_in, scale, offset), kwargs)
        leaves = {
            "x": x_in,
            "scale": scale if params.get("scale") is not None else None,
            "offset": offset if params.get("offset") is not None else None,
        }

        def finish(executed, grads):
            new_state = state
            if state is not None and training:
                after = executed.after
                new_state = RunningStats(after["mean"], after["variance"], state.num_batches_tracked + 1)
            return Outcome(executed.y, new_state, grads)

        after = {"mean": Get("out", "1"), "variance": Get("out", "2")}
        return _taped([step], leaves, cotangent, dtype, finish, after, y=Get("out", "0"))


def _lrn_defaults(x, hints, dtype):
    """tf.nn.local_response_normalization(x): depth_radius, bias, alpha and beta all its own."""
    require(x.ndim == 4, "tf.nn.local_response_normalization takes 4-D (NHWC) input only")
    return Outcome(_numpy(_tf().nn.local_response_normalization(_tensor(x, dtype)))), {}


def _fused_defaults(x, hints, dtype):
    """fused_batch_norm(x, scale, offset): the scale and offset it requires (float32 ones and zeros), its
    own epsilon, data_format ('NHWC'), is_training (True) and exponential_avg_factor (1.0); without
    running statistics it returns the batch's, which become the state at that factor."""
    require(x.ndim == 4, "fused_batch_norm's default data_format 'NHWC' takes 4-D input")
    channels = x.shape[-1]
    y, mean, var = _tf().compat.v1.nn.fused_batch_norm(
        _tensor(x, dtype), _tensor(np.ones(channels), "float32"), _tensor(np.zeros(channels), "float32")
    )
    state = RunningStats(_numpy(mean), _numpy(var), 1)
    return Outcome(_numpy(y), state), {"state": RunningStats.initial(channels), "training": True}


FUSED_DEFAULT_CALLS = {"batch_norm": _fused_defaults}
DEFAULT_CALLS = {
    "local_response_norm": _lrn_defaults,
    "lp_normalize": lambda x, hints, dtype: (Outcome(_numpy(_tf().math.l2_normalize(_tensor(x, dtype)))), {}),
}


__all__ = ["TfFusedBatchNorm", "TfNn"]
