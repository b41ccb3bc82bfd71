"""TensorFlow: the `tf.nn` / `tf.math` functions (and the v1 fused BatchNorm kernel, the only TF op
with running statistics).

`tf.nn.moments` + `tf.nn.batch_normalization` is TF's own BatchNorm without running statistics;
`tf.compat.v1.nn.fused_batch_norm` (`FusedBatchNormV3`) is the stateful one, kept as its own adapter
because its dtypes, layouts and running-variance estimator differ. Gradients come from
`tf.GradientTape`. Facts and sources: /work/research/tf_keras.md, spec BN/LRN/LP clauses.

Parameters are canonical: one a caller leaves out means the canonical default (the reference
function's), not TF's; TF's defaults are declared, in canonical terms, as Conventions.
"""

from __future__ import annotations

import os

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices, _repro
from ..base import Adapter, Convention, NormDeclaration, Outcome, channel_axis_of, require

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
# tf.nn.moments upcasts float16 only: bfloat16 statistics stay bfloat16 (research §1a, verified 2.21).
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


def _gradients(tape, y, leaves: dict, cotangent) -> Grads:
    """Gradients of sum(y * cotangent) w.r.t. the named watched tensors (absent ones stay None)."""
    present = {k: t for k, t in leaves.items() if t is not None}
    g = _tf().cast(_tf().constant(np.asarray(cotangent, dtype=np.float64)), y.dtype)
    values = tape.gradient(y, list(present.values()), output_gradients=g)
    grad = {k: _numpy(v) for k, v in zip(present, values, strict=True)}
    return Grads(grad["x"], grad.get("scale"), grad.get("offset"))


def _along(t, ndim: int, axis: int):
    """A (C,) tensor reshaped to broadcast along `axis` of a rank-`ndim` input."""
    shape = [1] * ndim
    shape[axis] = -1
    return _tf().reshape(t, shape)


class TfBase(Adapter):
    family = "tensorflow"
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

    # the TF entry points the adapters call: (namespace path under tf, attribute)
    ENTRY_POINTS = (
        ("nn", "moments"),
        ("nn", "batch_normalization"),
        ("nn", "local_response_normalization"),
        ("math", "l2_normalize"),
        ("compat.v1.nn", "fused_batch_norm"),
    )

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        """The TF calls this adapter made, in order, with literal input tensors and each call's outputs
        feeding the next by name, under a GradientTape when there are gradients."""
        tf = _tf()
        targets = []
        for path, name in self.ENTRY_POINTS:
            namespace = tf
            for part in path.split("."):
                namespace = getattr(namespace, part)
            targets.append((namespace, name))
        calls = _repro.recorded_calls(
            targets, lambda: self.run(norm, x, params, dtype=dtype, cotangent=cotangent)
        )
        if not calls:
            return None
        qualified = {name: f"tf.{path}.{name}" for path, name in self.ENTRY_POINTS}
        known, leaves, leaf_lines, call_lines = {}, [], [], []

        def source(value):
            if isinstance(value, (list, tuple)) and any(tf.is_tensor(v) for v in value):
                return "[" + ", ".join(map(source, value)) + "]"
            if not tf.is_tensor(value):
                return _repro.plain(value)
            if id(value) not in known:  # an input made by the adapter, not the output of a recorded call
                known[id(value)] = label = f"t{len(leaves)}"
                leaves.append(label)
                leaf_lines.append(
                    f"{label} = tf.cast(tf.constant({_repro.values(_numpy(value))}, tf.float64), "
                    f"tf.{value.dtype.name})"
                )
            return known[id(value)]

        for i, call in enumerate(calls):
            arguments = ", ".join(
                [*map(source, call.args), *(f"{k}={source(v)}" for k, v in call.kwargs.items())]
            )
            call_lines.append(f"r{i} = {qualified[call.name]}({arguments})")
            for j, part in enumerate(call.result if isinstance(call.result, (tuple, list)) else ()):
                known[id(part)] = f"r{i}[{j}]"
            known[id(call.result)] = f"r{i}"
        last = f"r{len(calls) - 1}"
        y = f"{last}[0]" if isinstance(calls[-1].result, (tuple, list)) else last
        lines = [
            *_repro.HEADER,
            "import tensorflow as tf",
            *_repro.show_function("tf.cast(v, tf.float64)"),
            *leaf_lines,
        ]
        if cotangent is None:
            lines += [*call_lines, f"y = {y}"]
        else:
            lines += [
                "with tf.GradientTape(watch_accessed_variables=False) as tape:",
                f"    tape.watch([{', '.join(leaves)}])",
                *(f"    {line}" for line in call_lines),
                f"    y = {y}",
                f"g = tf.cast(tf.constant({_repro.values(cotangent)}, tf.float64), y.dtype)",
                f"grads = dict(zip({leaves!r}, tape.gradient(y, [{', '.join(leaves)}], output_gradients=g)))",
            ]
        lines.append("show('y', y)")
        if (
            isinstance(calls[-1].result, (tuple, list)) and len(calls[-1].result) > 1
        ):  # fused: the new statistics
            lines += [
                f"show('batch or running mean', {last}[1])",
                f"show('batch or running variance', {last}[2])",
            ]
        if cotangent is not None:
            lines.append("show('grad', grads)")
        return _repro.script(lines)


class TfNn(TfBase):
    """`tf.nn.moments` + `tf.nn.batch_normalization`, `tf.nn.local_response_normalization`,
    `tf.math.l2_normalize`."""

    name = "tf.nn"
    cost = 1.2  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "tf.nn.moments + tf.nn.batch_normalization",
            ALL_DTYPES,
            BN_CONVENTIONS,
            MOMENTS_ACCUMULATION,
            gradients=True,
            stateful=False,
        ),
        # CPU kernels are registered for float and half only (bfloat16: NotFoundError, float64 rejected).
        "local_response_norm": NormDeclaration(
            "local_response_norm",
            "tf.nn.local_response_normalization",
            ("float16", "float32"),
            LRN_CONVENTIONS,
            {"float16": "float16", "float32": "float32"},
            gradients=True,
        ),
        "lp_normalize": NormDeclaration(
            "lp_normalize", "tf.math.l2_normalize", ALL_DTYPES, LP_CONVENTIONS, SAME, gradients=True
        ),
    }

    def no_argument_calls(self):
        return DEFAULT_CALLS

    def _run_batch_norm(self, x, params, dtype, cotangent):
        require(
            params.get("state") is None,
            "tf.nn.batch_normalization keeps no running statistics (tf.compat.v1.nn.fused_batch_norm does)",
        )
        tf = _tf()
        axis = channel_axis_of(x, params)
        reduced = [a for a in range(x.ndim) if a != axis]
        xt = _tensor(x, dtype)
        scale = None if params.get("scale") is None else _along(_tensor(params["scale"], dtype), x.ndim, axis)
        offset = (
            None if params.get("offset") is None else _along(_tensor(params["offset"], dtype), x.ndim, axis)
        )
        # With no state the batch statistics normalize in either mode (BN.S4).
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for t in (xt, scale, offset):
                if t is not None:
                    tape.watch(t)
            mean, var = tf.nn.moments(xt, axes=reduced, keepdims=True)
            y = tf.nn.batch_normalization(xt, mean, var, offset, scale, params["eps"])
        grads = None
        if cotangent is not None:
            grads = _gradients(tape, y, {"x": xt, "scale": scale, "offset": offset}, cotangent)
            grads = Grads(
                grads.x,
                None if grads.scale is None else grads.scale.reshape(-1),
                None if grads.offset is None else grads.offset.reshape(-1),
            )
        return Outcome(_numpy(y), grads=grads)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        require(x.ndim == 4, "tf.nn.local_response_normalization takes 4-D (NHWC) input only")
        require(
            channel_axis_of(x, params) == 3, "tf.nn.local_response_normalization windows over the last axis"
        )
        require(not params["alpha_over_size"], "TF does not divide alpha by the window size (LRN.D1)")
        size = params["size"]
        require(size % 2 == 1, "TF's window is 2*depth_radius + 1: odd sizes only")
        tf = _tf()
        xt = _tensor(x, dtype)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xt)
            y = tf.nn.local_response_normalization(
                xt,
                depth_radius=(size - 1) // 2,
                bias=params["k"],
                alpha=params["alpha"],
                beta=params["beta"],
            )
        grads = _gradients(tape, y, {"x": xt}, cotangent) if cotangent is not None else None
        return Outcome(_numpy(y), grads=grads)

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(params["p"] == 2, "tf.math.l2_normalize is p = 2 only")
        require(
            params["eps_placement"] == "max_power_sum",
            "tf.math.l2_normalize floors the squared sum: eps_placement='max_power_sum' only (LP.D1)",
        )
        tf = _tf()
        axes = params["axes"]
        axis = None if axes is None else [int(a) for a in ((axes,) if isinstance(axes, int) else axes)]
        xt = _tensor(x, dtype)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xt)
            y = tf.math.l2_normalize(xt, axis=axis, epsilon=params["eps"])
        grads = _gradients(tape, y, {"x": xt}, cotangent) if cotangent is not None else None
        return Outcome(_numpy(y), grads=grads)


FUSED_LAYOUTS = {(4, -1): "NHWC", (4, 1): "NCHW", (5, -1): "NDHWC", (5, 1): "NCDHW"}


class TfFusedBatchNorm(TfBase):
    """`tf.compat.v1.nn.fused_batch_norm` (op `FusedBatchNormV3`): TF's BatchNorm with running statistics."""

    name = "tf.fused_batch_norm"
    cost = 1.1  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "tf.compat.v1.nn.fused_batch_norm",
            ("float16", "bfloat16", "float32"),
            FUSED_CONVENTIONS,
            {"float16": "float32", "bfloat16": "float32", "float32": "float32"},
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
        tf = _tf()
        channels = x.shape[axis]
        xt = _tensor(x, dtype)
        # scale and offset are float32 inputs of the op; absent = ones and zeros (exactly x1 and +0).
        scale = _tensor(np.ones(channels) if params.get("scale") is None else params["scale"], "float32")
        offset = _tensor(np.zeros(channels) if params.get("offset") is None else params["offset"], "float32")
        is_training = training or state is None  # no state: batch statistics in either mode (BN.S4)
        mean = var = None
        factor = 1.0
        if state is not None:
            mean, var = _tensor(state.mean, "float32"), _tensor(state.var, "float32")
            factor = float(momentum)
        if is_training and factor == 1.0:
            mean = var = None  # the wrapper requires None here; the batch statistics replace the state
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for t in (xt, scale, offset):
                tape.watch(t)
            y, new_mean, new_var = tf.compat.v1.nn.fused_batch_norm(
                xt,
                scale,
                offset,
                mean=mean,
                variance=var,
                epsilon=params["eps"],
                data_format=layout,
                is_training=is_training,
                exponential_avg_factor=factor,
            )
        new_state = state
        if state is not None and training:
            new_state = RunningStats(_numpy(new_mean), _numpy(new_var), state.num_batches_tracked + 1)
        grads = None
        if cotangent is not None:
            leaves = {
                "x": xt,
                "scale": scale if params.get("scale") is not None else None,
                "offset": offset if params.get("offset") is not None else None,
            }
            grads = _gradients(tape, y, leaves, cotangent)
        return Outcome(_numpy(y), new_state, grads)


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
