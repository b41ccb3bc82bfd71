"""PaddlePaddle: `paddle.nn.functional` and the `paddle.nn` layers (CPU, dynamic graph).

Conventions are declared once per norm and shared by both adapters; each fact was read from Paddle's
source (linked) and checked numerically against paddle 3.3.1 on CPU. Paddle's CPU kernels take
float32 and float64 only. Several op attributes are C++ `float` (32-bit): BatchNorm's `momentum` and
`epsilon`, LayerNorm's and InstanceNorm's `epsilon`, LRN's `beta`, and the p-norm's exponent 1/p. A
float64 run whose canonical value is not a float32 number cannot be expressed and is reported
unsupported, not rounded (BN.D17, LRN.D8, LP.D7).

Importing paddle into a process that already holds TensorFlow crashes the interpreter (paddle 3.3.1,
TF 2.21, Linux CPU); there the adapter runs in an isolated child process instead (`_isolated`).
"""

from __future__ import annotations

import sys

import numpy as np

from normconf.reference import RunningStats
from normconf.vocabulary import cpu as _cpu

from .. import _isolated
from ..base import Adapter, NormDeclaration, Outcome, channel_axis_of, f32, require, stepped, trailing
from ..plan import Get, Input, Step, Symbol
from .arguments import LAYOUT_FIRST, _bn_checks, _gn_checks, _in_checks, _ln_checks, _lrn_checks
from .declarations import (
    BN_CONVENTIONS,
    DTYPES,
    GN_CONVENTIONS,
    IN_CONVENTIONS,
    LN_CONVENTIONS,
    LP_CONVENTIONS,
    LRN_CONVENTIONS,
    RMS_CONVENTIONS,
    SAME,
    SRC_RMS_CPU,
)
from .runtime import _affine_inputs, _default_dtype, _function, _numpy, _paddle, _planned, _tensor


class PaddleBase(Adapter):
    family = "paddle"
    isa_capped = ("onednn",)
    requires = ("paddle",)

    def cannot_run(self, norm: str) -> str:
        """fused_rms_norm's CPU kernel executes AVX-512 instructions whatever the CPU: without avx512f
        it dies of SIGILL (measured: paddle 3.3.1 on an AVX2-only AMD EPYC)."""
        if norm == "rms_norm" and "avx512f" not in _cpu.features():
            return (
                "paddle.incubate.nn.functional.fused_rms_norm's CPU kernel uses AVX-512 instructions "
                f"unconditionally ({SRC_RMS_CPU}): this CPU has no avx512f (SIGILL)"
            )
        return ""

    def _here(self) -> bool:
        """Whether paddle can be imported into this process (not after TensorFlow)."""
        return "paddle" in sys.modules or "tensorflow" not in sys.modules or _isolated.in_child()

    def run(self, norm, x, params, *, dtype="float64", cotangent=None):
        if not self._here():
            return _isolated.isolated(self.name).run(norm, x, params, dtype=dtype, cotangent=cotangent)
        return super().run(norm, x, params, dtype=dtype, cotangent=cotangent)

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        if not self._here():
            return _isolated.isolated(self.name).call("run_framework_defaults", norm, x, hints, dtype=dtype)
        return super().run_framework_defaults(norm, x, hints, dtype=dtype)

    def environment(self):
        if not self._here():
            return _isolated.isolated(self.name).environment()
        paddle = _paddle()
        return {
            "adapter": self.name,
            "framework": "paddle",
            "version": paddle.__version__,
            "device": paddle.device.get_device(),
            "mode": "dynamic" if paddle.in_dynamic_mode() else "static",
            "default_dtype": paddle.get_default_dtype(),
            "cuda_compiled": paddle.device.is_compiled_with_cuda(),
        }

    @staticmethod
    def _affine(params, dtype, grad, flat=False):
        scale, offset = params.get("scale"), params.get("offset")
        shape = (lambda v: np.ravel(v)) if flat else (lambda v: v)
        return (
            (None if scale is None else _tensor(shape(scale), dtype, grad)),
            (None if offset is None else _tensor(shape(offset), dtype, grad)),
        )


class PaddleFunctional(PaddleBase):
    """`paddle.nn.functional.*` called directly; running statistics are tensors updated in place."""

    name = "paddle.functional"
    cost = 1.5  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            norm="batch_norm",
            api="paddle.nn.functional.batch_norm",
            dtypes=DTYPES,
            conventions=BN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
            stateful=True,
        ),
        "instance_norm": NormDeclaration(
            norm="instance_norm",
            api="paddle.nn.functional.instance_norm",
            dtypes=DTYPES,
            conventions=IN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="paddle.nn.functional.layer_norm",
            dtypes=DTYPES,
            conventions=LN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="paddle.nn.functional.group_norm",
            dtypes=DTYPES,
            conventions=GN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "local_response_norm": NormDeclaration(
            norm="local_response_norm",
            api="paddle.nn.functional.local_response_norm",
            dtypes=DTYPES,
            conventions=LRN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "lp_normalize": NormDeclaration(
            norm="lp_normalize",
            api="paddle.nn.functional.normalize",
            dtypes=DTYPES,
            conventions=LP_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        # paddle.nn.functional.rms_norm has no CPU kernel; the incubate fused op runs float32 forward only.
        "rms_norm": NormDeclaration(
            norm="rms_norm",
            api="paddle.incubate.nn.functional.fused_rms_norm",
            dtypes=("float32",),
            conventions=RMS_CONVENTIONS,
            accumulation={"float32": "float32"},
        ),
    }

    def no_argument_calls(self):
        return FUNCTIONAL_DEFAULT_CALLS

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        if not self._here():  # written in the isolated child, where paddle can be imported
            return _isolated.isolated(self.name).call(
                "framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent
            )
        return super().framework_repro(norm, x, params, dtype=dtype, cotangent=cotangent)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        layout, eps, momentum = _bn_checks(x, params, dtype)
        state, training = params.get("state"), params["training"]
        affine = _affine_inputs(params, dtype, cotangent is not None)
        channels = x.shape[channel_axis_of(x, params)]
        # Without tracked statistics the batch statistics normalize in both modes (BN.S4): a training
        # call on throwaway buffers, as a user without running stats writes it.
        mean = Input("running_mean", np.zeros(channels) if state is None else state.mean, dtype)
        var = Input("running_var", np.ones(channels) if state is None else state.var, dtype)
        kwargs = {
            "training": training or state is None,
            "momentum": momentum,
            "epsilon": eps,
            "data_format": layout,
        }
        args = (mean, var, affine.get("scale"), affine.get("offset"))

        def finish(executed, grads):
            new_state = state
            if state is not None and training:
                after = executed.after
                new_state = RunningStats(
                    after["running_mean"], after["running_var"], state.num_batches_tracked + 1
                )
            return Outcome(executed.y, new_state, grads)

        after = {"running_mean": Get("running_mean"), "running_var": Get("running_var")}
        return _function(
            "batch_norm", args, kwargs, x, params, dtype, cotangent, affine, finish=finish, after=after
        )

    def _run_instance_norm(self, x, params, dtype, cotangent):
        eps = _in_checks(x, params, dtype)
        affine = _affine_inputs(params, dtype, cotangent is not None)
        kwargs = {
            "weight": affine.get("scale"),
            "bias": affine.get("offset"),
            "eps": eps,
            "data_format": LAYOUT_FIRST[x.ndim],
        }
        return _function("instance_norm", (), kwargs, x, params, dtype, cotangent, affine)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        shape, eps = _ln_checks(x, params, dtype)
        affine = _affine_inputs(params, dtype, cotangent is not None, flat=True)
        args = (shape, affine.get("scale"), affine.get("offset"))
        shapes = {"scale": shape, "offset": shape}
        return _function(
            "layer_norm", args, {"epsilon": eps}, x, params, dtype, cotangent, affine, shapes=shapes
        )

    def _run_group_norm(self, x, params, dtype, cotangent):
        layout = _gn_checks(x, params)
        affine = _affine_inputs(params, dtype, cotangent is not None)
        kwargs = {
            "epsilon": params["eps"],
            "weight": affine.get("scale"),
            "bias": affine.get("offset"),
            "data_format": layout,
        }
        return _function("group_norm", (params["groups"],), kwargs, x, params, dtype, cotangent, affine)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        layout = _lrn_checks(x, params, dtype)
        kwargs = {"alpha": params["alpha"], "beta": params["beta"], "k": params["k"], "data_format": layout}
        return _function("local_response_norm", (params["size"],), kwargs, x, params, dtype, cotangent)

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(
            params["eps_placement"] == "max_norm",
            "F.normalize takes maximum(norm, eps): eps_placement='max_norm' only (LP.D1)",
        )
        axes = tuple(params["axes"])
        require(len(axes) == 1, "F.normalize normalizes over one axis")
        p = float(params["p"])
        require(
            dtype != "float64" or f32(1.0 / p) == 1.0 / p,
            f"Paddle's p-norm raises to 1/p as a 32-bit float: 1/{p!r} is not a float32 number (LP.D7)",
        )
        kwargs = {"p": p, "axis": axes[0], "epsilon": params["eps"]}
        return _function("normalize", (), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        missing = self.cannot_run("rms_norm")
        require(not missing, missing)
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "begin_norm_axis covers trailing axes only")
        require(count < x.ndim or x.ndim > 1, "fused_rms_norm needs a row axis before the normalized ones")
        shape = x.shape[x.ndim - count :]
        scale, offset = params.get("scale"), params.get("offset")
        args = (
            Input("weight", np.ravel(np.ones(shape) if scale is None else scale), dtype),
            None if offset is None else Input("bias", np.ravel(offset), dtype),
            params["eps"],
        )
        kwargs = {"begin_norm_axis": x.ndim - count}
        fused = "paddle.incubate.nn.functional.fused_rms_norm"
        return _function(fused, args, kwargs, x, params, dtype, cotangent, pick=0)


BATCH_NORM_BY_RANK = {2: "BatchNorm1D", 3: "BatchNorm1D", 4: "BatchNorm2D", 5: "BatchNorm3D"}
INSTANCE_NORM_BY_RANK = {3: "InstanceNorm1D", 4: "InstanceNorm2D", 5: "InstanceNorm3D"}


class PaddleLayers(PaddleBase):
    """`paddle.nn` layers built under the run's default dtype, as a user would; `train()` / `eval()`."""

    name = "paddle.nn"
    declarations = {
        "batch_norm": NormDeclaration(
            norm="batch_norm",
            api="paddle.nn.BatchNorm{1,2,3}D",
            dtypes=DTYPES,
            conventions=BN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
            stateful=True,
        ),
        "instance_norm": NormDeclaration(
            norm="instance_norm",
            api="paddle.nn.InstanceNorm{1,2,3}D",
            dtypes=DTYPES,
            conventions=IN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "layer_norm": NormDeclaration(
            norm="layer_norm",
            api="paddle.nn.LayerNorm",
            dtypes=DTYPES,
            conventions=LN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            norm="group_norm",
            api="paddle.nn.GroupNorm",
            dtypes=DTYPES,
            conventions=GN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
        "local_response_norm": NormDeclaration(
            norm="local_response_norm",
            api="paddle.nn.LocalResponseNorm",
            dtypes=DTYPES,
            conventions=LRN_CONVENTIONS,
            accumulation=SAME,
            gradients=True,
        ),
    }

    def no_argument_calls(self):
        return LAYER_DEFAULT_CALLS

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        if not self._here():  # written in the isolated child, where paddle can be imported
            return _isolated.isolated(self.name).call(
                "framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent
            )
        return super().framework_repro(norm, x, params, dtype=dtype, cotangent=cotangent)

    def _layer(
        self,
        cls: str,
        args,
        kwargs,
        x,
        params,
        dtype,
        cotangent,
        *,
        weight="weight",
        loads=None,
        training=True,
        shape=None,
        finish=None,
    ):
        """paddle.nn.<cls>(*args, **kwargs) built under the run's default dtype (layers create their
        parameters in it, as a user building a float64 model sets it), the canonical scale and offset
        (and `loads`) set into its state, train() or eval(), and called on x."""
        affine = _affine_inputs(params, dtype, grad=False, flat=True)
        names = {"scale": weight, "offset": "bias"}
        state = {names[k]: v for k, v in affine.items()} | (loads or {})
        steps = [
            Step("previous", Symbol("paddle.get_default_dtype")),
            Step(None, Symbol("paddle.set_default_dtype"), (dtype,)),
            Step("layer", Symbol(f"paddle.nn.{cls}"), args, kwargs),
            Step(None, Symbol("paddle.set_default_dtype"), (Get("previous"),)),
        ]
        if state:
            steps.append(Step(None, Get("layer", "set_state_dict"), (state,)))
        steps += [
            Step(None, Get("layer", "train" if training else "eval")),
            Step("y", Get("layer"), (Input("x", x, dtype, cotangent is not None),)),
        ]
        leaves = {"x": Get("x"), **{k: Get("layer", names[k]) for k in affine}}
        after = {k: Get("layer", k) for k in loads or {}}
        shapes = {"scale": shape, "offset": shape} if shape else None
        return _planned(steps, leaves, cotangent, dtype, finish, after, shapes)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        layout, eps, momentum = _bn_checks(x, params, dtype)
        state, training = params.get("state"), params["training"]
        channels = x.shape[channel_axis_of(x, params)]
        # Without tracked statistics, use_global_stats=False normalizes with the batch in eval too (BN.S4).
        kwargs = {
            "momentum": momentum,
            "epsilon": eps,
            "data_format": layout,
            "use_global_stats": False if state is None else None,
        }
        loads = {}
        if state is not None:
            loads = {
                "_mean": Input("running_mean", state.mean, dtype),
                "_variance": Input("running_var", state.var, dtype),
            }

        finish = stepped(state, training, lambda e: (e.after["_mean"], e.after["_variance"]))

        return self._layer(
            BATCH_NORM_BY_RANK[x.ndim],
            (channels,),
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            loads=loads,
            training=training,
            finish=finish,
        )

    def _run_instance_norm(self, x, params, dtype, cotangent):
        eps = _in_checks(x, params, dtype)
        # scale 1 and bias 0 by default (IN.D1)
        cls = INSTANCE_NORM_BY_RANK[x.ndim]
        return self._layer(cls, (x.shape[1],), {"epsilon": eps}, x, params, dtype, cotangent, weight="scale")

    def _run_layer_norm(self, x, params, dtype, cotangent):
        shape, eps = _ln_checks(x, params, dtype)
        kwargs = {
            "epsilon": eps,
            "weight_attr": None if params.get("scale") is not None else False,
            "bias_attr": None if params.get("offset") is not None else False,
        }
        return self._layer("LayerNorm", (shape,), kwargs, x, params, dtype, cotangent, shape=shape)

    def _run_group_norm(self, x, params, dtype, cotangent):
        layout = _gn_checks(x, params)
        channels = x.shape[channel_axis_of(x, params)]
        kwargs = {
            "epsilon": params["eps"],
            "weight_attr": None if params.get("scale") is not None else False,
            "bias_attr": None if params.get("offset") is not None else False,
            "data_format": layout,
        }
        return self._layer("GroupNorm", (params["groups"], channels), kwargs, x, params, dtype, cotangent)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        layout = _lrn_checks(x, params, dtype)
        kwargs = {"alpha": params["alpha"], "beta": params["beta"], "k": params["k"], "data_format": layout}
        return self._layer("LocalResponseNorm", (params["size"],), kwargs, x, params, dtype, cotangent)


def _nchw(api: str, x) -> None:
    require(x.ndim == 4, f"{api}'s default data_format 'NCHW' takes 4-D input")


def _function_default(call, implied=lambda x: {}):
    """A no-argument call: `call(F, t, x, hints)` with only the arguments the function requires."""

    def run(x, hints, dtype):
        with _default_dtype(dtype):
            y = call(_paddle().nn.functional, _tensor(x, dtype), x, hints)
        return Outcome(_numpy(y)), implied(x)

    return run


def _layer_default(build, stateful=False):
    """A no-argument call: the layer `build(nn, x, hints)` under the run's default dtype, in its
    default (training) mode; BatchNorm's running statistics after the step come back as the state."""

    def run(x, hints, dtype):
        with _default_dtype(dtype):
            layer = build(_paddle().nn, x, hints)
        y = layer(_tensor(x, dtype))
        if not stateful:
            return Outcome(_numpy(y)), {}
        state = RunningStats(_numpy(layer._mean), _numpy(layer._variance), 1)
        return Outcome(_numpy(y), state), {"state": RunningStats.initial(x.shape[1]), "training": True}

    return run


def _f_batch_norm(F, t, x, hints):
    """F.batch_norm with the running tensors it requires (the canonical initial ones); training=False."""
    return F.batch_norm(
        t,
        _tensor(np.zeros(x.shape[1]), str(t.dtype).removeprefix("paddle.")),
        _tensor(np.ones(x.shape[1]), str(t.dtype).removeprefix("paddle.")),
    )


def _f_lrn(F, t, x, hints):
    _nchw("paddle.nn.functional.local_response_norm", x)
    return F.local_response_norm(t, hints["size"])


def _layer_lrn(nn, x, hints):
    _nchw("paddle.nn.LocalResponseNorm", x)
    return nn.LocalResponseNorm(hints["size"])


FUNCTIONAL_DEFAULT_CALLS = {
    # F.batch_norm defaults to training=False: eval with the running statistics passed
    "batch_norm": _function_default(
        _f_batch_norm, lambda x: {"state": RunningStats.initial(x.shape[1]), "training": False}
    ),
    "instance_norm": _function_default(lambda F, t, x, h: F.instance_norm(t)),
    "layer_norm": _function_default(lambda F, t, x, h: F.layer_norm(t, x.shape[-1:])),
    "group_norm": _function_default(lambda F, t, x, h: F.group_norm(t, h["groups"])),
    "local_response_norm": _function_default(_f_lrn),
    "lp_normalize": _function_default(lambda F, t, x, h: F.normalize(t)),
}
LAYER_DEFAULT_CALLS = {
    "batch_norm": _layer_default(
        lambda nn, x, h: getattr(nn, BATCH_NORM_BY_RANK[x.ndim])(x.shape[1]), stateful=True
    ),
    "instance_norm": _layer_default(lambda nn, x, h: getattr(nn, INSTANCE_NORM_BY_RANK[x.ndim])(x.shape[1])),
    "layer_norm": _layer_default(lambda nn, x, h: nn.LayerNorm(x.shape[-1])),
    "group_norm": _layer_default(lambda nn, x, h: nn.GroupNorm(h["groups"], x.shape[1])),
    "local_response_norm": _layer_default(_layer_lrn),
}


__all__ = ["PaddleFunctional", "PaddleLayers"]
