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

import sys

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _repro
from ..base import Adapter, Convention, NormDeclaration, Outcome, channel_axis_of, require, trailing

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


def _state(state: RunningStats | None, dtype: str) -> dict:
    return (
        {}
        if state is None
        else {"running_mean": _array(state.mean, dtype), "running_var": _array(state.var, dtype)}
    )


def _call(layer, x, params, dtype, cotangent, training=True):
    """Load the canonical affine into `layer` (absent ones keep MLX's 1 and 0), call it in the train
    or eval mode asked for; grads via mx.vjp w.r.t. x and the loaded parameters."""
    mx = _mx()
    layer.set_dtype(getattr(mx, dtype))
    layer.train(training)
    names = {k: a for k, a in (("scale", "weight"), ("offset", "bias")) if params.get(k) is not None}
    loaded = {a: _array(params[k], dtype) for k, a in names.items()}
    layer.update(loaded)
    xm = _array(x, dtype)
    if cotangent is None:
        y = layer(xm)
        mx.eval(y)
        return y, None
    keys = list(loaded)

    def fn(xi, *values):
        layer.update(dict(zip(keys, values, strict=True)))
        return layer(xi)

    (y,), vjps = mx.vjp(fn, [xm, *(loaded[k] for k in keys)], [_array(cotangent, dtype)])
    mx.eval(y, vjps)
    got = dict(zip(keys, vjps[1:], strict=True))
    return y, Grads(_numpy(vjps[0]), *(_numpy(got[a]) if a in got else None for a in ("weight", "bias")))


def _eps(params, default=1e-5) -> float:
    return params["eps"]


def _channels_last(api: str, x, params, clause: str) -> None:
    require(
        channel_axis_of(x, params) == x.ndim - 1, f"{api} takes channels on the last axis only ({clause})"
    )


def _last_axis(api: str, x, params) -> None:
    require(trailing(params["axes"], x.ndim) == 1, f"{api} normalizes the last axis only (LN.D3)")


class MlxNn(Adapter):
    """`mlx.nn` layers on the CPU stream."""

    name = "mlx.nn"
    cost = 3.3  # see Adapter.cost
    family = "mlx"
    requires = ("mlx",)
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "mlx.nn.BatchNorm",
            ALL_DTYPES,
            BN_CONVENTIONS,
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "mlx.nn.LayerNorm (mlx.core.fast.layer_norm)",
            ALL_DTYPES,
            LN_CONVENTIONS,
            FAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm", "mlx.nn.GroupNorm", ALL_DTYPES, GN_CONVENTIONS, FAST_FLOAT32, gradients=True
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "mlx.nn.InstanceNorm (mlx.core.fast.layer_norm)",
            ALL_DTYPES,
            IN_CONVENTIONS,
            FAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm",
            "mlx.nn.RMSNorm (mlx.core.fast.rms_norm)",
            ALL_DTYPES,
            RMS_CONVENTIONS,
            FAST_FLOAT32,
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

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        """The layer this adapter built (its constructor call), its arrays as loaded, its mode and the
        call; gradients by mx.vjp w.r.t. x and the loaded parameters, as the adapter takes them."""
        module, seen = sys.modules[__name__], []

        def calling(layer, x_, params_, dtype_, cotangent_, training=True):
            from mlx.utils import tree_flatten

            affine = {
                a: params_[k]
                for k, a in (("scale", "weight"), ("offset", "bias"))
                if params_.get(k) is not None
            }
            arrays = {k: _numpy(v).tolist() for k, v in tree_flatten(layer.parameters())}
            seen.append(
                (
                    {**arrays, **{k: np.asarray(v, dtype=np.float64).tolist() for k, v in affine.items()}},
                    training,
                    list(affine),
                )
            )
            return original(layer, x_, params_, dtype_, cotangent_, training)

        original, module._call = module._call, calling
        try:
            built = _repro.recorded_calls(
                [(_nn(), name) for name in LAYERS],
                lambda: self.run(norm, x, params, dtype=dtype, cotangent=cotangent),
            )
        finally:
            module._call = original
        if len(built) != 1 or len(seen) != 1:
            return None
        (arrays, training, differentiated), call = seen[0], built[0]
        lines = [
            *_repro.HEADER,
            "import mlx.core as mx",
            "import mlx.nn as nn",
            "from mlx.utils import tree_unflatten",
            *_repro.show_function("v.astype(mx.float64)"),
            "mx.set_default_device(mx.cpu)  # float64 runs on the CPU only",
            f"array = lambda values: mx.array(np.array(values), dtype=mx.float64).astype(mx.{dtype})",
            f"layer = nn.{call.name}({_repro.arguments(call.args, call.kwargs)})",
            f"layer.set_dtype(mx.{dtype})",
            "layer.update(tree_unflatten(["
            + ", ".join(f"({k!r}, array({v!r}))" for k, v in arrays.items())
            + "]))",
            f"layer.train({training!r})",
            f"x = array({_repro.values(x)})",
        ]
        if cotangent is None:
            lines += ["y = layer(x)", "show('y', y)"]
        else:
            lines += [
                f"keys = {differentiated!r}",
                "def forward(x, *values):",
                "    layer.update(dict(zip(keys, values)))",
                "    return layer(x)",
                "(y,), vjps = mx.vjp(forward, [x, *(getattr(layer, k) for k in keys)], "
                f"[array({_repro.values(cotangent)})])",
                "show('y', y)",
                "show('grad', dict(zip(['x', *keys], vjps)))",
            ]
        lines.append("show('after', {k: v for k, v in layer.items() if k.startswith('running')})")
        return _repro.script(lines)

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
        layer = _nn().BatchNorm(
            x.shape[-1],
            eps=_eps(params),
            momentum=0.1 if momentum is None else momentum,
            affine=affine,
            track_running_stats=state is not None,
        )
        layer.set_dtype(getattr(_mx(), dtype))
        layer.update(_state(state, dtype))  # frozen arrays: update() still assigns them
        y, grads = _call(layer, x, params, dtype, cotangent, training)
        new_state = None
        if state is not None:
            new_state = RunningStats(
                _numpy(layer.running_mean),
                _numpy(layer.running_var),
                state.num_batches_tracked + int(training),
            )
        return Outcome(_numpy(y), new_state, grads)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        _last_axis("mlx.nn.LayerNorm", x, params)
        affine = params.get("scale") is not None or params.get("offset") is not None
        layer = _nn().LayerNorm(
            x.shape[-1], eps=_eps(params), affine=affine, bias=params.get("offset") is not None
        )
        y, grads = _call(layer, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_group_norm(self, x, params, dtype, cotangent):
        _channels_last("mlx.nn.GroupNorm", x, params, "GN.P2")
        affine = params.get("scale") is not None or params.get("offset") is not None
        contiguous = params["assignment"] == "contiguous"
        layer = _nn().GroupNorm(
            params["groups"], x.shape[-1], eps=_eps(params), affine=affine, pytorch_compatible=contiguous
        )
        y, grads = _call(layer, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        _channels_last("mlx.nn.InstanceNorm", x, params, "IN.P1")
        require(
            params.get("state") is None,
            "mlx.nn.InstanceNorm keeps no running statistics: state must be None (IN.P4)",
        )
        affine = params.get("scale") is not None or params.get("offset") is not None
        layer = _nn().InstanceNorm(x.shape[-1], eps=_eps(params), affine=affine)
        y, grads = _call(layer, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        _last_axis("mlx.nn.RMSNorm", x, params)
        require(params.get("offset") is None, "mlx.nn.RMSNorm has no bias (RMS.P2)")
        require(params.get("eps") is not None, "mlx.nn.RMSNorm needs an explicit eps (RMS.P3)")
        layer = _nn().RMSNorm(
            x.shape[-1], eps=params["eps"]
        )  # the weight is always there: absent scale = ones
        y, grads = _call(layer, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)


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


LAYERS = ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm")

DEFAULT_CALLS = {
    "batch_norm": _default_layer(lambda nn, x, h: nn.BatchNorm(x.shape[-1]), stateful=True),
    "layer_norm": _default_layer(lambda nn, x, h: nn.LayerNorm(x.shape[-1])),
    "group_norm": _default_layer(lambda nn, x, h: nn.GroupNorm(h["groups"], x.shape[-1])),
    "instance_norm": _default_layer(lambda nn, x, h: nn.InstanceNorm(x.shape[-1])),
    "rms_norm": _default_layer(lambda nn, x, h: nn.RMSNorm(x.shape[-1])),
}

__all__ = ["MlxNn"]
