"""PyTorch: `torch.nn.functional` and the `torch.nn` modules (and torchvision's Normalize).

Conventions are declared once per norm and shared by both adapters; the facts and their sources are
those of the spec's P and D clauses.
"""

from __future__ import annotations

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
    trailing,
)

SRC_BN = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/batchnorm.py"
SRC_BN_CPP = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/Normalization.cpp"
SRC_NORM = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/normalization.py"
SRC_IN = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/instancenorm.py"
SRC_F = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/functional.py"
SRC_GN = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/cpu/group_norm_kernel.cpp"
SRC_RMS = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/layer_norm.cpp"
SRC_TV = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/transforms/_functional_tensor.py"
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


def _backward(y, inputs: dict, cotangent, dtype: str) -> Grads:
    """Gradients of sum(y * cotangent) w.r.t. the named leaf tensors (absent ones stay None)."""
    y.backward(_tensor(cotangent, dtype))
    grad = {k: (None if t is None else _numpy(t.grad)) for k, t in inputs.items()}
    return Grads(grad["x"], grad.get("scale"), grad.get("offset"))


def _affine(params, dtype, grad):
    scale, offset = params.get("scale"), params.get("offset")
    return (None if scale is None else _tensor(scale, dtype, grad)), (
        None if offset is None else _tensor(offset, dtype, grad)
    )


def _state_tensors(state: RunningStats | None, dtype: str):
    if state is None:
        return None, None
    return _tensor(state.mean, dtype), _tensor(state.var, dtype)


class TorchBase(Adapter):
    family = "torch"
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
        xt = _tensor(x, dtype, cotangent is not None)
        axes = tuple(params["axes"])
        y = _torch().nn.functional.normalize(xt, p=float(params["p"]), dim=axes, eps=params["eps"])
        grads = _backward(y, {"x": xt}, cotangent, dtype) if cotangent is not None else None
        return Outcome(_numpy(y), grads=grads)


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
    cost = 3.0  # see Adapter.cost
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

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        """The `torch.nn.functional` call(s) this adapter makes, recorded while it runs, written out
        with literal tensors: the repro a PyTorch issue wants."""
        names = (
            "batch_norm",
            "instance_norm",
            "layer_norm",
            "group_norm",
            "rms_norm",
            "local_response_norm",
            "normalize",
        )
        calls = _repro.recorded_calls(
            [(_torch().nn.functional, n) for n in names],
            lambda: self.run(norm, x, params, dtype=dtype, cotangent=cotangent),
        )
        if len(calls) != 1:
            return None
        backward = (
            None
            if cotangent is None
            else (f"y.backward(torch.tensor({_repro.values(cotangent)}, dtype=torch.float64).to(y.dtype))")
        )
        return _repro.script(
            [
                *_repro.HEADER,
                "import torch",
                "import torch.nn.functional as F",
                *TORCH_SHOW,
                *_repro.function_call(f"F.{calls[0].name}", calls[0], _literal, backward),
            ]
        )

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
        xt = _tensor(x, dtype, grad)
        scale, offset = _affine(params, dtype, grad)
        mean, var = _state_tensors(state, dtype)
        F = _torch().nn.functional
        eps = params["eps"]
        if norm == "batch_norm":
            y = F.batch_norm(
                xt, mean, var, scale, offset, training=training or state is None, momentum=momentum, eps=eps
            )
        else:
            y = F.instance_norm(
                xt,
                mean,
                var,
                scale,
                offset,
                use_input_stats=training or state is None,
                momentum=momentum,
                eps=eps,
            )
        new_state = state
        if state is not None and training:
            new_state = RunningStats(_numpy(mean), _numpy(var), state.num_batches_tracked + 1)
        grads = _backward(y, {"x": xt, "scale": scale, "offset": offset}, cotangent, dtype) if grad else None
        return Outcome(_numpy(y), new_state, grads)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._running("batch_norm", x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        return self._running("instance_norm", x, params, dtype, cotangent)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only (LN.D3)")
        grad = cotangent is not None
        xt = _tensor(x, dtype, grad)
        scale, offset = _affine(params, dtype, grad)
        y = _torch().nn.functional.layer_norm(xt, x.shape[x.ndim - count :], scale, offset, eps=params["eps"])
        grads = _backward(y, {"x": xt, "scale": scale, "offset": offset}, cotangent, dtype) if grad else None
        return Outcome(_numpy(y), grads=grads)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == 1, "PyTorch's channel axis is dim 1")
        require(
            params["assignment"] == "contiguous",
            "PyTorch groups contiguous channels (GN.D1)",
        )
        grad = cotangent is not None
        xt = _tensor(x, dtype, grad)
        scale, offset = _affine(params, dtype, grad)
        y = _torch().nn.functional.group_norm(xt, params["groups"], scale, offset, eps=params["eps"])
        grads = _backward(y, {"x": xt, "scale": scale, "offset": offset}, cotangent, dtype) if grad else None
        return Outcome(_numpy(y), grads=grads)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only")
        require(params.get("offset") is None, "torch RMSNorm has no bias")
        grad = cotangent is not None
        xt = _tensor(x, dtype, grad)
        scale, _ = _affine(params, dtype, grad)
        y = _torch().nn.functional.rms_norm(xt, x.shape[x.ndim - count :], scale, eps=params["eps"])
        grads = _backward(y, {"x": xt, "scale": scale}, cotangent, dtype) if grad else None
        return Outcome(_numpy(y), grads=grads)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        _lrn_checks(x, params, dtype)
        xt = _tensor(x, dtype, cotangent is not None)
        y = _torch().nn.functional.local_response_norm(
            xt,
            params["size"],
            alpha=params["alpha"],
            beta=params["beta"],
            k=params["k"],
        )
        grads = _backward(y, {"x": xt}, cotangent, dtype) if cotangent is not None else None
        return Outcome(_numpy(y), grads=grads)


BATCH_NORM_BY_RANK = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}
INSTANCE_NORM_BY_RANK = {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"}


class TorchModules(TorchBase):
    """`torch.nn` modules, built and converted with `.to(dtype)` as a user would; running stats are
    buffers."""

    name = "torch.nn"
    cost = 2.7  # see Adapter.cost
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

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        """The configured module this adapter called (its repr, parameters and buffers as loaded, its
        train/eval mode) and the call, written with literal tensors: the repro a PyTorch issue wants."""
        seen, original = [], self._call

        def recording(module, x, params, dtype, cotangent, training=True):
            torch = _torch()
            state = {
                k: (v.detach().to(torch.float64).tolist(), str(v.dtype).removeprefix("torch."))
                for k, v in module.state_dict().items()
            }
            seen.append((repr(module), state, training))
            return original(module, x, params, dtype, cotangent, training)

        self._call = recording
        try:
            self.run(norm, x, params, dtype=dtype, cotangent=cotangent)
        finally:
            del self._call
        if len(seen) != 1:
            return None
        module, state, training = seen[0]
        lines = [*_repro.HEADER, "import torch", *TORCH_SHOW, f"module = torch.nn.{module}.to(torch.{dtype})"]
        if state:
            lines.append(
                "module.load_state_dict({"
                + ", ".join(
                    f"{k!r}: torch.tensor({v!r}, dtype=torch.float64).to(torch.{t})"
                    for k, (v, t) in state.items()
                )
                + "})"
            )
        lines += [
            f"module.train({training!r})",
            f"x = torch.tensor({_repro.values(x)}, dtype=torch.float64).to(torch.{dtype})"
            + (".requires_grad_()" if cotangent is not None else ""),
            "y = module(x)",
            "show('y', y)",
        ]
        if cotangent is not None:
            lines += [
                f"y.backward(torch.tensor({_repro.values(cotangent)}, dtype=torch.float64).to(y.dtype))",
                "show('grad', {'x': x.grad, **{name: p.grad for name, p in module.named_parameters()}})",
            ]
        lines += ["show('after', dict(module.named_buffers()))"]
        return _repro.script(lines)

    @staticmethod
    def _set_affine(module, params, dtype):
        """Load canonical scale/offset into the module's weight/bias (absent = 1 and 0, exactly)."""
        torch = _torch()
        with torch.no_grad():
            if params.get("scale") is not None:
                module.weight.copy_(_tensor(params["scale"], dtype))
            if params.get("offset") is not None:
                module.bias.copy_(_tensor(params["offset"], dtype))

    def _call(self, module, x, params, dtype, cotangent, training=True):
        grad = cotangent is not None
        xt = _tensor(x, dtype, grad)
        module.train(training)
        y = module(xt)
        grads = None
        if grad:
            leaves = {"x": xt}
            for key, attr in (("scale", "weight"), ("offset", "bias")):
                leaves[key] = getattr(module, attr, None) if params.get(key) is not None else None
            grads = _backward(y, leaves, cotangent, dtype)
        return y, grads

    def _running(self, norm, x, params, dtype, cotangent):
        torch = _torch()
        table = BATCH_NORM_BY_RANK if norm == "batch_norm" else INSTANCE_NORM_BY_RANK
        require(x.ndim in table, f"{norm}: no torch.nn module for rank {x.ndim}")
        require(channel_axis_of(x, params) == 1, f"{norm}: PyTorch's channel axis is dim 1")
        require(
            params["running_var"] == "unbiased",
            "PyTorch's running variance is unbiased (BN.D1)",
        )
        state, training = params.get("state"), params["training"]
        affine = params.get("scale") is not None or params.get("offset") is not None
        cls = getattr(torch.nn, table[x.ndim])
        module = cls(
            x.shape[1],
            eps=params["eps"],
            momentum=params["momentum"],
            affine=affine,
            track_running_stats=state is not None,
        ).to(device=_device(), dtype=_dtype(dtype))
        self._set_affine(module, params, dtype)
        if state is not None:
            with torch.no_grad():
                module.running_mean.copy_(_tensor(state.mean, dtype))
                module.running_var.copy_(_tensor(state.var, dtype))
                if module.num_batches_tracked is not None:
                    module.num_batches_tracked.fill_(state.num_batches_tracked)
        y, grads = self._call(module, x, params, dtype, cotangent, training)
        new_state = None
        if state is not None:
            # InstanceNorm never counts batches (IN.D2); the canonical count still advances per step.
            tracked = state.num_batches_tracked + int(training)
            new_state = RunningStats(_numpy(module.running_mean), _numpy(module.running_var), tracked)
        return Outcome(_numpy(y), new_state, grads)

    def _run_batch_norm(self, x, params, dtype, cotangent):
        return self._running("batch_norm", x, params, dtype, cotangent)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        return self._running("instance_norm", x, params, dtype, cotangent)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only (LN.D3)")
        affine = params.get("scale") is not None or params.get("offset") is not None
        module = (
            _torch()
            .nn.LayerNorm(
                x.shape[x.ndim - count :],
                eps=params["eps"],
                elementwise_affine=affine,
                bias=params.get("offset") is not None,
            )
            .to(device=_device(), dtype=_dtype(dtype))
        )
        self._set_affine(module, params, dtype)
        y, grads = self._call(module, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == 1, "PyTorch's channel axis is dim 1")
        require(
            params["assignment"] == "contiguous",
            "PyTorch groups contiguous channels (GN.D1)",
        )
        affine = params.get("scale") is not None or params.get("offset") is not None
        module = _torch().nn.GroupNorm(params["groups"], x.shape[1], eps=params["eps"], affine=affine)
        module = _to(module, dtype)
        self._set_affine(module, params, dtype)
        y, grads = self._call(module, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only")
        require(params.get("offset") is None, "torch.nn.RMSNorm has no bias")
        module = (
            _torch()
            .nn.RMSNorm(
                x.shape[x.ndim - count :],
                eps=params["eps"],
                elementwise_affine=params.get("scale") is not None,
            )
            .to(device=_device(), dtype=_dtype(dtype))
        )
        self._set_affine(module, params, dtype)
        y, grads = self._call(module, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        _lrn_checks(x, params, dtype)
        module = _torch().nn.LocalResponseNorm(
            params["size"],
            alpha=params["alpha"],
            beta=params["beta"],
            k=params["k"],
        )
        y, grads = self._call(module, x, params, dtype, cotangent)
        return Outcome(_numpy(y), grads=grads)


TORCH_SHOW = _repro.show_function("v.detach().to(torch.float64)")


def _literal(value):
    """A tensor argument as a literal (its dtype and requires_grad kept): (source, requires_grad)."""
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        return None
    dtype = str(value.dtype).removeprefix("torch.")
    return (
        f"torch.tensor({_repro.values(value.detach().to(torch.float64))}, dtype=torch.float64)"
        f".to(torch.{dtype}){'.requires_grad_()' if value.requires_grad else ''}",
        value.requires_grad,
    )


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


class TorchVision(TorchBase):
    """`torchvision.transforms.Normalize`, the per-channel input normalization most image models use."""

    name = "torchvision"
    requires = ("torch", "torchvision")
    declarations = {
        "channel_normalize": NormDeclaration(
            "channel_normalize",
            "torchvision.transforms.Normalize",
            ("float16", "bfloat16", "float32", "float64"),
            CN_CONVENTIONS,
            {d: d for d in ALL_DTYPES},
            gradients=True,
        ),
    }

    def _run_channel_normalize(self, x, params, dtype, cotangent):
        from torchvision.transforms import Normalize

        require(x.ndim >= 3, "torchvision needs (..., C, H, W)")
        require(channel_axis_of(x, params, -3) == x.ndim - 3, "torchvision's channel axis is -3")
        require(params["std_floor"] == 0.0, "torchvision has no std floor (CN.D2)")
        xt = _tensor(x, dtype, cotangent is not None)
        y = Normalize(list(np.ravel(params["mean"])), list(np.ravel(params["std"])))(xt)
        grads = _backward(y, {"x": xt}, cotangent, dtype) if cotangent is not None else None
        return Outcome(_numpy(y), grads=grads)


__all__ = ["TorchFunctional", "TorchModules", "TorchVision", "Unsupported"]
