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

import numpy as np

from normconf.reference import RunningStats

from ..base import Adapter, Outcome, Params, channel_axis_of, f32, require, trailing
from ..plan import Executed, Planned
from .declarations import (
    ALL_DTYPES,
    BN_CONVENTIONS,
    GN_CONVENTIONS,
    HALF_IN_FLOAT32,
    IN_CONVENTIONS,
    LN_CONVENTIONS,
    LP_CONVENTIONS,
    LRN_CONVENTIONS,
    MVN,
    MVN_CONVENTIONS,
    OPSET,
    ORT_GN,
    ORT_LN,
    ORT_LRN,
    ORT_LRN_SUM,
    ORT_MVN_CONVENTIONS,
    REF_GN,
    REF_LN,
    REF_LN_VARIANCE,
    REF_LP,
    REF_LRN,
    REF_RMS,
    RMS_CONVENTIONS,
    SAME,
    STASH_FLOAT32,
    _declaration,
)
from .model_builder import (
    Node,
    _array,
    _attribute32,
    _Cache,
    _np_dtype,
    _onnx_momentum,
    build_model,
    render_model,
)


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
        return render_model(node, self.runner)

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


__all__ = ["OnnxReference", "OnnxReferenceMvn", "OnnxRuntime", "OnnxRuntimeMvn"]
