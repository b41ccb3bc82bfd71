"""PyTorch: `torch.nn.functional`, the `torch.nn` modules, and torchvision's Normalize and FrozenBatchNorm2d.

Conventions are declared once per norm (declarations.py) and shared by both adapters; the facts and
their sources are those of the spec's P and D clauses. The runtime and plans: runtime.py; the
no-argument calls: default_calls.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from normconf.reference import RunningStats

from .. import _devices
from ..base import (
    Adapter,
    Outcome,
    Unsupported,
    channel_axis_of,
    require,
    stepped,
    trailing,
)
from ..plan import Block, Get, Input, Plan, Planned, Step, Symbol
from .declarations import (
    AUTOCAST,
    BATCH_NORM_BY_RANK,
    FUNCTIONAL_DECLARATIONS,
    FUNCTIONAL_MIXED_DECLARATIONS,
    INSTANCE_NORM_BY_RANK,
    NN_DECLARATIONS,
    NN_MIXED_DECLARATIONS,
    SYNC_DEVICE_TYPES,
    TORCHVISION_DECLARATIONS,
    TORCHVISION_V2_DECLARATIONS,
)
from .default_calls import F_DEFAULT_CALLS, NN_DEFAULT_CALLS, _frozen_default_call
from .runtime import TORCHVISION, _affine_inputs, _device, _function, _planned, _torch, _torchvision


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
    declarations = FUNCTIONAL_DECLARATIONS

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
        grad, pdtype = cotangent is not None, self.parameter_dtype(norm, dtype)
        scale, offset = _affine_inputs(params, pdtype, grad)
        mean, var = (
            (None, None)
            if state is None
            else (
                Input("running_mean", state.mean, pdtype),
                Input("running_var", state.var, pdtype),
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
        affine = dict(
            zip(
                ("scale", "offset"),
                _affine_inputs(params, self.parameter_dtype(fn, dtype), grad),
                strict=True,
            )
        )
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


class TorchModules(TorchBase):
    """`torch.nn` modules, built and converted with `.to(dtype)` as a user would; running stats are
    buffers."""

    name = "torch.nn"
    cost = 6.6  # see Adapter.cost
    declarations = NN_DECLARATIONS

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
        norm: str,
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
        grad, pdtype = cotangent is not None, self.parameter_dtype(norm, dtype)
        scale, offset = _affine_inputs(params, pdtype, grad=False)
        state = {v.name: v for v in (scale, offset) if v is not None} | (loads or {})
        steps = [
            Step("module", Symbol(f"torch.nn.{cls}"), args, kwargs),
            Step(
                "module", Get("module", "to"), (), {"device": _device(), "dtype": Symbol(f"torch.{pdtype}")}
            ),
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
        loads, pdtype = {}, self.parameter_dtype(norm, dtype)
        if state is not None:
            loads = {
                "running_mean": Input("running_mean", state.mean, pdtype),
                "running_var": Input("running_var", state.var, pdtype),
            }
            if norm == "batch_norm":  # InstanceNorm has no counter buffer
                loads["num_batches_tracked"] = Input(
                    "num_batches_tracked", np.asarray(state.num_batches_tracked), "int64"
                )

        # InstanceNorm never counts batches (IN.D2); the canonical count still advances per step.
        finish = stepped(state, training, lambda e: (e.after["running_mean"], e.after["running_var"]))

        return self._module(
            norm,
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
        return self._module(
            "layer_norm", "LayerNorm", (x.shape[x.ndim - count :],), kwargs, x, params, dtype, cotangent
        )

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == 1, "PyTorch's channel axis is dim 1")
        require(
            params["assignment"] == "contiguous",
            "PyTorch groups contiguous channels (GN.D1)",
        )
        affine = params.get("scale") is not None or params.get("offset") is not None
        kwargs = {"eps": params["eps"], "affine": affine}
        return self._module(
            "group_norm", "GroupNorm", (params["groups"], x.shape[1]), kwargs, x, params, dtype, cotangent
        )

    def _run_rms_norm(self, x, params, dtype, cotangent):
        count = trailing(params["axes"], x.ndim)
        require(count is not None, "normalized_shape covers trailing axes only")
        require(params.get("offset") is None, "torch.nn.RMSNorm has no bias")
        kwargs = {"eps": params["eps"], "elementwise_affine": params.get("scale") is not None}
        return self._module(
            "rms_norm", "RMSNorm", (x.shape[x.ndim - count :],), kwargs, x, params, dtype, cotangent
        )

    def _run_local_response_norm(self, x, params, dtype, cotangent):
        _lrn_checks(x, params, dtype)
        kwargs = {"alpha": params["alpha"], "beta": params["beta"], "k": params["k"]}
        return self._module(
            "local_response_norm", "LocalResponseNorm", (params["size"],), kwargs, x, params, dtype, cotangent
        )


class TorchVision(TorchBase):
    """torchvision's norms: `transforms.Normalize` (the per-channel input normalization most image models
    use) and `ops.FrozenBatchNorm2d` (the eval-only BatchNorm of its detection backbones)."""

    name = "torchvision"
    requires = ("torch", "torchvision")
    api = "torchvision.transforms.Normalize"
    declarations = TORCHVISION_DECLARATIONS

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


class TorchVisionV2(TorchVision):
    """`torchvision.transforms.v2.Normalize`, run in place (`inplace=True`) wherever no gradient is taken:
    the result is read back from the input tensor, as an in-place caller reads it."""

    name = "torchvision.v2"
    api = "torchvision.transforms.v2.Normalize"
    declarations = TORCHVISION_V2_DECLARATIONS

    def no_argument_calls(self):
        return {}

    def _run_channel_normalize(self, x, params, dtype, cotangent):
        return self._normalize_steps(x, params, dtype, cotangent, inplace=cotangent is None)


class _Autocast:
    """The mixed policy as PyTorch users turn it on (MP.P1): modules and parameter tensors in float32,
    the activations in bfloat16, the forward call under torch.autocast and the backward outside it (as
    the AMP docs advise). Autocast decides nothing for a norm on the CPU (MP.D1); the block is there
    because it is what users run, and where a release puts a norm on a list, the results show it."""

    policy = AUTOCAST

    def _under_autocast(self, planned: Plan) -> Plan:
        backward = tuple(s for s in planned.steps if isinstance(s, Step) and s.fn == Get("y", "backward"))
        forward = tuple(s for s in planned.steps if s not in backward)
        kwargs = {"device_type": _device().split(":")[0], "dtype": Symbol("torch.bfloat16")}
        return replace(
            planned, steps=(Block("autocast", Symbol("torch.autocast"), (), kwargs, forward), *backward)
        )

    def execute_plan(self, planned):
        return super().execute_plan(self._under_autocast(planned))

    def render_plan(self, planned):
        return super().render_plan(self._under_autocast(planned))


class TorchFunctionalMixed(_Autocast, TorchFunctional):
    """torch.functional under torch.autocast: bfloat16 activations, float32 parameters and statistics."""

    name = "torch.functional@mixed"
    cost = 0.5  # see Adapter.cost: 0.07 of torch.functional's seconds in the gate's quick run (2026-12-08)
    declarations = FUNCTIONAL_MIXED_DECLARATIONS

    def no_argument_calls(self):
        return {}


class TorchModulesMixed(_Autocast, TorchModules):
    """torch.nn modules in float32 (as built) called under torch.autocast on bfloat16 activations."""

    name = "torch.nn@mixed"
    cost = 0.4  # see Adapter.cost: 0.07 of torch.nn's seconds in the gate's quick run (2026-12-08)
    declarations = NN_MIXED_DECLARATIONS

    def no_argument_calls(self):
        return {}


__all__ = [
    "TorchFunctional",
    "TorchFunctionalMixed",
    "TorchModules",
    "TorchModulesMixed",
    "TorchVision",
    "TorchVisionV2",
    "Unsupported",
]
