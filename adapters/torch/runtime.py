"""PyTorch runtime: importing torch and torchvision, tensors on the adapter's device and dtype, and the
plans (`..plan`) the adapters build: steps that call torch, then backward and the leaves' gradients.
Split from adapters.py; shared by all the torch adapters."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from normconf.reference import Grads

from .. import _devices, _repro
from ..base import Outcome
from ..plan import Executed, Get, Input, Plan, Planned, Runtime, Step, Symbol


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
