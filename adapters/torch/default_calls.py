"""PyTorch's no-argument calls (`Adapter.no_argument_calls`): each norm called as a user calls it with
every argument left at the framework's default, and the canonical parameters that call implies. Split
from adapters.py."""

from __future__ import annotations

from normconf.reference import RunningStats

from ..base import Outcome, require
from .declarations import BATCH_NORM_BY_RANK, INSTANCE_NORM_BY_RANK
from .runtime import _device, _dtype, _numpy, _tensor, _torch, _torchvision


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


def _frozen_default_call(x, hints, dtype):
    """`FrozenBatchNorm2d(C)(x)`: eval with its initial buffers (mean 0, variance 1, weight 1, bias 0)."""
    require(x.ndim == 4, "FrozenBatchNorm2d takes (N, C, H, W)")
    module = _torchvision().ops.FrozenBatchNorm2d(x.shape[1]).to(device=_device(), dtype=_dtype(dtype))
    y = module(_tensor(x, dtype))
    state = RunningStats(_numpy(module.running_mean), _numpy(module.running_var), 0)
    return Outcome(_numpy(y), state), {"state": _initial(x), "training": False}
