"""PyTorch: `torch.nn.functional`, the `torch.nn` modules, and torchvision's Normalize and FrozenBatchNorm2d.

Conventions are declared once per norm and shared by both adapters; the facts and their sources are
those of the spec's P and D clauses.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices, _repro
from ..base import (
    Adapter,
    Convention,
    NormDeclaration,
    Outcome,
    Unsupported,
    channel_axis_of,
    require,
    stepped,
    trailing,
)
from ..plan import Executed, Get, Input, Plan, Planned, Runtime, Step, Symbol

SRC_BN = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/batchnorm.py"
SRC_BN_CPP = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/Normalization.cpp"
SRC_NORM = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/normalization.py"
SRC_IN = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/instancenorm.py"
SRC_F = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/functional.py"
SRC_GN = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/cpu/group_norm_kernel.cpp"
SRC_RMS = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/layer_norm.cpp"
SRC_TV = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/transforms/_functional_tensor.py"
SRC_TV2 = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/transforms/v2/functional/_misc.py"
SRC_FROZEN = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/ops/misc.py#L14-L63"
SRC_SYNC = (
    "https://github.com/pytorch/pytorch/blob/cf30153c4c131c8164ee7798e5022d810682e2cb/torch/nn/modules/"
    "_functions.py#L30-L124"
)
SRC_SYNC_DEVICE = (
    "https://github.com/pytorch/pytorch/blob/cf30153c4c131c8164ee7798e5022d810682e2cb/torch/nn/modules/"
    "batchnorm.py#L836-L888"
)
# the accelerators SyncBatchNorm synchronizes on (its device check); CPU tensors raise in a process group
SYNC_DEVICE_TYPES = ("cuda", "xpu", "hpu")

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
# CPU kernels accumulate half-precision statistics in float32 (spec LN.N2, RMS.N2, GN.N1).
HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
# BatchNorm (and InstanceNorm, which runs through it) sums in float32 but stores mean and invstd as
# `param_t`, the parameters' dtype: in a pure half module they are rounded to half before use
# (batch_norm_kernel.cpp, `batch_norm_cpu_collect_stats_contiguous_impl`), so their precision is half.
STATS_IN_PARAM_DTYPE = {d: d for d in ALL_DTYPES}

BN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_BN_CPP),
    Convention("eps", "eps", 1e-5, SRC_BN),
    Convention(
        "momentum", "momentum", 0.1, SRC_BN, note="weight on the new batch, as canonical; None = cumulative"
    ),
    Convention("running_var", "— (fixed)", "unbiased", SRC_BN_CPP, clause="BN.D1"),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN_CPP),
)
IN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_IN),
    Convention("eps", "eps", 1e-5, SRC_IN),
    Convention("momentum", "momentum", 0.1, SRC_IN),
    Convention(
        "running_var", "— (fixed)", "unbiased", SRC_BN_CPP, note="per instance, then averaged over the batch"
    ),
    Convention("affine", "affine", False, SRC_IN, clause="IN.D1"),
    Convention("track_running_stats", "track_running_stats", False, SRC_IN, clause="IN.D1"),
)
LN_CONVENTIONS = (
    Convention("axes", "normalized_shape", (-1,), SRC_NORM, clause="LN.D3", note="trailing axes only"),
    Convention("eps", "eps", 1e-5, SRC_NORM),
)
GN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_GN),
    Convention("eps", "eps", 1e-5, SRC_NORM),
    Convention("assignment", "— (fixed)", "contiguous", SRC_GN, clause="GN.D1"),
)
RMS_CONVENTIONS = (
    Convention("axes", "normalized_shape", (-1,), SRC_NORM),
    Convention(
        "eps",
        "eps",
        None,
        SRC_RMS,
        clause="RMS.D1",
        note="None = float32 epsilon for float32/float16/bfloat16 inputs, float64 epsilon for float64",
    ),
)
LRN_CONVENTIONS = (
    Convention("alpha", "alpha", 1e-4, SRC_F),
    Convention("beta", "beta", 0.75, SRC_F),
    Convention("k", "k", 1.0, SRC_F),
    Convention("channel_axis", "— (dim 1)", 1, SRC_F),
    Convention("alpha_over_size", "— (avg_pool)", True, SRC_F),
    Convention("extra", "— (padding size//2, (size-1)//2)", "before", SRC_F, clause="LRN.D2"),
)
LP_CONVENTIONS = (
    Convention("p", "p", 2.0, SRC_F),
    Convention("axes", "dim", (1,), SRC_F),
    Convention("eps", "eps", 1e-12, SRC_F),
    Convention("eps_placement", "— (clamp_min on the norm)", "max_norm", SRC_F, clause="LP.D1"),
)
CN_CONVENTIONS = (
    Convention("channel_axis", "— (dim -3)", -3, SRC_TV),
    Convention("std_floor", "— (zero std raises)", 0.0, SRC_TV, clause="CN.D1"),
)


def _torch():
    import torch

    return torch


def _torchvision():
    """torchvision (with transforms.v2), imported without triton where TensorFlow is loaded:
    torchvision.ops imports torch._dynamo, which imports triton, and triton 3.8 imported after
    TensorFlow 2.21 segfaults (measured; the other order works). Nothing normconf calls needs triton
    (no torch.compile): torch then finds no triton package."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None
    import torchvision
    import torchvision.transforms.v2

    return torchvision


def _dtype(name: str):
    return getattr(_torch(), name)


_DEVICE: list = []


def _device() -> str:
    """Where tensors and modules go: CUDA where torch sees a GPU (NORMCONF_DEVICE, _devices.py)."""
    if not _DEVICE:
        _DEVICE.append(_devices.torch_device(_torch()))
    return _DEVICE[0]


def _to(t, dtype: str):
    """A tensor or module moved to the adapter's device and `dtype`, as a user's `.to(device, dtype)`."""
    return t.to(device=_device(), dtype=_dtype(dtype))


def _tensor(value, dtype: str, grad: bool = False):
    torch = _torch()
    t = _to(torch.tensor(np.asarray(value, dtype=np.float64)), dtype)
    return t.requires_grad_(grad)


def _numpy(t) -> np.ndarray:
    return t.detach().to(_torch().float64).cpu().numpy()


def _tensor_source(value: Input) -> str:
    device = _device()
    where = "" if device == "cpu" else f"{device!r}, "
    return (
        f"torch.tensor({_repro.values(value.value)}, dtype=torch.float64).to({where}torch.{value.dtype})"
        + (".requires_grad_()" if value.grad else "")
    )


TORCH = Runtime(
    imports=("import torch", "import torch.nn.functional as F"),
    tensor=lambda value: _tensor(value.value, value.dtype, value.grad),
    tensor_source=_tensor_source,
    numpy=lambda t: _numpy(t),
    numpy_source="v.detach().to(torch.float64).cpu()",
    aliases=(("torch.nn.functional", "F"),),
)
# torchvision's scripts import it, and transforms.v2, which `import torchvision` leaves out
TORCHVISION = dataclasses.replace(
    TORCH, imports=(*TORCH.imports, "import torchvision", "import torchvision.transforms.v2")
)


def _planned(
    steps: list[Step],
    leaves: dict,
    cotangent,
    dtype: str,
    finish,
    after=None,
    y: Get | None = None,
    runtime=TORCH,
) -> Planned:
    """The steps that bind y, then (given a cotangent) y.backward(g) and the gradients of the named
    leaves (canonical name -> where its .grad is read); `finish(executed, grads)` makes the Outcome. The
    output is read from `y` after the call (an in-place call's input)."""
    grads = {}
    if cotangent is not None:
        steps = [*steps, Step(None, Get("y", "backward"), (Input("g", cotangent, dtype),))]
        grads = {key: Get(where.name, f"{where.attr}.grad".lstrip(".")) for key, where in leaves.items()}
    plan = Plan(runtime, tuple(steps), grads, after or {}, y or Get("y"))

    def outcome(executed: Executed) -> Outcome:
        found = None
        if cotangent is not None:
            found = Grads(executed.grads["x"], executed.grads.get("scale"), executed.grads.get("offset"))
        return finish(executed, found)

    return Planned(plan, outcome)


def _function(fn: str, args: tuple, kwargs: dict, leaves: dict, cotangent, dtype: str) -> Planned:
    """y = torch.nn.functional.<fn>(...): the output and the gradients of the leaves."""
    step = Step("y", Symbol(f"torch.nn.functional.{fn}"), args, kwargs)
    return _planned([step], leaves, cotangent, dtype, lambda e, g: Outcome(e.y, grads=g))


def _affine_inputs(params, dtype: str, grad: bool) -> tuple[Input | None, Input | None]:
    return tuple(
        None if params.get(key) is None else Input(name, params[key], dtype, grad)
        for key, name in (("scale", "weight"), ("offset", "bias"))
    )


class TorchBase(Adapter):
    family = "torch"
    isa_capped = ("aten",)
    requires = ("torch",)

    def environment(self):
        torch = _torch()
        return {
            "adapter": self.name,
            "framework": "torch",
            "version": torch.__version__,
            **_devices.torch_environment(torch),
            "threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        }

    def _run_lp_normalize(self, x, params, dtype, cotangent):
        require(
            params["eps_placement"] == "max_norm",
            "F.normalize clamps the norm: eps_placement='max_norm' only (LP.D1)",
        )
        x_in = Input("x", x, dtype, cotangent is not None)
        kwargs = {"p": float(params["p"]), "dim": tuple(params["axes"]), "eps": params["eps"]}
        return _function("normalize", (x_in,), kwargs, {"x": Get("x")}, cotangent, dtype)


def _lrn_checks(x, params, dtype):
    require(channel_axis_of(x, params) == 1, "PyTorch windows over dim 1 only")
    require(x.ndim >= 3, "F.local_response_norm needs rank >= 3 (LRN.C1)")
    require(params["alpha_over_size"], "PyTorch always divides alpha by size (LRN.D1)")
    require(
        params["size"] % 2 == 1 or params["extra"] == "before",
        "PyTorch puts an even window's extra channel before c (LRN.D2)",
    )
    require(
        x.ndim == 3 or dtype not in ("float16", "bfloat16"),
        "avg_pool3d has no CPU kernel for half precision: rank > 3 LRN fails in float16/bfloat16",
    )


class TorchFunctional(TorchBase):
    """`torch.nn.functional.*` called directly, running statistics passed as tensors."""

    name = "torch.functional"
    cost = 7.6  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "torch.nn.functional.batch_norm",
            ALL_DTYPES,
            BN_CONVENTIONS,
            STATS_IN_PARAM_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "torch.nn.functional.instance_norm",
            ALL_DTYPES,
            IN_CONVENTIONS,
            STATS_IN_PARAM_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "torch.nn.functional.layer_norm",
            ALL_DTYPES,
            LN_CONVENTIONS,
            HALF_IN_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "torch.nn.functional.group_norm",
            ALL_DTYPES,
            GN_CONVENTIONS,
            HALF_IN_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm",
            "torch.nn.functional.rms_norm",
            ALL_DTYPES,
            RMS_CONVENTIONS,
            HALF_IN_FLOAT32,
            gradients=True,
        ),
        "local_response_norm": NormDeclaration(
            "local_response_norm",
            "torch.nn.functional.local_response_norm",
            ALL_DTYPES,
            LRN_CONVENTIONS,
            {d: d for d in ALL_DTYPES},
            gradients=True,
        ),
        "lp_normalize": NormDeclaration(
            "lp_normalize",
            "torch.nn.functional.normalize",
            ALL_DTYPES,
            LP_CONVENTIONS,
            {d: d for d in ALL_DTYPES},
            gradients=True,
        ),
    }

    def no_argument_calls(self):
        return F_DEFAULT_CALLS

    def _running(self, norm, x, params, dtype, cotangent):
        """F.batch_norm / F.instance_norm: the running tensors are updated in place, as users see."""
        require(channel_axis_of(x, params) == 1, f"{norm}: PyTorch's channel axis is dim 1")
        require(
            params["running_var"] == "unbiased",
            "PyTorch's running variance is unbiased (BN.D1)",
        )
        momentum = params["momentum"]
        require(
            momentum is not None,
            "the cumulative average (momentum=None) lives in the nn modules, not F (BN.S5)",
        )
        state, training = params.get("state"), params["training"]
        grad = cotangent is not None
        scale, offset = _affine_inputs(params, dtype, grad)
        mean, var = (
            (None, None)
            if state is None
            else (
                Input("running_mean", state.mean, dtype),
                Input("running_var", state.var, dtype),
            )
        )
        batch = training or state is None
        kwargs = {"momentum": momentum, "eps": params["eps"]}
        kwargs = (
            {"training": batch, **kwargs} if norm == "batch_norm" else {"use_input_stats": batch, **kwargs}
        )
        step = Step(
            "y",
            Symbol(f"torch.nn.functional.{norm}"),
            (Input("x", x, dtype, grad), mean, var, scale, offset),
            kwargs,
        )
        leaves = {"x": Get("x"), **{k: Get(v.name) for k, v in (("scale", scale), ("offset", offset)) if v}}
        after = (
            {} if state is None else {"running_mean": Get("running_mean"), "running_var": Get("running_var")}
        )

        def finish(executed, grads):
            new_state = state
            if state is not None and training:
                new_state = RunningStats(
                    executed.after["running_mean"],
                    executed.after["running_var"],
                    state.num_batches_tracked + 1,
                )
            return Outcome(executed.y, new_state, grads)

        return _planned([step], leaves, cotangent, dtype, finish, after)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._running("batch_norm", x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        return self._running("instance_norm", x, params, dtype, cotangent)

    def _affine_call(self, fn, x, args, kwargs, params, dtype, cotangent, keys=("scale", "offset")):
        """F.<fn>(x, *args, weight, bias, **kwargs) with the canonical affine inputs (absent: None)."""
        grad = cotangent is not None
        affine = dict(zip(("scale", "offset"), _affine_inputs(params, dtype, grad), strict=True))
        leaves = {"x": Get("x"), **{k: Get(v.name) for k, v in affine.items() if v and k in keys}}
        inputs = tuple(affine[k] for k in keys)
        return _function(fn, (Input("x", x, dtype, grad), *args, *inputs), kwargs, leaves, cotangent, dtype)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only (LN.D3)")
        shape = x.shape[x.ndim - count :]
        return self._affine_call("layer_norm", x, (shape,), {"eps": params["eps"]}, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == 1, "PyTorch's channel axis is dim 1")
        require(
            params["assignment"] == "contiguous",
            "PyTorch groups contiguous channels (GN.D1)",
        )
        args, kwargs = (params["groups"],), {"eps": params["eps"]}
        return self._affine_call("group_norm", x, args, kwargs, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only")
        require(params.get("offset") is None, "torch RMSNorm has no bias")
        shape = x.shape[x.ndim - count :]
        kwargs = {"eps": params["eps"]}
        return self._affine_call("rms_norm", x, (shape,), kwargs, params, dtype, cotangent, keys=("scale",))

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        _lrn_checks(x, params, dtype)
        kwargs = {"alpha": params["alpha"], "beta": params["beta"], "k": params["k"]}
        x_in = Input("x", x, dtype, cotangent is not None)
        return _function(
            "local_response_norm", (x_in, params["size"]), kwargs, {"x": Get("x")}, cotangent, dtype
        )


BATCH_NORM_BY_RANK = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}
INSTANCE_NORM_BY_RANK = {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"}


class TorchModules(TorchBase):
    """`torch.nn` modules, built and converted with `.to(dtype)` as a user would; running stats are
    buffers."""

    name = "torch.nn"
    cost = 6.6  # see Adapter.cost
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "torch.nn.BatchNorm{1,2,3}d",
            ALL_DTYPES,
            BN_CONVENTIONS,
            STATS_IN_PARAM_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "torch.nn.InstanceNorm{1,2,3}d",
            ALL_DTYPES,
            IN_CONVENTIONS,
            STATS_IN_PARAM_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm", "torch.nn.LayerNorm", ALL_DTYPES, LN_CONVENTIONS, HALF_IN_FLOAT32, gradients=True
        ),
        "group_norm": NormDeclaration(
            "group_norm", "torch.nn.GroupNorm", ALL_DTYPES, GN_CONVENTIONS, HALF_IN_FLOAT32, gradients=True
        ),
        "rms_norm": NormDeclaration(
            "rms_norm", "torch.nn.RMSNorm", ALL_DTYPES, RMS_CONVENTIONS, HALF_IN_FLOAT32, gradients=True
        ),
        "local_response_norm": NormDeclaration(
            "local_response_norm",
            "torch.nn.LocalResponseNorm",
            ALL_DTYPES,
            LRN_CONVENTIONS,
            {d: d for d in ALL_DTYPES},
            gradients=True,
        ),
        "sync_batch_norm": NormDeclaration(
            "sync_batch_norm",
            "torch.nn.SyncBatchNorm",
            ALL_DTYPES,
            BN_CONVENTIONS
            + (
                Convention(
                    "weighting",
                    "— (fixed)",
                    "count",
                    SRC_SYNC,
                    clause="SBN.D2",
                    note="all-gathered mean, invstd and count per process, combined by count",
                ),
                Convention(
                    "replicas",
                    "— (processes, one accelerator each)",
                    2,
                    SRC_SYNC_DEVICE,
                    clause="SBN.D3",
                    note="CUDA/XPU/HPU tensors only: a CPU tensor in a process group raises",
                ),
            ),
            STATS_IN_PARAM_DTYPE,
            gradients=True,
            stateful=True,
        ),
    }

    def no_argument_calls(self):
        return NN_DEFAULT_CALLS

    def cannot_run(self, norm: str) -> str:
        """SBN.D3: SyncBatchNorm synchronizes only processes that each hold an accelerator."""
        if norm != "sync_batch_norm":
            return ""
        torch = _torch()
        found = {
            kind: getattr(torch, kind).device_count()
            for kind in SYNC_DEVICE_TYPES
            if hasattr(getattr(torch, kind, None), "device_count")
        }
        if max(found.values(), default=0) < 2:
            return (
                "torch.nn.SyncBatchNorm synchronizes processes with one accelerator each "
                "(SBN.D3); this machine "
                f"has {', '.join(f'{n} {k}' for k, n in found.items()) or 'none'}"
            )
        return (
            "torch.nn.SyncBatchNorm over several accelerator processes "
            "(one per device, a NCCL process group) "
            "is not run by this adapter yet (SBN.D3)"
        )

    def _run_sync_batch_norm(self, x, params, dtype, cotangent):
        raise Unsupported(self.cannot_run("sync_batch_norm"))

    def _module(
        self,
        cls: str,
        args: tuple,
        kwargs: dict,
        x,
        params,
        dtype,
        cotangent,
        *,
        loads=None,
        training=True,
        finish=None,
    ):
        """torch.nn.<cls>(*args, **kwargs) moved to the device and dtype as a user's `.to(...)`, its
        weight and bias (the canonical scale and offset, where given) and `loads` (buffers) loaded, put in
        train or eval mode and called on x; the gradients of x, weight and bias."""
        grad = cotangent is not None
        scale, offset = _affine_inputs(params, dtype, grad=False)
        state = {v.name: v for v in (scale, offset) if v is not None} | (loads or {})
        steps = [
            Step("module", Symbol(f"torch.nn.{cls}"), args, kwargs),
            Step("module", Get("module", "to"), (), {"device": _device(), "dtype": Symbol(f"torch.{dtype}")}),
        ]
        if state:
            steps.append(Step(None, Get("module", "load_state_dict"), (state,), {"strict": False}))
        steps += [
            Step(None, Get("module", "train"), (training,)),
            Step("y", Get("module"), (Input("x", x, dtype, grad),)),
        ]
        leaves = {"x": Get("x")}
        leaves |= {
            k: Get("module", v.name) for k, v in (("scale", scale), ("offset", offset)) if v is not None
        }
        after = {k: Get("module", k) for k in (loads or {}) if k != "num_batches_tracked"}
        return _planned(
            steps, leaves, cotangent, dtype, finish or (lambda e, g: Outcome(e.y, grads=g)), after
        )

    def _running(self, norm, x, params, dtype, cotangent):
        table = BATCH_NORM_BY_RANK if norm == "batch_norm" else INSTANCE_NORM_BY_RANK
        require(x.ndim in table, f"{norm}: no torch.nn module for rank {x.ndim}")
        require(channel_axis_of(x, params) == 1, f"{norm}: PyTorch's channel axis is dim 1")
        require(
            params["running_var"] == "unbiased",
            "PyTorch's running variance is unbiased (BN.D1)",
        )
        state, training = params.get("state"), params["training"]
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {
            "eps": params["eps"],
            "momentum": params["momentum"],
            "affine": affine,
            "track_running_stats": state is not None,
        }
        loads = {}
        if state is not None:
            loads = {
                "running_mean": Input("running_mean", state.mean, dtype),
                "running_var": Input("running_var", state.var, dtype),
            }
            if norm == "batch_norm":  # InstanceNorm has no counter buffer
                loads["num_batches_tracked"] = Input(
                    "num_batches_tracked", np.asarray(state.num_batches_tracked), "int64"
                )

        # InstanceNorm never counts batches (IN.D2); the canonical count still advances per step.
        finish = stepped(state, training, lambda e: (e.after["running_mean"], e.after["running_var"]))

        return self._module(
            table[x.ndim],
            (x.shape[1],),
            kwargs,
            x,
            params,
            dtype,
            cotangent,
            loads=loads,
            training=training,
            finish=finish,
        )

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._running("batch_norm", x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        return self._running("instance_norm", x, params, dtype, cotangent)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only (LN.D3)")
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {
            "eps": params["eps"],
            "elementwise_affine": affine,
            "bias": params.get("offset") is not None,
        }
        return self._module("LayerNorm", (x.shape[x.ndim - count :],), kwargs, x, params, dtype, cotangent)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == 1, "PyTorch's channel axis is dim 1")
        require(
            params["assignment"] == "contiguous",
            "PyTorch groups contiguous channels (GN.D1)",
        )
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {"eps": params["eps"], "affine": affine}
        return self._module("GroupNorm", (params["groups"], x.shape[1]), kwargs, x, params, dtype, cotangent)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only")
        require(params.get("offset") is None, "torch.nn.RMSNorm has no bias")
        kwargs = {"eps": params["eps"], "elementwise_affine": params.get("scale") is not None}
        return self._module("RMSNorm", (x.shape[x.ndim - count :],), kwargs, x, params, dtype, cotangent)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        _lrn_checks(x, params, dtype)
        kwargs = {"alpha": params["alpha"], "beta": params["beta"], "k": params["k"]}
        return self._module("LocalResponseNorm", (params["size"],), kwargs, x, params, dtype, cotangent)


def _module_call(build, implied):
    """A no-argument call: the module `build(x, hints)` makes, converted to dtype, run in its default
    (training) mode; its running buffers, if any, come back as the state."""

    def call(x, hints, dtype):
        module = build(x, hints).to(device=_device(), dtype=_dtype(dtype))
        y = module(_tensor(x, dtype))
        state = None
        if getattr(module, "running_mean", None) is not None:
            state = RunningStats(
                _numpy(module.running_mean), _numpy(module.running_var), int(module.num_batches_tracked)
            )
        return Outcome(_numpy(y), state), implied(x)

    return call


def _function_call(fn, implied=lambda x: {}):
    return lambda x, hints, dtype: (Outcome(_numpy(fn(_tensor(x, dtype), x, hints))), implied(x))


def _initial(x) -> RunningStats:
    return RunningStats.initial(x.shape[1])


NN_DEFAULT_CALLS = {
    "batch_norm": _module_call(
        lambda x, h: getattr(_torch().nn, BATCH_NORM_BY_RANK[x.ndim])(x.shape[1]),
        lambda x: {"state": _initial(x), "training": True},
    ),
    "instance_norm": _module_call(
        lambda x, h: getattr(_torch().nn, INSTANCE_NORM_BY_RANK[x.ndim])(x.shape[1]), lambda x: {}
    ),
    "layer_norm": _module_call(lambda x, h: _torch().nn.LayerNorm(x.shape[-1]), lambda x: {}),
    "group_norm": _module_call(lambda x, h: _torch().nn.GroupNorm(h["groups"], x.shape[1]), lambda x: {}),
    "rms_norm": _module_call(lambda x, h: _torch().nn.RMSNorm(x.shape[-1]), lambda x: {}),
    "local_response_norm": _module_call(lambda x, h: _torch().nn.LocalResponseNorm(h["size"]), lambda x: {}),
}


def _f_batch_norm(t, x, hints):
    """F.batch_norm with the running tensors it requires (the canonical initial ones) and nothing else."""
    torch = _torch()
    return torch.nn.functional.batch_norm(
        t,
        torch.zeros(x.shape[1], dtype=t.dtype, device=t.device),
        torch.ones(x.shape[1], dtype=t.dtype, device=t.device),
    )


F_DEFAULT_CALLS = {
    # F.batch_norm defaults to training=False: eval with the running statistics passed
    "batch_norm": _function_call(_f_batch_norm, lambda x: {"state": _initial(x), "training": False}),
    "instance_norm": _function_call(lambda t, x, h: _torch().nn.functional.instance_norm(t)),
    "layer_norm": _function_call(lambda t, x, h: _torch().nn.functional.layer_norm(t, x.shape[-1:])),
    "group_norm": _function_call(lambda t, x, h: _torch().nn.functional.group_norm(t, h["groups"])),
    "rms_norm": _function_call(lambda t, x, h: _torch().nn.functional.rms_norm(t, x.shape[-1:])),
    "local_response_norm": _function_call(
        lambda t, x, h: _torch().nn.functional.local_response_norm(t, h["size"])
    ),
    "lp_normalize": _function_call(lambda t, x, h: _torch().nn.functional.normalize(t)),
}


FROZEN_BN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_FROZEN),
    Convention("eps", "eps", 1e-5, SRC_FROZEN),
    Convention("eps_placement", "— (rsqrt(running_var + eps))", "inside_sqrt", SRC_FROZEN),
    Convention(
        "training",
        "— (eval only)",
        False,
        SRC_FROZEN,
        clause="BN.D21",
        note="running statistics, weight and bias are buffers: train() changes nothing, nothing is learned",
    ),
)


class TorchVision(TorchBase):
    """torchvision's norms: `transforms.Normalize` (the per-channel input normalization most image models
    use) and `ops.FrozenBatchNorm2d` (the eval-only BatchNorm of its detection backbones)."""

    name = "torchvision"
    requires = ("torch", "torchvision")
    api = "torchvision.transforms.Normalize"
    declarations = {
        "channel_normalize": NormDeclaration(
            "channel_normalize",
            "torchvision.transforms.Normalize",
            ALL_DTYPES,
            CN_CONVENTIONS,
            {d: d for d in ALL_DTYPES},
            gradients=True,
        ),
        "batch_norm": NormDeclaration(
            "batch_norm",
            "torchvision.ops.FrozenBatchNorm2d",
            ALL_DTYPES,
            FROZEN_BN_CONVENTIONS,
            {d: d for d in ALL_DTYPES},  # every step a half-precision tensor op on the converted buffers
            # weight and bias are buffers (BN.D21): no gradients of scale and offset, so the suite's
            # gradient property (x, scale and offset against the VJP) is not run for it
            gradients=False,
            stateful=True,
        ),
    }

    def no_argument_calls(self):
        return {"batch_norm": _frozen_default_call}

    def execute_plan(self, planned):
        _torchvision()  # before the plan's first torchvision import (see there)
        return super().execute_plan(planned)

    def _normalize_steps(self, x, params, dtype, cotangent, inplace: bool) -> Planned:
        require(x.ndim >= 3, "torchvision needs (..., C, H, W) (CN.C1)")
        require(channel_axis_of(x, params, -3) == x.ndim - 3, "torchvision's channel axis is -3")
        require(params["std_floor"] == 0.0, "torchvision has no std floor (CN.D2)")
        mean, std = list(np.ravel(params["mean"])), list(np.ravel(params["std"]))
        kwargs = {"inplace": True} if inplace else {}
        steps = [
            Step("normalize", Symbol(self.api), (mean, std), kwargs),
            Step("y", Get("normalize"), (Input("x", x, dtype, cotangent is not None),)),
        ]
        # in place, the normalized values are read from the input tensor itself, as its caller reads them
        where = Get("x") if inplace else Get("y")
        return _planned(
            steps,
            {"x": Get("x")},
            cotangent,
            dtype,
            lambda e, g: Outcome(e.y, grads=g),
            y=where,
            runtime=TORCHVISION,
        )

    def _run_channel_normalize(self, x, params, dtype, cotangent):
        return self._normalize_steps(x, params, dtype, cotangent, inplace=False)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        state = params.get("state")
        require(not params["training"], "FrozenBatchNorm2d has no training mode (BN.D21)")
        require(state is not None, "FrozenBatchNorm2d always normalizes with its running statistics")
        require(x.ndim == 4 and channel_axis_of(x, params) == 1, "FrozenBatchNorm2d takes (N, C, H, W)")
        buffers = {"running_mean": state.mean, "running_var": state.var}
        buffers |= {
            name: params[key]
            for key, name in (("scale", "weight"), ("offset", "bias"))
            if params.get(key) is not None
        }
        steps = [
            Step(
                "module", Symbol("torchvision.ops.FrozenBatchNorm2d"), (x.shape[1],), {"eps": params["eps"]}
            ),
            Step("module", Get("module", "to"), (), {"device": _device(), "dtype": Symbol(f"torch.{dtype}")}),
            Step(
                None,
                Get("module", "load_state_dict"),
                ({k: Input(k, v, dtype) for k, v in buffers.items()},),
                {"strict": False},  # an affine-free call keeps the ones and zeros it was built with
            ),
            Step("y", Get("module"), (Input("x", x, dtype, cotangent is not None),)),
        ]
        # weight and bias are buffers: no gradients of scale and offset
        after = {"running_mean": Get("module", "running_mean"), "running_var": Get("module", "running_var")}
        finish = stepped(state, False, lambda e: (e.after["running_mean"], e.after["running_var"]))
        return _planned(steps, {"x": Get("x")}, cotangent, dtype, finish, after, runtime=TORCHVISION)


def _frozen_default_call(x, hints, dtype):
    """`FrozenBatchNorm2d(C)(x)`: eval with its initial buffers (mean 0, variance 1, weight 1, bias 0)."""
    require(x.ndim == 4, "FrozenBatchNorm2d takes (N, C, H, W)")
    module = _torchvision().ops.FrozenBatchNorm2d(x.shape[1]).to(device=_device(), dtype=_dtype(dtype))
    y = module(_tensor(x, dtype))
    state = RunningStats(_numpy(module.running_mean), _numpy(module.running_var), 0)
    return Outcome(_numpy(y), state), {"state": _initial(x), "training": False}


class TorchVisionV2(TorchVision):
    """`torchvision.transforms.v2.Normalize`, run in place (`inplace=True`) wherever no gradient is taken:
    the result is read back from the input tensor, as an in-place caller reads it."""

    name = "torchvision.v2"
    api = "torchvision.transforms.v2.Normalize"
    declarations = {
        "channel_normalize": NormDeclaration(
            "channel_normalize",
            "torchvision.transforms.v2.Normalize",
            ALL_DTYPES,
            (
                Convention("channel_axis", "— (dim -3)", -3, SRC_TV2),
                Convention("std_floor", "— (zero std raises)", 0.0, SRC_TV2, clause="CN.D1"),
                Convention(
                    "inplace",
                    "inplace",
                    False,
                    SRC_TV2,
                    note="run with inplace=True unless gradients are taken (autograd refuses it on a leaf)",
                ),
            ),
            {d: d for d in ALL_DTYPES},
            gradients=True,
        ),
    }

    def no_argument_calls(self):
        return {}

    def _run_channel_normalize(self, x, params, dtype, cotangent):
        return self._normalize_steps(x, params, dtype, cotangent, inplace=cotangent is None)


__all__ = ["TorchFunctional", "TorchModules", "TorchVision", "TorchVisionV2", "Unsupported"]
