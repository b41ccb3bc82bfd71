"""ONNX: one-node models built with `onnx.helper`, run by onnxruntime (CPU) or by onnx's reference evaluator.

Both adapters share one model builder, so they run the same model bytes: each norm is a single ONNX
operator at the newest opset the installed onnxruntime implements (recorded in each declaration's
`api`), with every canonical parameter an input or an attribute. Conventions are declared once per
norm (they are the operator's, read from the ONNX spec); dtypes and accumulation differ because the two
runtimes implement the operators differently (measured with onnx 1.23.2, onnxruntime 1.32.0, CPU).

ONNX has no autodiff here, so no adapter declares gradients. Float attributes (`epsilon`, `momentum`,
LRN's `alpha`, `beta`, `bias`) are 32-bit in the ONNX protobuf: a float64 run whose canonical value is
not a float32 number cannot be expressed and is reported unsupported, not rounded.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from normconf.reference import RunningStats

from .. import _repro
from ..base import (
    Adapter,
    Convention,
    NormDeclaration,
    Outcome,
    Params,
    channel_axis_of,
    f32,
    float32_attribute,
    require,
    trailing,
)
from ..plan import Executed, Planned

ONNX_VERSION = "https://github.com/onnx/onnx/blob/v1.22.0"
SRC_OPS = f"{ONNX_VERSION}/docs/Operators.md"
SRC_BN = f"{SRC_OPS}#BatchNormalization"
SRC_IN = f"{SRC_OPS}#InstanceNormalization"
SRC_LN = f"{SRC_OPS}#LayerNormalization"
SRC_GN = f"{SRC_OPS}#GroupNormalization"
SRC_RMS = f"{SRC_OPS}#RMSNormalization"
SRC_LRN = f"{SRC_OPS}#LRN"
SRC_LP = f"{SRC_OPS}#LpNormalization"
SRC_BN_DEFS = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L1632-L1650"
SRC_LN_BODY = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2547-L2563"
SRC_GN_BODY = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2783-L2828"
SRC_LRN_DEFS = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2025-L2045"
SRC_LP_ZERO = "https://github.com/onnx/onnx/pull/7618"
SRC_PROTO = f"{ONNX_VERSION}/onnx/onnx.proto"  # AttributeProto: `float f = 2` (32-bit)
SRC_REF_LRN = f"{ONNX_VERSION}/onnx/reference/ops/op_lrn.py#L15-L28"
SRC_REF_LP = f"{ONNX_VERSION}/onnx/reference/ops/op_lp_normalization.py#L11-L19"
SRC_REF_LN = f"{ONNX_VERSION}/onnx/reference/ops/op_layer_normalization.py#L11-L73"
SRC_REF_RMS = f"{ONNX_VERSION}/onnx/reference/ops/op_rms_normalization.py#L11-L49"
SRC_ORT_LRN = (
    "https://github.com/microsoft/onnxruntime/blob/bffa98a41265a164694ed48010a6cefa0a7c8c4e/"
    "onnxruntime/core/providers/cpu/nn/lrn.h"
)
SRC_ORT_LRN_CC = (
    "https://github.com/microsoft/onnxruntime/blob/0c2d8019c9731fe2e21727c53a046ad56814abb6/"
    "onnxruntime/core/providers/cpu/nn/lrn.cc"
)
SRC_ORT_GN = "https://github.com/microsoft/onnxruntime/issues/24538"
SRC_MVN = f"{SRC_OPS}#MeanVarianceNormalization"
SRC_MVN_BODY = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2205-L2264"
SRC_ORT_MVN = (
    "https://github.com/microsoft/onnxruntime/blob/2481dbcbb18afab0095b03616053abd638f90604/"
    "onnxruntime/core/providers/cpu/tensor/mean_variance_normalization.cc"
)
SRC_ORT_LN = "https://github.com/microsoft/onnxruntime/pull/28743"

# The newest opset of each operator that onnxruntime 1.32 runs on CPU (every one of them is also the
# newest in onnx 1.23.2). GroupNormalization-21 has per-channel scale/bias (18 had per-group, GN.D3).
OPSET = {
    "BatchNormalization": 15,
    "InstanceNormalization": 22,
    "LayerNormalization": 17,
    "GroupNormalization": 21,
    "RMSNormalization": 23,
    "LRN": 13,
    "LpNormalization": 22,
    "MeanVarianceNormalization": 13,
}
ONNX_TYPES = {"float16": "FLOAT16", "bfloat16": "BFLOAT16", "float32": "FLOAT", "float64": "DOUBLE"}
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
SAME = {d: d for d in ALL_DTYPES}
HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
STASH_FLOAT32 = {d: "float32" for d in ALL_DTYPES}  # stash_type=1: stage one in float32, float64 inputs too


EPS_DEFAULT = f32(1e-5)  # 9.99999974738e-06: ONNX's epsilon=1e-5, a float32 attribute
ATTRIBUTE_PRECISION = Convention(
    "attribute_precision",
    "AttributeProto.f",
    "float32",
    SRC_PROTO,
    note="float attributes are 32-bit: float64 runs need float32-representable values",
)

BN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 1)", 1, SRC_BN),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_BN, note="1e-5 as a float32 attribute"),
    Convention(
        "momentum",
        "momentum",
        1.0 - f32(0.9),
        SRC_BN,
        clause="BN.D2",
        note="canonical = 1 - onnx momentum (0.9, a float32 attribute)",
    ),
    Convention("running_var", "— (ReduceVar, population)", "biased", SRC_BN_DEFS, clause="BN.D1"),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN),
    Convention(
        "training", "training_mode", False, SRC_BN, note="1 = batch statistics and running-stat outputs"
    ),
    Convention(
        "affine",
        "scale, B (required)",
        True,
        SRC_BN,
        note="absent canonical scale/offset pass ones/zeros, exactly",
    ),
    ATTRIBUTE_PRECISION,
)
IN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 1)", 1, SRC_IN),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_IN, note="1e-5 as a float32 attribute"),
    Convention(
        "affine",
        "scale, B (required)",
        True,
        SRC_IN,
        clause="IN.D1",
        note="absent canonical scale/offset pass ones/zeros, exactly",
    ),
    Convention(
        "track_running_stats", "—", False, SRC_IN, note="no running statistics: a state is unsupported"
    ),
    ATTRIBUTE_PRECISION,
)
LN_CONVENTIONS = (
    Convention(
        "axes", "axis", (-1,), SRC_LN, clause="LN.D3", note="normalizes [axis, rank): trailing axes only"
    ),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_LN, note="1e-5 as a float32 attribute"),
    Convention(
        "affine",
        "Scale (required), B (optional)",
        True,
        SRC_LN,
        note="absent canonical scale passes ones, exactly",
    ),
    ATTRIBUTE_PRECISION,
)
GN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 1)", 1, SRC_GN),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_GN, note="1e-5 as a float32 attribute"),
    Convention("assignment", "— (Reshape to [N, G, C/G, ...])", "contiguous", SRC_GN_BODY, clause="GN.D1"),
    Convention(
        "affine",
        "scale, bias (required, per channel at opset 21)",
        True,
        SRC_GN,
        clause="GN.D3",
        note="absent canonical scale/offset pass ones/zeros, exactly",
    ),
    Convention("variance", "— (function body)", "one-pass", SRC_GN_BODY, clause="GN.D4"),
    ATTRIBUTE_PRECISION,
)
RMS_CONVENTIONS = (
    Convention("axes", "axis", (-1,), SRC_RMS, note="normalizes [axis, rank): trailing axes only"),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_RMS, clause="RMS.D2", note="1e-5 as a float32 attribute"),
    Convention(
        "affine",
        "scale (required), no bias",
        True,
        SRC_RMS,
        note="absent canonical scale passes ones, exactly",
    ),
    ATTRIBUTE_PRECISION,
)
LRN_CONVENTIONS = (
    Convention("alpha", "alpha", f32(1e-4), SRC_LRN, note="1e-4 as a float32 attribute"),
    Convention("beta", "beta", 0.75, SRC_LRN),
    Convention("k", "bias", 1.0, SRC_LRN),
    Convention("channel_axis", "— (axis 1)", 1, SRC_LRN),
    Convention("alpha_over_size", "— (alpha / size)", True, SRC_LRN_DEFS),
    Convention(
        "extra",
        "— (window [c-floor((size-1)/2), c+ceil((size-1)/2)])",
        "after",
        SRC_LRN_DEFS,
        clause="LRN.D2",
    ),
    ATTRIBUTE_PRECISION,
)
LP_CONVENTIONS = (
    Convention("p", "p", 2.0, SRC_LP, note="1 or 2 only"),
    Convention("axes", "axis", (-1,), SRC_LP, note="a single axis"),
    Convention("eps", "— (none)", 0.0, SRC_LP, clause="LP.D2", note="no eps"),
    Convention(
        "eps_placement",
        "—",
        "none_or_zero",
        SRC_LP_ZERO,
        clause="LP.D2",
        note="x / norm, and a zero-norm row gives 0 (ONNX >= 1.21)",
    ),
)

# Behaviours of onnxruntime's CPU provider that differ from the operator spec.
ORT_LRN = Convention(
    "kernel_limits",
    "—",
    "odd size",
    SRC_ORT_LRN,
    note="onnxruntime's kernel enforces an odd size, alpha > 0, beta > 0, 4-D input",
)
ORT_LN = Convention(
    "variance",
    "— (CPU kernel)",
    "two-pass",
    SRC_ORT_LN,
    clause="LN.D4",
    note=f"the spec's function body is one-pass ({SRC_LN_BODY}); onnxruntime's kernel centres first "
    "since this PR, released in 1.27.0 (float32 rows offset by 1e4: NaN up to 1.26.0, error 2.9e-3 in "
    "1.27-1.29, 1.2e-3 from 1.30)",
)
ORT_LRN_SUM = Convention(
    "window_sum",
    "— (running sum: add head, subtract tail)",
    "sliding",
    SRC_ORT_LRN_CC,
    note="Caffe's algorithm: a channel's window sum inherits the cancellation error of its "
    "neighbours' larger squares (float32 |x| ~ 1e18: 40 ulps)",
)
ORT_GN = Convention(
    "kernel",
    "—",
    "function-expanded",
    SRC_ORT_GN,
    clause="GN.D4",
    note="no CPU GroupNormalization kernel: the ONNX function body runs (one-pass, float32 stage one); "
    "float16 Mul/Add get Casts to float32, so the affine step rounds once",
)
# Known bugs of onnx.reference, kept as they are (the adapter is faithful).
REF_LRN = Convention(
    "window",
    "— (loops over x.shape[0])",
    "batch axis",
    SRC_REF_LRN,
    clause="LRN.D4",
    note="channels >= N get no window (onnx #7805)",
)
REF_LP = Convention(
    "norm",
    "— (no abs)",
    "(sum x**p)**(1/p)",
    SRC_REF_LP,
    clause="LP.D3",
    note="for p = 1 the 'norm' is a signed sum (fixed upstream by onnx #8427)",
)
REF_LN = Convention(
    "stash_type",
    "stash_type",
    "ignored",
    SRC_REF_LN,
    clause="LN.D7",
    note="computes in the input dtype, not float32",
)
REF_LN_VARIANCE = Convention(
    "variance",
    "— (op_layer_normalization.py)",
    "two-pass",
    SRC_REF_LN,
    clause="LN.D4",
    note="its own NumPy op, not the spec's one-pass function body",
)
REF_GN = Convention(
    "affine_precision",
    "— (function body, stage two in T)",
    "input dtype",
    SRC_GN_BODY,
    note="the normalized values are cast back to T before scale and bias: three roundings in "
    "float16/bfloat16, which cancel where scale*xhat ~ -bias",
)
REF_RMS = Convention(
    "stash_type",
    "stash_type",
    "ignored",
    SRC_REF_RMS,
    clause="RMS.D4",
    note="computes in the input dtype, not float32",
)


MVN = "MeanVarianceNormalization"
MVN_EPS = f32(1e-9)  # the function body's `Epsilon = Constant <value = float {1e-9}>`
MVN_AXES = Convention(
    "axes",
    "axes",
    (0, 2, 3),
    SRC_MVN,
    clause="LN.D11",
    note="any axes; the default normalizes each channel of NCHW over the batch and the spatial axes",
)
MVN_CONVENTIONS = (
    MVN_AXES,
    Convention("eps", "— (Epsilon: a float constant)", MVN_EPS, SRC_MVN_BODY, clause="LN.D11"),
    Convention(
        "eps_placement", "— (Sqrt(Variance) + Epsilon)", "outside_sqrt", SRC_MVN_BODY, clause="LN.D11"
    ),
    Convention(
        "variance", "— (function body)", "one-pass E[x²] − E[x]², unclamped", SRC_MVN_BODY, clause="LN.D11"
    ),
    Convention("affine", "— (none)", False, SRC_MVN, note="a canonical scale or offset is unsupported"),
)
ORT_MVN_CONVENTIONS = (
    MVN_AXES,
    Convention(
        "eps",
        "— (none: its float kernel)",
        0.0,
        SRC_ORT_MVN,
        clause="LN.D11",
        note="(X − E[X]) / sqrt(E[(X − E[X])²]), two-pass; the operator's 1e-9 is its function body's",
    ),
    Convention(
        "eps_placement", "— (no epsilon)", "outside_sqrt", SRC_MVN_BODY, note="the operator's; moot at 0"
    ),
    Convention("affine", "— (none)", False, SRC_MVN, note="a canonical scale or offset is unsupported"),
)


def _declaration(norm, op, dtypes, conventions, accumulation, stateful=False) -> NormDeclaration:
    return NormDeclaration(
        norm, f"onnx {op}-{OPSET[op]}", dtypes, conventions, accumulation, gradients=False, stateful=stateful
    )


# ---------------------------------------------------------------------------------------------
# The model builder shared by both runtimes.


def _np_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes  # a dependency of onnx

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _array(value, dtype: str) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).astype(_np_dtype(dtype))


class _Cache:
    """A bounded least-recently-used map: conformance runs draw many shapes, and sessions hold memory."""

    def __init__(self, size: int = 256):
        self._items: OrderedDict = OrderedDict()
        self._size = size

    def get(self, key, make):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = make()
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value


@dataclass(frozen=True)
class Node:
    """An ONNX adapter's plan: `op` with `attributes`, its inputs (name -> float64 array, None for an
    omitted optional one) and the named outputs of the given shapes, every tensor of `dtype`: the
    one-node model that `_call` runs and `render_plan` writes with onnx.helper."""

    op: str
    attributes: dict
    inputs: dict
    outputs: tuple
    output_shapes: tuple
    dtype: str


@lru_cache(maxsize=512)
def build_model(op: str, attributes: tuple, inputs: tuple, outputs: tuple, dtype: str):
    """A checked one-node ModelProto: `op` at OPSET[op] with `attributes` ((name, value), ...), graph
    inputs `inputs` and outputs `outputs` ((name, shape), ...; an input named "" is an omitted optional
    one), every tensor of `dtype`. Cached: the same key returns the same model."""
    import onnx
    from onnx import TensorProto, helper

    element = getattr(TensorProto, ONNX_TYPES[dtype])
    node = helper.make_node(
        op, [name for name, _ in inputs], [name for name, _ in outputs], **dict(attributes)
    )
    graph = helper.make_graph(
        [node],
        f"normconf_{op}",
        [helper.make_tensor_value_info(name, element, list(shape)) for name, shape in inputs if name],
        [helper.make_tensor_value_info(name, element, list(shape)) for name, shape in outputs],
    )
    model = helper.make_model_gen_version(
        graph, opset_imports=[helper.make_opsetid("", OPSET[op])], producer_name="normconf"
    )
    onnx.checker.check_model(model)
    return model


def _attribute32(name: str, value: float, dtype: str) -> float:
    return float32_attribute(value, dtype, f"ONNX's {name} attribute (AttributeProto.f)")


def _onnx_momentum(momentum, dtype: str) -> float:
    """BN.D2: ONNX weights the old value by `momentum`; canonical w weights the new batch."""
    require(momentum is not None, "ONNX has no cumulative average (momentum=None) (BN.D7)")
    decay = 1.0 - float(momentum)
    exact = (
        f32(decay) == decay and f32(momentum) == float(momentum) and 1 - Fraction(decay) == Fraction(momentum)
    )
    require(
        dtype != "float64" or exact,
        f"ONNX float attributes are 32-bit: momentum={1.0 - float(momentum)!r} "
        f"(canonical {momentum!r}) is not "
        f"exact in float32, so a float64 run cannot use it exactly (AttributeProto.f, BN.D2)",
    )
    return decay


class OnnxBase(Adapter):
    """The norms as one-node ONNX models; subclasses say how a model runs (`_execute`)."""

    family = "onnx"

    def _execute(self, model, key, feeds: dict, outputs: tuple, dtype: str, output_shapes: tuple) -> list:
        raise NotImplementedError

    def _call(
        self, op, attributes: dict, inputs: dict, outputs: tuple, dtype: str, output_shapes: tuple
    ) -> list:
        """Run `op` on `inputs` (name -> float64 array, or None for an omitted optional input) and return
        the named outputs as float64 arrays. Models (and sessions) are cached by op, attributes, shapes
        and dtype, so repeated runs do not rebuild."""
        spec = tuple(
            (name, tuple(np.shape(value))) if value is not None else ("", ())
            for name, value in inputs.items()
        )
        key = (
            op,
            tuple(sorted(attributes.items())),
            spec,
            tuple(zip(outputs, map(tuple, output_shapes), strict=True)),
            dtype,
        )
        model = build_model(*key)
        feeds = {name: _array(value, dtype) for name, value in inputs.items() if value is not None}
        results = self._execute(model, key, feeds, tuple(outputs), dtype, output_shapes)
        return [np.asarray(r).astype(np.float64) for r in results]

    # how a one-node model runs with the framework alone (subclasses): (import line, expression)
    runner: tuple[str, str] = ("", "")

    def _node(self, op, attributes, inputs, outputs=("Y",), shapes=None, *, x, dtype, finish=None) -> Planned:
        """The one-node plan; its Outcome is y (the first output), or `finish(executed)` with the other
        outputs in `executed.after`."""
        node = Node(op, attributes, inputs, tuple(outputs), tuple(shapes or (x.shape,)), dtype)
        return Planned(node, finish or (lambda executed: Outcome(executed.y)))

    def execute_plan(self, node: Node) -> Executed:
        results = self._call(
            node.op, node.attributes, node.inputs, node.outputs, node.dtype, node.output_shapes
        )
        return Executed({}, results[0], {}, dict(zip(node.outputs[1:], results[1:], strict=True)))

    def render_plan(self, node: Node) -> str:
        """The one-node model, rebuilt with onnx.helper and run with the runtime alone."""
        op, attributes, inputs, outputs, shapes, dtype = (
            node.op,
            node.attributes,
            node.inputs,
            node.outputs,
            node.output_shapes,
            node.dtype,
        )
        given = {name: value for name, value in inputs.items() if value is not None}
        np_dtype = "ml_dtypes.bfloat16" if dtype == "bfloat16" else f"np.{dtype}"
        lines = [
            *_repro.HEADER,
            "import onnx",
            "from onnx import TensorProto, helper",
            self.runner[0],
            *_repro.show_function("v"),
            *(["import ml_dtypes"] if dtype == "bfloat16" else []),
            f"element = TensorProto.{ONNX_TYPES[dtype]}",
            f"node = helper.make_node({op!r}, "
            f"{[name if value is not None else '' for name, value in inputs.items()]!r}, "
            f"{list(outputs)!r}, **{dict(attributes)!r})",
            "graph = helper.make_graph([node], 'repro', ["
            + ", ".join(
                f"helper.make_tensor_value_info({name!r}, element, {list(np.shape(v))!r})"
                for name, v in given.items()
            )
            + "], ["
            + ", ".join(
                f"helper.make_tensor_value_info({name!r}, element, {list(shape)!r})"
                for name, shape in zip(outputs, shapes, strict=True)
            )
            + "])",
            "model = helper.make_model_gen_version(graph, "
            f"opset_imports=[helper.make_opsetid('', {OPSET[op]})])",
            "feeds = {"
            + ", ".join(
                f"{name!r}: np.array({_repro.values(v)}).astype({np_dtype})" for name, v in given.items()
            )
            + "}",
            f"outputs = dict(zip({list(outputs)!r}, {self.runner[1]}))",
            f"y = outputs.pop({outputs[0]!r})",
            "show('y', y)",
            "show('after', outputs)",
        ]
        return _repro.script(lines)

    def no_argument_calls(self):
        """One-node models with no optional attribute set (the operator's defaults), the required
        inputs the canonical neutral ones: scale 1, bias 0, running statistics initial."""

        def node(op, output, inputs, attributes=lambda h: {}, implied=lambda x: {}):
            def call(x, hints, dtype):
                if op == "LRN":  # the operator's defaults are the canonical ones (LRN.D1)
                    self._lrn_limits(x, Params("local_response_norm", hints), dtype)
                (y,) = self._call(op, attributes(hints), inputs(x), (output,), dtype, (x.shape,))
                return Outcome(y), implied(x)

            return call

        channels = lambda x: x.shape[1]  # noqa: E731 - the operators' channel axis
        return {
            # training_mode defaults to 0: eval with the running statistics given
            "batch_norm": node(
                "BatchNormalization",
                "Y",
                lambda x: {
                    "X": x,
                    "scale": np.ones(channels(x)),
                    "B": np.zeros(channels(x)),
                    "input_mean": np.zeros(channels(x)),
                    "input_var": np.ones(channels(x)),
                },
                implied=lambda x: {"state": RunningStats.initial(channels(x)), "training": False},
            ),
            "instance_norm": node(
                "InstanceNormalization",
                "output",
                lambda x: {"input": x, "scale": np.ones(channels(x)), "B": np.zeros(channels(x))},
            ),
            "layer_norm": node("LayerNormalization", "Y", lambda x: {"X": x, "Scale": np.ones(x.shape[-1:])}),
            "group_norm": node(
                "GroupNormalization",
                "Y",
                lambda x: {"X": x, "scale": np.ones(channels(x)), "bias": np.zeros(channels(x))},
                attributes=lambda h: {"num_groups": int(h["groups"])},
            ),
            "local_response_norm": node(
                "LRN", "Y", lambda x: {"X": x}, attributes=lambda h: {"size": int(h["size"])}
            ),
            "lp_normalize": node("LpNormalization", "output", lambda x: {"input": x}),
        }

    # -- norms ----------------------------------------------------------------------------------

    def _run_batch_norm(self, x, params, dtype, cotangent):
        require(x.ndim >= 2, "BatchNormalization needs (N, C, ...) input")
        require(channel_axis_of(x, params) == 1, "ONNX BatchNormalization's channel axis is 1 (BN.P1)")
        state, training = params.get("state"), params["training"]
        updates = training and state is not None
        require(
            not updates or params["running_var"] == "biased",
            "ONNX updates running_var with the population (biased) variance (BN.D1)",
        )
        channels = x.shape[1]
        eps = _attribute32("epsilon", params["eps"], dtype)
        scale = params.get("scale")
        offset = params.get("offset")
        inputs = {
            "X": x,
            "scale": np.ones(channels) if scale is None else scale,
            "B": np.zeros(channels) if offset is None else offset,
        }
        if training or state is None:
            # training_mode=1 normalizes with the batch statistics (BN.S1, BN.S4) and must have all three
            # outputs; without a state the running inputs are placeholders whose outputs are dropped.
            momentum = _onnx_momentum(params["momentum"], dtype) if updates else f32(0.9)
            inputs["input_mean"] = np.zeros(channels) if state is None else state.mean
            inputs["input_var"] = np.ones(channels) if state is None else state.var
            outputs, shapes = ("Y", "running_mean", "running_var"), (x.shape, (channels,), (channels,))
            attributes = {"epsilon": eps, "momentum": momentum, "training_mode": 1}
        else:  # BN.S3: eval with the running statistics
            inputs["input_mean"], inputs["input_var"] = state.mean, state.var
            outputs, shapes = ("Y",), (x.shape,)
            attributes = {"epsilon": eps, "training_mode": 0}

        def finish(executed):
            new_state = state
            if updates:
                after = executed.after
                new_state = RunningStats(
                    after["running_mean"], after["running_var"], state.num_batches_tracked + 1
                )
            return Outcome(executed.y, new_state)

        return self._node(
            "BatchNormalization", attributes, inputs, outputs, shapes, x=x, dtype=dtype, finish=finish
        )

    def _run_instance_norm(self, x, params, dtype, cotangent):
        require(x.ndim >= 3, "InstanceNormalization needs (N, C, D1, ...) input (IN.C1)")
        require(channel_axis_of(x, params) == 1, "ONNX InstanceNormalization's channel axis is 1 (IN.P1)")
        require(params.get("state") is None, "ONNX InstanceNormalization keeps no running statistics (IN.P4)")
        channels = x.shape[1]
        scale, offset = params.get("scale"), params.get("offset")
        inputs = {
            "input": x,
            "scale": np.ones(channels) if scale is None else scale,
            "B": np.zeros(channels) if offset is None else offset,
        }
        attributes = {"epsilon": _attribute32("epsilon", params["eps"], dtype)}
        return self._node("InstanceNormalization", attributes, inputs, ("output",), x=x, dtype=dtype)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(
            count is not None, "ONNX LayerNormalization normalizes [axis, rank): trailing axes only (LN.D3)"
        )
        shape = x.shape[x.ndim - count :]
        scale, offset = params.get("scale"), params.get("offset")
        inputs = {"X": x, "Scale": np.ones(shape) if scale is None else scale, "B": offset}
        attributes = {
            "axis": x.ndim - count,
            "epsilon": _attribute32("epsilon", params["eps"], dtype),
        }
        return self._node("LayerNormalization", attributes, inputs, x=x, dtype=dtype)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(x.ndim >= 2, "GroupNormalization needs (N, C, ...) input")
        require(channel_axis_of(x, params) == 1, "ONNX GroupNormalization's channel axis is 1 (GN.P2)")
        require(params["assignment"] == "contiguous", "ONNX groups contiguous channels (GN.D1)")
        channels = x.shape[1]
        scale, offset = params.get("scale"), params.get("offset")
        inputs = {
            "X": x,
            "scale": np.ones(channels) if scale is None else scale,
            "bias": np.zeros(channels) if offset is None else offset,
        }
        attributes = {
            "num_groups": int(params["groups"]),
            "epsilon": _attribute32("epsilon", params["eps"], dtype),
        }
        return self._node("GroupNormalization", attributes, inputs, x=x, dtype=dtype)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "ONNX RMSNormalization normalizes [axis, rank): trailing axes only")
        require(params.get("offset") is None, "ONNX RMSNormalization has no bias")
        require(params.get("eps") is not None, "ONNX RMSNormalization needs an explicit eps (RMS.P3)")
        shape = x.shape[x.ndim - count :]
        scale = params.get("scale")
        inputs = {"X": x, "scale": np.ones(shape) if scale is None else scale}
        attributes = {"axis": x.ndim - count, "epsilon": _attribute32("epsilon", params["eps"], dtype)}
        return self._node("RMSNormalization", attributes, inputs, x=x, dtype=dtype)

    def _lrn_limits(self, x, params, dtype):
        """Where a runtime implements less of LRN than the operator spec; overridden."""

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        require(x.ndim >= 3, "ONNX LRN needs (N, C, D1, ...) input")
        require(channel_axis_of(x, params) == 1, "ONNX LRN windows over axis 1 (LRN.P3)")
        require(params["alpha_over_size"], "ONNX always divides alpha by size (LRN.N2)")
        size = int(params["size"])
        require(
            size % 2 == 1 or params["extra"] == "after",
            "ONNX puts an even window's extra channel after c (LRN.D2)",
        )
        self._lrn_limits(x, params, dtype)
        attributes = {
            "size": size,
            "alpha": _attribute32("alpha", params["alpha"], dtype),
            "beta": _attribute32("beta", params["beta"], dtype),
            "bias": _attribute32("bias", params["k"], dtype),
        }
        return self._node("LRN", attributes, {"X": x}, x=x, dtype=dtype)

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(
            params["eps_placement"] == "none_or_zero",
            "ONNX LpNormalization has no eps and maps a zero row to 0: "
            "eps_placement='none_or_zero' only (LP.D2)",
        )
        p = float(params["p"])
        require(p in (1.0, 2.0), f"ONNX LpNormalization takes p = 1 or 2, not {p!r} (LP.P1)")
        axes = params["axes"]
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        require(len(axes) == 1, "ONNX LpNormalization normalizes along a single axis (LP.P2)")
        attributes = {"axis": int(axes[0]) % x.ndim, "p": int(p)}
        return self._node("LpNormalization", attributes, {"input": x}, ("output",), x=x, dtype=dtype)


class OnnxRuntime(OnnxBase):
    """The models run by `onnxruntime.InferenceSession` on the CPU provider, graph optimizations off."""

    runner = (
        "import onnxruntime\noptions = onnxruntime.SessionOptions()\n"
        "options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL",
        "onnxruntime.InferenceSession(model.SerializeToString(), options, providers=['CPUExecutionProvider'])"
        ".run(None, feeds)",
    )
    name = "onnxruntime"
    cost = 5.0  # see Adapter.cost
    requires = ("onnx", "onnxruntime")
    # onnxruntime 1.32 CPU: bfloat16 has a kernel for LayerNormalization only; float64 has none for
    # InstanceNormalization or LRN. float16 runs natively (LayerNormalization, RMSNormalization) or
    # through Casts to float32 that ORT inserts around float-only kernels even with optimizations off.
    declarations = {
        "batch_norm": _declaration(
            "batch_norm",
            "BatchNormalization",
            ("float16", "float32", "float64"),
            BN_CONVENTIONS,
            HALF_IN_FLOAT32,
            stateful=True,
        ),
        "instance_norm": _declaration(
            "instance_norm", "InstanceNormalization", ("float16", "float32"), IN_CONVENTIONS, HALF_IN_FLOAT32
        ),
        "layer_norm": _declaration(
            "layer_norm", "LayerNormalization", ALL_DTYPES, LN_CONVENTIONS + (ORT_LN,), HALF_IN_FLOAT32
        ),
        "group_norm": _declaration(
            "group_norm",
            "GroupNormalization",
            ("float16", "float32", "float64"),
            GN_CONVENTIONS + (ORT_GN,),
            STASH_FLOAT32,
        ),
        "rms_norm": _declaration(
            "rms_norm",
            "RMSNormalization",
            ("float16", "float32", "float64"),
            RMS_CONVENTIONS,
            HALF_IN_FLOAT32,
        ),
        "local_response_norm": _declaration(
            "local_response_norm",
            "LRN",
            ("float16", "float32"),
            LRN_CONVENTIONS + (ORT_LRN, ORT_LRN_SUM),
            HALF_IN_FLOAT32,
        ),
        "lp_normalize": _declaration(
            "lp_normalize",
            "LpNormalization",
            ("float16", "float32", "float64"),
            LP_CONVENTIONS,
            HALF_IN_FLOAT32,
        ),
    }

    def __init__(self):
        self._sessions = _Cache()

    @staticmethod
    def _options():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )  # the node runs as written
        # normconf run's workers ask for one thread each (conformance/workers.py THREADS)
        options.intra_op_num_threads = int(os.environ.get("NORMCONF_THREADS", "0"))
        return options

    def environment(self):
        import onnx
        import onnxruntime as ort

        options = self._options()
        return {
            "adapter": self.name,
            "framework": "onnxruntime",
            "version": ort.__version__,
            "onnx_version": onnx.__version__,
            "device": "cpu",
            "providers": ["CPUExecutionProvider"],
            "graph_optimization_level": "ORT_DISABLE_ALL",
            "intra_op_num_threads": options.intra_op_num_threads,  # 0: onnxruntime's default
            "opsets": dict(OPSET),
        }

    def _lrn_limits(self, x, params, dtype):
        require(x.ndim == 4, "onnxruntime's CPU LRN takes 4-D NCHW input only")
        require(int(params["size"]) % 2 == 1, "onnxruntime's CPU LRN enforces an odd size (LRN.D2)")
        require(
            f32(params["alpha"]) > 0 and f32(params["beta"]) > 0,
            "onnxruntime's CPU LRN enforces alpha > 0 and beta > 0 (as float32 attributes)",
        )

    def _execute(self, model, key, feeds, outputs, dtype, output_shapes):
        import onnxruntime as ort

        session = self._sessions.get(
            key,
            lambda: ort.InferenceSession(
                model.SerializeToString(), self._options(), providers=["CPUExecutionProvider"]
            ),
        )
        if dtype != "bfloat16":
            return session.run(list(outputs), feeds)
        # onnxruntime's Python binding has no NumPy bfloat16: hand it the bits as uint16 OrtValues and
        # bind preallocated uint16 output buffers of the known shapes.
        from onnx import TensorProto

        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(
                name,
                ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    np.ascontiguousarray(value).view(np.uint16), TensorProto.BFLOAT16
                ),
            )
        buffers = []
        for name, shape in zip(outputs, output_shapes, strict=True):
            buffer = np.empty(shape, dtype=np.uint16)
            binding.bind_ortvalue_output(
                name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buffer, TensorProto.BFLOAT16)
            )
            buffers.append(buffer)
        session.run_with_iobinding(binding)
        return [buffer.view(_np_dtype("bfloat16")) for buffer in buffers]


class OnnxReference(OnnxBase):
    """The same models run by `onnx.reference.ReferenceEvaluator` (NumPy), bugs included."""

    runner = ("import onnx.reference", "onnx.reference.ReferenceEvaluator(model).run(None, feeds)")
    name = "onnx.reference"
    cost = 1.9  # see Adapter.cost
    requires = ("onnx",)
    # The evaluator's ops are NumPy in the input dtype (stash_type ignored); GroupNormalization has no
    # Python op and runs its function body (stage one cast to float32, as stash_type=1 says).
    declarations = {
        "batch_norm": _declaration(
            "batch_norm", "BatchNormalization", ALL_DTYPES, BN_CONVENTIONS, SAME, stateful=True
        ),
        "instance_norm": _declaration(
            "instance_norm", "InstanceNormalization", ALL_DTYPES, IN_CONVENTIONS, SAME
        ),
        "layer_norm": _declaration(
            "layer_norm", "LayerNormalization", ALL_DTYPES, LN_CONVENTIONS + (REF_LN_VARIANCE, REF_LN), SAME
        ),
        "group_norm": _declaration(
            "group_norm", "GroupNormalization", ALL_DTYPES, GN_CONVENTIONS + (REF_GN,), STASH_FLOAT32
        ),
        "rms_norm": _declaration(
            "rms_norm", "RMSNormalization", ALL_DTYPES, RMS_CONVENTIONS + (REF_RMS,), SAME
        ),
        "local_response_norm": _declaration(
            "local_response_norm", "LRN", ALL_DTYPES, LRN_CONVENTIONS + (REF_LRN,), SAME
        ),
        "lp_normalize": _declaration(
            "lp_normalize", "LpNormalization", ALL_DTYPES, LP_CONVENTIONS + (REF_LP,), SAME
        ),
    }

    def __init__(self):
        self._evaluators = _Cache()

    def environment(self):
        import onnx

        return {
            "adapter": self.name,
            "framework": "onnx.reference",
            "version": onnx.__version__,
            "numpy": np.__version__,
            "device": "cpu",
            "opsets": dict(OPSET),
        }

    def _lrn_limits(self, x, params, dtype):
        require(x.ndim == 4, "onnx.reference's LRN takes 4-D input only")

    def _execute(self, model, key, feeds, outputs, dtype, output_shapes):
        from onnx.reference import ReferenceEvaluator

        return self._evaluators.get(key, lambda: ReferenceEvaluator(model)).run(list(outputs), feeds)


class _MeanVarianceNormalization:
    """An adapter whose layer_norm is ONNX MeanVarianceNormalization-13 (LN.D11): LayerNorm over any axes
    with eps outside the root and no scale or bias - the only norm it runs. float32 only: the function
    body's Epsilon is a float constant, so every other type fails its type check (onnxruntime refuses the
    model, onnx.reference raises)."""

    def no_argument_calls(self):
        def call(x, hints, dtype):
            require(x.ndim >= 4, "MeanVarianceNormalization's default axes (0, 2, 3) need rank >= 4")
            (y,) = self._call(MVN, {}, {"X": x}, ("Y",), dtype, (x.shape,))
            return Outcome(y), {}

        return {"layer_norm": call}

    def _run_layer_norm(self, x, params, dtype, cotangent):
        eps = self.declarations["layer_norm"].convention("eps").value
        require(params["eps"] == eps, f"MeanVarianceNormalization's epsilon is fixed at {eps!r} (LN.D11)")
        require(
            params.get("scale") is None and params.get("offset") is None,
            "MeanVarianceNormalization has no scale or bias (LN.D11)",
        )
        require(
            all(-x.ndim <= a < x.ndim for a in params["axes"]),
            f"axes {tuple(params['axes'])} out of range for rank {x.ndim} (LN.C2)",
        )
        axes = tuple(sorted(a % x.ndim for a in params["axes"]))
        return self._node(MVN, {"axes": axes}, {"X": x}, x=x, dtype=dtype)


class OnnxRuntimeMvn(_MeanVarianceNormalization, OnnxRuntime):
    """MeanVarianceNormalization on onnxruntime's CPU kernel."""

    name = "onnxruntime[mvn]"
    cost = 1.0  # see Adapter.cost
    declarations = {"layer_norm": _declaration("layer_norm", MVN, ("float32",), ORT_MVN_CONVENTIONS, SAME)}


class OnnxReferenceMvn(_MeanVarianceNormalization, OnnxReference):
    """MeanVarianceNormalization on onnx.reference, which runs the operator's function body."""

    name = "onnx.reference[mvn]"
    cost = 1.0  # see Adapter.cost
    declarations = {"layer_norm": _declaration("layer_norm", MVN, ("float32",), MVN_CONVENTIONS, SAME)}


__all__ = ["OPSET", "OnnxReference", "OnnxReferenceMvn", "OnnxRuntime", "OnnxRuntimeMvn", "build_model"]
