"""MLX: the `mlx.nn` normalization layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm).

MLX is channels-last: every layer takes its features on the last axis, so the canonical channel
axis must be the last one and LayerNorm/RMSNorm normalize the last axis only. Each run builds the
layer, converts it with `set_dtype` as a user would, loads the canonical scale, offset and running
statistics into its arrays, and calls it on the CPU stream (float64 exists only there); gradients
come from `mx.vjp` w.r.t. x and the parameters as loaded.

Facts are read from ml-explore/mlx @ 846d176 (0.32.2 development; `normalization.py` and `fast.cpp`
are as in the installed 0.32.4) and checked numerically against the installed mlx on CPU. On the
CPU, `mx.fast.layer_norm` and `mx.fast.rms_norm` always run their composite fallback, which casts
the input to float32 first: half and float64 inputs alike are computed in float32 (LN.D9).
"""

from __future__ import annotations

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _repro
from ..base import Adapter, Convention, NormDeclaration, Outcome, channel_axis_of, require, stepped, trailing
from ..plan import Define, Executed, Get, Input, Plan, Planned, Runtime, Step, Symbol

MLX = "https://github.com/ml-explore/mlx/blob/846d176227a0ac13d2667e58d2bb68b322109ab0/"
NORM = MLX + "python/mlx/nn/layers/normalization.py"
SRC_IN = NORM + "#L43-L81"
SRC_LN = NORM + "#L109-L128"
SRC_RMS = NORM + "#L153-L164"
SRC_GN = NORM + "#L198-L228"
SRC_GN_CONTIGUOUS = NORM + "#L236-L250"  # pytorch_compatible=True: (…, G, C/G), then fast.layer_norm
SRC_GN_INTERLEAVED = NORM + "#L252-L265"  # default: reshape(batch, -1, G), mx.mean / mx.var
SRC_BN = NORM + "#L318-L342"
SRC_BN_STATS = NORM + "#L357-L374"
SRC_BN_CALL = NORM + "#L376-L413"
SRC_BN_ONE_VALUE = NORM + "#L391-L398"
SRC_BN_UPDATE = NORM + "#L402-L410"
SRC_FAST_RMS = MLX + "mlx/fast.cpp#L53-L121"
SRC_FAST_LN = MLX + "mlx/fast.cpp#L190-L281"
SRC_VAR = MLX + "mlx/ops.cpp#L2449-L2484"  # mean, then sum(square(x - mean)) * 1/n, in the input dtype

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
# fast.layer_norm / fast.rms_norm on CPU: `astype(x, float32)` before any statistic, float64 included.
FAST_FLOAT32 = {d: "float32" for d in ALL_DTYPES}
# mx.mean / mx.var (BatchNorm, GroupNorm's default path): the sum accumulates in float32 for half inputs
# (PR #4387) but the mean, x - mean, its square, the sum and eps are all arrays of the input dtype.
INPUT_DTYPE = {d: d for d in ALL_DTYPES}

LAST_AXIS = "— (last axis)"

BN_CONVENTIONS = (
    Convention(
        "channel_axis",
        LAST_AXIS,
        -1,
        SRC_BN_STATS,
        note="NC, NLC or NHWC: rank 2 to 4 only (else ValueError)",
    ),
    Convention("eps", "eps", 1e-5, SRC_BN, clause="BN.D13", note="must be > 0: eps = 0 raises ValueError"),
    Convention(
        "momentum", "momentum", 0.1, SRC_BN_UPDATE, note="weight on the new batch, as canonical; no None"
    ),
    Convention("running_var", "— (ddof=1)", "unbiased", SRC_BN_UPDATE),
    Convention("eps_placement", "— (rsqrt(var + eps))", "inside_sqrt", SRC_BN_CALL),
    Convention(
        "training",
        "train() / eval()",
        "training = module.training",
        SRC_BN_CALL,
        note="eval without track_running_stats normalizes by the batch statistics (BN.S4)",
    ),
    Convention("affine", "affine", True, SRC_BN),
    Convention(
        "track_running_stats",
        "track_running_stats",
        True,
        SRC_BN,
        note="running_mean 0, running_var 1 at init (BN.P7)",
    ),
    Convention(
        "one_value",
        "— (training check)",
        "raises",
        SRC_BN_ONE_VALUE,
        clause="BN.D6",
        note="'BatchNorm training requires more than one value per channel'",
    ),
    Convention(
        "statistics_dtype",
        "— (mx.mean, mx.var)",
        "the input dtype",
        SRC_VAR,
        clause="BN.D14",
        note="float16 sums accumulate in float32 but are stored, squared and offset by eps in float16",
    ),
)
LN_CONVENTIONS = (
    Convention(
        "axes",
        "— (last axis; dims = x.shape[-1])",
        (-1,),
        SRC_LN,
        clause="LN.D3",
        note="one trailing axis only",
    ),
    Convention("eps", "eps", 1e-5, SRC_LN, clause="BN.D13", note="must be > 0"),
    Convention("affine", "affine, bias", True, SRC_LN, note="bias=False keeps the scale only"),
    Convention(
        "computation",
        "— (mx.fast.layer_norm CPU fallback)",
        "float32 for every input dtype",
        SRC_FAST_LN,
        clause="LN.D9",
        note="two-pass mean((x - mean)²); the affine is applied in the input dtype",
    ),
)
GN_CONVENTIONS = (
    Convention("channel_axis", LAST_AXIS, -1, SRC_GN_INTERLEAVED, note="batch axis 0, spatial axes between"),
    Convention("eps", "eps", 1e-5, SRC_GN, clause="BN.D13", note="must be > 0"),
    Convention(
        "assignment",
        "pytorch_compatible",
        "interleaved",
        SRC_GN_INTERLEAVED,
        clause="GN.D8",
        note="False (default): reshape(batch, -1, G) groups channel c with c % G; "
        "True: contiguous, as canonical",
    ),
    Convention("affine", "affine", True, SRC_GN),
    Convention(
        "computation",
        "— (by pytorch_compatible)",
        "contiguous: mx.fast.layer_norm in float32; interleaved: mx.mean / mx.var in the input dtype",
        SRC_GN_CONTIGUOUS,
        clause="GN.D8",
        note="the declared statistics dtype is the contiguous path's (LN.D9)",
    ),
)
IN_CONVENTIONS = (
    Convention("channel_axis", LAST_AXIS, -1, SRC_IN, note="(N, ..., C), rank >= 3"),
    Convention("eps", "eps", 1e-5, SRC_IN, clause="BN.D13", note="must be > 0"),
    Convention("affine", "affine", False, SRC_IN, clause="IN.D1"),
    Convention(
        "track_running_stats",
        "— (none)",
        False,
        SRC_IN,
        note="no running statistics: a canonical state is unsupported",
    ),
    Convention(
        "computation",
        "— (mx.fast.layer_norm CPU fallback)",
        "float32 for every input dtype",
        SRC_FAST_LN,
        note="as LayerNorm (LN.D9); the affine is applied in the input dtype",
    ),
)
RMS_CONVENTIONS = (
    Convention("axes", "— (last axis; dims = x.shape[-1])", (-1,), SRC_RMS, note="one trailing axis only"),
    Convention("eps", "eps", 1e-5, SRC_RMS, clause="RMS.D2", note="must be > 0"),
    Convention("offset", "— (no bias)", "absent", SRC_RMS, note="a canonical offset is unsupported"),
    Convention(
        "computation",
        "— (mx.fast.rms_norm CPU fallback)",
        "float32 for every input dtype",
        SRC_FAST_RMS,
        note="as LayerNorm (LN.D9); the scale is applied in the input dtype",
    ),
)


def _mx():
    import mlx.core as mx

    return mx


def _nn():
    import mlx.nn as nn

    return nn


def _array(value, dtype: str):
    """An mlx array of `dtype` from float64 values, rounded once (mx.array alone would make float32)."""
    mx = _mx()
    return mx.array(np.asarray(value, dtype=np.float64), dtype=mx.float64).astype(getattr(mx, dtype))


def _numpy(a) -> np.ndarray:
    mx = _mx()
    return np.array(a.astype(mx.float64), dtype=np.float64)


MLX = Runtime(
    imports=(
        "import mlx.core as mx",
        "import mlx.nn as nn",
        "mx.set_default_device(mx.cpu)  # float64: CPU only",
    ),
    tensor=lambda value: _array(value.value, value.dtype),
    tensor_source=lambda value: (
        f"mx.array(np.array({_repro.values(value.value)}), dtype=mx.float64).astype(mx.{value.dtype})"
    ),
    numpy=lambda a: _numpy(a),
    numpy_source="v.astype(mx.float64)",
    aliases=(("mlx.core", "mx"), ("mlx.nn", "nn")),
)


def _layer(cls: str, args, kwargs, x, params, dtype, cotangent, *, state=None, training=True, finish=None):
    """mlx.nn.<cls>(*args, **kwargs) in `dtype`, its running statistics (`state`) and the canonical
    affine loaded (absent ones keep MLX's 1 and 0), train(training), called on x; gradients by mx.vjp
    w.r.t. x and the loaded affine parameters."""
    steps = [
        Step("layer", Symbol(f"mlx.nn.{cls}"), args, kwargs),
        Step(None, Get("layer", "set_dtype"), (Symbol(f"mlx.core.{dtype}"),)),
    ]
    if state is not None:  # frozen arrays: update() still assigns them
        running = {"running_mean": Input("running_mean", state.mean, dtype)}
        running["running_var"] = Input("running_var", state.var, dtype)
        steps.append(Step(None, Get("layer", "update"), (running,)))
    steps.append(Step(None, Get("layer", "train"), (training,)))
    names = {k: a for k, a in (("scale", "weight"), ("offset", "bias")) if params.get(k) is not None}
    loaded = {a: Input(a, params[k], dtype) for k, a in names.items()}
    if loaded:
        steps.append(Step(None, Get("layer", "update"), (loaded,)))
    x_in, grads, y = Input("x", x, dtype), {}, Get("y")
    if cotangent is None:
        steps.append(Step("y", Get("layer"), (x_in,)))
    else:
        arguments = ("x_", *(f"{a}_" for a in loaded))
        forward = Define(
            "forward",
            arguments,
            (
                Step(None, Get("layer", "update"), ({a: Get(f"{a}_") for a in loaded},)),
                Step("y_", Get("layer"), (Get("x_"),)),
            ),
            Get("y_"),
        )
        vjp = Step(
            "out",
            Symbol("mlx.core.vjp"),
            (Get("forward"), [x_in, *loaded.values()], [Input("g", cotangent, dtype)]),
        )
        steps += [forward, vjp]
        y = Get("out", "0.0")
        grads = {"x": Get("out", "1.0"), **{k: Get("out", f"1.{i}") for i, k in enumerate(names, start=1)}}
    after = (
        {}
        if state is None
        else {"running_mean": Get("layer", "running_mean"), "running_var": Get("layer", "running_var")}
    )

    def outcome(executed: Executed) -> Outcome:
        found = None
        if cotangent is not None:
            found = Grads(executed.grads["x"], executed.grads.get("scale"), executed.grads.get("offset"))
        return (finish or (lambda e, g: Outcome(e.y, grads=g)))(executed, found)

    return Planned(Plan(MLX, tuple(steps), grads, after, y), outcome)


def _channels_last(api: str, x, params, clause: str) -> None:
    require(
        channel_axis_of(x, params) == x.ndim - 1, f"{api} takes channels on the last axis only ({clause})"
    )


def _last_axis(api: str, x, params) -> None:
    require(trailing(params["axes"], x.ndim) == 1, f"{api} normalizes the last axis only (LN.D3)")


class MlxNn(Adapter):
    """`mlx.nn` layers on the CPU stream."""

    name = "mlx.nn"
    cost = 6.3  # see Adapter.cost
    family = "mlx"
    requires = ("mlx",)
    declarations = {
        "batch_norm": NormDeclaration(
            norm="batch_norm",
            api="mlx.nn.BatchNorm",
            dtypes=ALL_DTYPES,
            conventions=BN_CONVENTIONS,
            accumulation=INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="mlx.nn.LayerNorm (mlx.core.fast.layer_norm)",
            dtypes=ALL_DTYPES,
            conventions=LN_CONVENTIONS,
            accumulation=FAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="mlx.nn.GroupNorm",
            dtypes=ALL_DTYPES,
            conventions=GN_CONVENTIONS,
            accumulation=FAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            norm="instance_norm",
            api="mlx.nn.InstanceNorm (mlx.core.fast.layer_norm)",
            dtypes=ALL_DTYPES,
            conventions=IN_CONVENTIONS,
            accumulation=FAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            norm="rms_norm",
            api="mlx.nn.RMSNorm (mlx.core.fast.rms_norm)",
            dtypes=ALL_DTYPES,
            conventions=RMS_CONVENTIONS,
            accumulation=FAST_FLOAT32,
            gradients=True,
        ),
    }

    def environment(self):
        import mlx.core as mx

        return {
            "adapter": self.name,
            "framework": "mlx",
            "version": mx.__version__,
            "device": "cpu",
            "default_device": str(mx.default_device()),
            "metal": bool(mx.metal.is_available()),
        }

    def run(self, norm, x, params, *, dtype="float64", cotangent=None):
        mx = _mx()
        with mx.stream(mx.cpu):  # float64 runs on the CPU only
            return super().run(norm, x, params, dtype=dtype, cotangent=cotangent)

    def no_argument_calls(self):
        return DEFAULT_CALLS

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        mx = _mx()
        with mx.stream(mx.cpu):
            return super().run_framework_defaults(norm, x, hints, dtype=dtype)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        require(2 <= x.ndim <= 4, "mlx.nn.BatchNorm takes rank 2 to 4 (NC, NLC, NHWC)")
        _channels_last("mlx.nn.BatchNorm", x, params, "BN.P1")
        state, training = params.get("state"), params["training"]
        if training and state is not None:
            require(params["momentum"] is not None, "mlx.nn.BatchNorm has no cumulative average (BN.D7)")
            require(
                params["running_var"] == "unbiased",
                "mlx.nn.BatchNorm updates the running variance with ddof=1: running_var='unbiased' only",
            )
        momentum = params["momentum"]
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {
            "eps": params["eps"],
            "momentum": 0.1 if momentum is None else momentum,
            "affine": affine,
            "track_running_stats": state is not None,
        }

        finish = stepped(state, training, lambda e: (e.after["running_mean"], e.after["running_var"]))

        return _layer(
            "BatchNorm",
            (x.shape[-1],),
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            state=state,
            training=training,
            finish=finish,
        )

    def _run_layer_norm(self, x, params, dtype, cotangent):
        _last_axis("mlx.nn.LayerNorm", x, params)
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {"eps": params["eps"], "affine": affine, "bias": params.get("offset") is not None}
        return _layer("LayerNorm", (x.shape[-1],), kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        _channels_last("mlx.nn.GroupNorm", x, params, "GN.P2")
        affine = params.get("scale") is not None or params.get("offset") is not None
        contiguous = params["assignment"] == "contiguous"
        kwargs = {"eps": params["eps"], "affine": affine, "pytorch_compatible": contiguous}
        return _layer("GroupNorm", (params["groups"], x.shape[-1]), kwargs, x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        _channels_last("mlx.nn.InstanceNorm", x, params, "IN.P1")
        require(
            params.get("state") is None,
            "mlx.nn.InstanceNorm keeps no running statistics: state must be None (IN.P4)",
        )
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {"eps": params["eps"], "affine": affine}
        return _layer("InstanceNorm", (x.shape[-1],), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        _last_axis("mlx.nn.RMSNorm", x, params)
        require(params.get("offset") is None, "mlx.nn.RMSNorm has no bias (RMS.P2)")
        require(params.get("eps") is not None, "mlx.nn.RMSNorm needs an explicit eps (RMS.P3)")
        # the weight is always there: absent scale = ones
        return _layer("RMSNorm", (x.shape[-1],), {"eps": params["eps"]}, x, params, dtype, cotangent)


def _default_layer(build, stateful=False):
    """A no-argument call: the layer `build(nn, x, hints)` in its default (training) mode; channels last."""

    def call(x, hints, dtype):
        layer = build(_nn(), x, hints)
        layer.set_dtype(getattr(_mx(), dtype))
        y = layer(_array(x, dtype))
        _mx().eval(y)
        if not stateful:
            return Outcome(_numpy(y)), {}
        state = RunningStats(_numpy(layer.running_mean), _numpy(layer.running_var), 1)
        return Outcome(_numpy(y), state), {"state": RunningStats.initial(x.shape[-1]), "training": True}

    return call


DEFAULT_CALLS = {
    "batch_norm": _default_layer(lambda nn, x, h: nn.BatchNorm(x.shape[-1]), stateful=True),
    "layer_norm": _default_layer(lambda nn, x, h: nn.LayerNorm(x.shape[-1])),
    "group_norm": _default_layer(lambda nn, x, h: nn.GroupNorm(h["groups"], x.shape[-1])),
    "instance_norm": _default_layer(lambda nn, x, h: nn.InstanceNorm(x.shape[-1])),
    "rms_norm": _default_layer(lambda nn, x, h: nn.RMSNorm(x.shape[-1])),
}

__all__ = ["MlxNn"]
