"""The Paddle plumbing both adapters run through: paddle imported only when called, tensors in and out,
the default dtype a layer is built under, and the plans (`PADDLE`, `_planned`, `_function`) that bind y
and read the gradients back. Its own module so that `adapters.py` holds the adapters."""

from __future__ import annotations

import contextlib

import numpy as np

from normconf.reference import Grads

from .. import _repro
from ..base import Outcome
from ..plan import Executed, Get, Input, Plan, Planned, Runtime, Step, Symbol


def _paddle():
    import paddle

    return paddle


@contextlib.contextmanager
def _default_dtype(dtype: str):
    """Layers create their parameters in the default dtype, as a user building a float64 model sets it."""
    paddle = _paddle()
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        yield
    finally:
        paddle.set_default_dtype(previous)


def _tensor(value, dtype: str, grad: bool = False):
    t = _paddle().to_tensor(np.asarray(value, dtype=np.float64).astype(dtype))
    t.stop_gradient = not grad
    return t


def _numpy(t) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=np.float64)


PADDLE = Runtime(
    imports=("import paddle", "import paddle.nn.functional as F"),
    tensor=lambda value: _tensor(value.value, value.dtype, value.grad),
    tensor_source=lambda value: (
        f"paddle.to_tensor(np.array({_repro.values(value.value)}).astype({value.dtype!r}), "
        f"stop_gradient={not value.grad!r})"
    ),
    numpy=lambda t: _numpy(t),
    numpy_source="v.numpy()",
    aliases=(("paddle.nn.functional", "F"),),
)


def _planned(steps, leaves: dict, cotangent, dtype: str, finish=None, after=None, shapes=None) -> Planned:
    """The steps that bind y, then (given a cotangent) y.backward(g) and the gradients of the named
    leaves, reshaped to `shapes` where Paddle keeps them flat; `finish(executed, grads)` makes the
    Outcome (by default y and the gradients)."""
    grads = {}
    if cotangent is not None:
        steps = [*steps, Step(None, Get("y", "backward"), (Input("g", cotangent, dtype),))]
        grads = {key: Get(where.name, f"{where.attr}.grad".lstrip(".")) for key, where in leaves.items()}
    shapes = shapes or {}

    def outcome(executed: Executed) -> Outcome:
        found = None
        if cotangent is not None:
            read = {k: v if k not in shapes else v.reshape(shapes[k]) for k, v in executed.grads.items()}
            found = Grads(read["x"], read.get("scale"), read.get("offset"))
        return (finish or (lambda e, g: Outcome(e.y, grads=g)))(executed, found)

    return Planned(Plan(PADDLE, tuple(steps), grads, after or {}), outcome)


def _affine_inputs(params, dtype: str, grad: bool, flat: bool = False) -> dict:
    """The canonical scale and offset given, as the named inputs weight and bias (flattened: `flat`)."""
    shape = np.ravel if flat else np.asarray
    return {
        key: Input(name, shape(params[key]), dtype, grad)
        for key, name in (("scale", "weight"), ("offset", "bias"))
        if params.get(key) is not None
    }


def _function(fn: str, args: tuple, kwargs: dict, x, params, dtype, cotangent, affine=None, **planned):
    """y = <fn>(x, *args, **kwargs) (paddle.nn.functional.<fn> unless a dotted path); the gradients of x
    and of the affine inputs given (canonical name -> Input)."""
    affine = affine or {}
    leaves = {"x": Get("x"), **{k: Get(v.name) for k, v in affine.items() if v.grad}}
    path = fn if "." in fn else f"paddle.nn.functional.{fn}"
    x_in = Input("x", x, dtype, cotangent is not None)
    step = Step("y", Symbol(path), (x_in, *args), kwargs, pick=planned.pop("pick", None))
    return _planned([step], leaves, cotangent, dtype, **planned)
