"""The one-node model builder shared by both runtimes: onnx.helper models (`build_model`, cached) and the
same model written as a standalone script (`render_model`), the plan they run from (`Node`), the NumPy
arrays fed to them, a bounded cache for sessions and evaluators, and the 32-bit float attributes (epsilon,
momentum, ...) the canonical values become. Its own module so that `adapters.py` holds the adapters; onnx
is imported only when a model is built."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from .. import _repro
from ..base import f32, float32_attribute, require
from .declarations import OPSET

ONNX_TYPES = {"float16": "FLOAT16", "bfloat16": "BFLOAT16", "float32": "FLOAT", "float64": "DOUBLE"}


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


def render_model(node: Node, runner: tuple[str, str]) -> str:
    """The one-node model, rebuilt with onnx.helper and run with the runtime alone: `runner` is how
    (import line, expression), as `OnnxBase.runner`."""
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
        runner[0],
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
        f"model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid('', {OPSET[op]})])",
        "feeds = {"
        + ", ".join(f"{name!r}: np.array({_repro.values(v)}).astype({np_dtype})" for name, v in given.items())
        + "}",
        f"outputs = dict(zip({list(outputs)!r}, {runner[1]}))",
        f"y = outputs.pop({outputs[0]!r})",
        "show('y', y)",
        "show('after', outputs)",
    ]
    return _repro.script(lines)
