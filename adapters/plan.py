"""A framework call as data: one function runs it, another writes it as a framework-alone script.

An adapter builds a `Plan` - the arrays it passes (`Input`), then steps that each call something (a
framework function or class named by its import path, `Symbol`, or a method of a value bound earlier,
`Get`) and bind the result - and hands it to `execute`. The repro a bug report upstream wants (spec
NUM.N7) is `render` of the same plan: the script is the call that ran, by construction, and watching
the adapter run (patching framework modules) is never needed. Every script binds `y` and prints it,
the gradients and the state after the call with `show`, as float64 lists a test compares with the
adapter's own outcome.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import _repro


class Input(NamedTuple):
    """An array the plan passes to the framework, converted by its runtime (a literal in the script)."""

    name: str
    value: Any  # float64 array-like
    dtype: str  # the framework dtype it is converted to
    grad: bool = False  # a leaf the gradient is taken with respect to


class Symbol(str):
    """A dotted import path: `torch.nn.functional.batch_norm`, `torch.float16`."""


class Get(NamedTuple):
    """A value the plan bound earlier, or an attribute path of it: Get("module", "running_var"); a
    number in the path indexes: Get("out", "0") is out[0]."""

    name: str
    attr: str = ""

    def source(self) -> str:
        parts = self.attr.split(".") if self.attr else ()
        return self.name + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts)


@dataclass(frozen=True)
class Step:
    """bind = fn(*args, **kwargs)[pick]; `bind` None: a call made for its effect (an in-place load,
    backward); `pick`: the one result kept of a call that returns several."""

    bind: str | None
    fn: Symbol | Get
    args: tuple = ()
    kwargs: Mapping = field(default_factory=dict)
    pick: int | None = None


@dataclass(frozen=True)
class Block:
    """`with fn(*args, **kwargs) as bind:` around `body` (a GradientTape recording the steps in it)."""

    bind: str
    fn: Symbol | Get
    args: tuple = ()
    kwargs: Mapping = field(default_factory=dict)
    body: tuple = ()


@dataclass(frozen=True)
class Define:
    """`def bind(*params): <body>; return returns` - the function a framework differentiates (mx.vjp,
    jax.vjp). Its parameter names must not shadow the plan's other names."""

    bind: str
    params: tuple[str, ...]
    body: tuple = ()
    returns: Any = None


@dataclass(frozen=True)
class Runtime:
    """How one framework family's arrays are made and read, run and written."""

    imports: tuple[str, ...]  # the script's import lines
    tensor: Callable[[Input], Any]  # an Input as a framework array
    tensor_source: Callable[[Input], str]  # ... written as source
    numpy: Callable[[Any], np.ndarray]  # a framework array as float64 NumPy
    numpy_source: str  # that conversion as source, of a framework array named `v`
    aliases: tuple[tuple[str, str], ...] = ()  # (import path prefix, the script's name for it)


@dataclass(frozen=True)
class Plan:
    runtime: Runtime
    steps: tuple[Step | Block | Define, ...]
    grads: Mapping[str, Get] = field(default_factory=dict)  # canonical name -> where its gradient is read
    after: Mapping[str, Get] = field(default_factory=dict)  # state name -> where it is read after the call
    y: Get = Get("y")  # where the output is read


@dataclass
class Executed:
    """What a plan's run left: every bound value (framework objects), and y / grads / after as NumPy."""

    bound: dict
    y: np.ndarray
    grads: dict
    after: dict
    y_dtype: str | None = None  # the output's dtype as the framework returned it (`dtype_name`)


def dtype_name(array) -> str | None:
    """A framework array's dtype as NumPy names it: torch.bfloat16, tf's DType, jax's, mlx.core.float16
    and paddle.float16 all come out as "bfloat16" / "float16" (MP.N2 compares these)."""
    dtype = getattr(array, "dtype", None)
    if dtype is None:
        return None
    name = getattr(dtype, "name", None)  # NumPy's and TensorFlow's dtypes
    return (name if isinstance(name, str) else str(dtype)).rsplit(".", 1)[-1].lower()  # paddle: FLOAT32


@functools.lru_cache(maxsize=None)
def resolve(path: str):
    """The object a dotted import path names, read as the script reads it: attributes from the top
    package down, importing a submodule only where no attribute of that name exists yet (importing one
    first would rebind a package's function of the same name to its module)."""
    parts = path.split(".")
    value = importlib.import_module(parts[0])
    for depth, part in enumerate(parts[1:], start=2):
        try:
            value = getattr(value, part)
        except AttributeError:
            try:
                value = importlib.import_module(".".join(parts[:depth]))
            except ModuleNotFoundError:  # an API this release of the framework lacks: not expressible here
                from .base import Unsupported

                raise Unsupported(f"{path}: {'.'.join(parts[:depth])} is not in this release") from None
    return value


def _attr(value, path: str):
    for attr in path.split(".") if path else ():
        value = value[int(attr)] if attr.isdigit() else getattr(value, attr)
    return value


def execute(plan: Plan) -> Executed:
    """Run the plan's steps in order; read y, the gradients and the state after the call."""
    bound: dict = {}
    made: dict = {}

    def value(arg):
        if isinstance(arg, Input):
            if arg.name not in made:
                made[arg.name] = plan.runtime.tensor(arg)
            return made[arg.name]
        if isinstance(arg, Get):
            return _attr(made[arg.name] if arg.name in made else bound[arg.name], arg.attr)
        if isinstance(arg, Symbol):
            return resolve(arg)
        if isinstance(arg, (list, tuple)):
            return type(arg)(value(a) for a in arg)
        if isinstance(arg, dict):
            return {k: value(v) for k, v in arg.items()}
        return arg

    def define(step: Define):
        def function(*args):
            bound.update(zip(step.params, args, strict=True))
            run(step.body)
            return value(step.returns)

        return function

    def run(steps):
        for step in steps:
            if isinstance(step, Define):
                bound[step.bind] = define(step)
                continue
            if isinstance(step, Block):
                with value(step.fn)(*value(step.args), **value(dict(step.kwargs))) as entered:
                    bound[step.bind] = entered
                    run(step.body)
                continue
            result = value(step.fn)(*value(step.args), **value(dict(step.kwargs)))
            result = result if step.pick is None else result[step.pick]
            if step.bind is not None:
                bound[step.bind] = result

    run(plan.steps)
    read = lambda v: None if v is None else plan.runtime.numpy(v)  # noqa: E731
    bound.update(made)
    y = value(plan.y)
    return Executed(
        bound,
        plan.runtime.numpy(y),
        {k: read(value(g)) for k, g in plan.grads.items()},
        {k: read(value(a)) for k, a in plan.after.items()},
        dtype_name(y),
    )


def render(plan: Plan) -> str:
    """The plan as a script with the framework alone: literal inputs (each defined where first used),
    the same steps, then `show` of y, the gradients and the state after the call."""
    runtime, defined, lines, indent = plan.runtime, set(), [], [""]

    def symbol(path: str) -> str:
        for prefix, alias in runtime.aliases:
            if path == prefix or path.startswith(prefix + "."):
                return alias + path[len(prefix) :]
        return path

    def source(arg) -> str:
        if isinstance(arg, Input):
            if arg.name not in defined:
                defined.add(arg.name)
                lines.append(f"{indent[0]}{arg.name} = {runtime.tensor_source(arg)}")
            return arg.name
        if isinstance(arg, Get):
            return arg.source()
        if isinstance(arg, Symbol):
            return symbol(arg)
        if isinstance(arg, (list, tuple)):
            inner = ", ".join(map(source, arg))
            return f"[{inner}]" if isinstance(arg, list) else f"({inner}{',' if len(arg) == 1 else ''})"
        if isinstance(arg, dict):
            return "{" + ", ".join(f"{k!r}: {source(v)}" for k, v in arg.items()) + "}"
        return _repro.plain(arg)

    def call(step) -> str:
        arguments = [*(source(a) for a in step.args), *(f"{k}={source(v)}" for k, v in step.kwargs.items())]
        return f"{source(step.fn)}({', '.join(arguments)})"

    def write(steps) -> None:
        for step in steps:
            if isinstance(step, Define):
                lines.append(f"{indent[0]}def {step.bind}({', '.join(step.params)}):")
                indent[0] += "    "
                write(step.body)
                lines.append(f"{indent[0]}return {source(step.returns)}")
                indent[0] = indent[0][:-4]
                continue
            if isinstance(step, Block):
                lines.append(f"{indent[0]}with {call(step)} as {step.bind}:")
                indent[0] += "    "
                write(step.body)
                indent[0] = indent[0][:-4]
                continue
            text = call(step) + ("" if step.pick is None else f"[{step.pick}]")
            lines.append(indent[0] + ("" if step.bind is None else f"{step.bind} = ") + text)

    write(plan.steps)
    shows = [f"show('y', {plan.y.source()})"]
    for label, read in (("grad", plan.grads), ("after", plan.after)):
        if read:
            shown = ", ".join(f"{k!r}: {source(v)}" for k, v in read.items())
            shows.append(f"show({label!r}, {{{shown}}})")
    return _repro.script(
        [*_repro.HEADER, *runtime.imports, *_repro.show_function(runtime.numpy_source), *lines, *shows]
    )


@dataclass(frozen=True)
class Planned:
    """What an adapter's `_run_<norm>` returns when it runs through a plan: the plan, and how the
    adapter's Outcome is read from what it left (`Adapter.run` executes it, `framework_repro` renders it)."""

    plan: Plan
    outcome: Callable[[Executed], Any]
