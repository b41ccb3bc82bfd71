"""Your own norm implementation behind the adapter protocol: the least you write to get a verdict.

The function form: decorate one function per norm, taking the canonical keyword parameters it
supports (the reference function's names, spec/<norm>.md P-clauses) and returning the output:

    from normconf.adapters.plugin import implementation

    @implementation("layer_norm", dtypes=("float32",))
    def layer_norm(x, *, axes, eps, scale=None, offset=None):
        ...                                       # NumPy arrays in the tested dtype in, an array out

    $ normconf check my_norms.py                  # every @implementation in the file
    $ normconf check my_norms.py:layer_norm       # one of them

- A canonical parameter the function does not take is fixed at its canonical default (or at the value
  `conventions` declares) and the suite draws only that value.
- `conventions` declares what the implementation does where the spec has a choice, e.g.
  `{"eps_placement": "outside_sqrt"}` or `{"running_var": "biased"}`: the suite then checks against that
  convention instead of reporting it (BN.P8, BN.P4, GN.P4, LRN.P4/P5, LP.P4, RMS.P4).
- What it does not take: a value of a parameter it takes but does not support is declared,
  `refuses={"momentum": [None]}` (a float-momentum BatchNorm) - examples drawing it are not run, and
  are counted with that reason - or raised at call time as `normconf.adapters.Unsupported("...")` (a
  layer for NCHW inputs only, given another rank). The rest of the norm is judged either way. Any other
  exception on an input the spec defines is a refusal, judged at that input's level (NUM.L5); an answer
  that is not an array of the input's shape and dtype, or a signature that cannot take what it is
  passed, is a protocol error: the plug-in's, not a clause's, and the rest of that norm and dtype is
  skipped. Every keyword after x must be a parameter of the norm (checked when the file loads); axes
  and channel_axis are compared modulo the input's rank (-3 is 1 for NCHW).
- `scale_form="one_plus"` says the function holds `weight` and computes x̂ · (1 + weight) (Gemma's
  RMSNorm): the suite draws weight in the tested dtype and passes it as is (RMS.N3).
- `wraps="torch.functional"` (a built-in adapter of the same norm) says the function calls that
  framework's own: the adapter's known divergences are then candidates for it too, each still judged by
  its model - the same arithmetic gets the same verdict.
- `arrays` says what the function takes and returns: "numpy" (default), "torch" or "jax" (gradients
  then come from the framework's autodiff), or an `Arrays(to, back)` converter of your own.
- `policy="mixed"` says the function implements a mixed-precision policy (spec MP.P1): it takes x in a
  half type (`dtypes` of float16/bfloat16) and scale, offset and the running state in float32, and
  returns its output in the input's dtype, or in the dtype `output={"bfloat16": "float32"}` declares;
  `accumulation` states its statistics' dtype. It is judged under MP.N1 and MP.N2, as the frameworks'
  policy adapters (`torch.nn@mixed`, ...) are; all implementations of one plug-in share its policy.
- batch_norm/instance_norm functions that take `state` get a RunningStats (mean, var,
  num_batches_tracked) and return `(y, new_state)`, the state as a RunningStats or a (mean, var) pair.

The full form is a subclass of `normconf.adapters.Adapter` (declared conventions with sources, state,
gradients, `_run_<norm>` methods): see adapters/base.py and any adapter in this package.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from normconf import reference as R

from .base import (
    CANONICAL_PARAMETERS,
    DIVISOR_CONVENTIONS,
    DTYPES,
    NORMS,
    SCALE_FORMS,
    Adapter,
    Convention,
    NormDeclaration,
    Outcome,
    Policy,
    require,
)

# What a function that does not take `state` makes irrelevant: without running statistics the batch
# statistics normalize in training and eval alike (BN.S4), and there is nothing to update.
STATE_ONLY = ("momentum", "running_var", "training")
ARRAY_PARAMETERS = ("scale", "offset", "mean", "std")
SOURCE = "declared by the implementation's author"
HALF = {"float16", "bfloat16"}
# canonical parameters without a canonical default: a function that does not take one must declare it
REQUIRED = {"rms_norm": ("eps",), "group_norm": ("groups",), "local_response_norm": ("size",)}


@dataclass(frozen=True)
class Arrays:
    """How to hand NumPy arrays to the implementation and take its results back.

    `to(array, dtype_name)` makes the implementation's array; `back(result)` a NumPy array; `vjp(fn,
    arrays, g)` (optional) returns the cotangents of the `arrays` dict, so gradients are checked too."""

    to: Callable[[np.ndarray, str], Any]
    back: Callable[[Any], np.ndarray]
    vjp: Callable | None = None


def _numpy_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _torch_arrays() -> Arrays:
    def to(a, dtype):
        import torch

        return torch.tensor(np.asarray(a, dtype=np.float64)).to(getattr(torch, dtype))

    def back(t):
        return t.detach().to(dtype=__import__("torch").float64).numpy()

    def vjp(fn, arrays, g):
        import torch

        leaves = {k: v.clone().requires_grad_(True) for k, v in arrays.items()}
        y = fn(**leaves)
        grads = torch.autograd.grad(y, list(leaves.values()), g.to(y.dtype), allow_unused=True)
        return dict(zip(leaves, grads, strict=True))

    return Arrays(to, back, vjp)


def _jax_arrays() -> Arrays:
    def to(a, dtype):
        import jax
        import jax.numpy as jnp

        if dtype == "float64" and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)  # float64 arrays need it, as for a float64 user
        return jnp.asarray(np.asarray(a, dtype=np.float64).astype(_numpy_dtype(dtype)))

    def back(a):
        return np.asarray(a).astype(np.float64)

    def vjp(fn, arrays, g):
        import jax

        names = list(arrays)
        y, pullback = jax.vjp(lambda *values: fn(**dict(zip(names, values, strict=True))), *arrays.values())
        return dict(zip(names, pullback(g.astype(y.dtype)), strict=True))

    return Arrays(to, back, vjp)


ARRAYS: dict[str, Callable[[], Arrays]] = {
    "numpy": lambda: Arrays(
        lambda a, dtype: np.asarray(a, dtype=np.float64).astype(_numpy_dtype(dtype)),
        lambda a: np.asarray(a).astype(np.float64),
    ),
    "torch": _torch_arrays,
    "jax": _jax_arrays,
}


@dataclass(frozen=True)
class Implementation:
    """One norm function and what its author declares about it (see the module docstring)."""

    norm: str
    fn: Callable
    dtypes: tuple[str, ...] = ("float32", "float64")
    conventions: dict = field(default_factory=dict)
    arrays: str | Arrays = "numpy"
    accumulation: dict = field(default_factory=dict)  # input dtype -> dtype the statistics are computed in
    # {canonical parameter: values the function does not take} (momentum None, eps 0.0): examples drawing
    # one of them are unsupported - not run, counted with the reason - and the rest is judged
    refuses: dict = field(default_factory=dict)
    # the built-in adapter whose function this one calls ("torch.functional"): that adapter's modelled
    # divergences judge it too - as models of the same arithmetic, never as excuses
    wraps: str | None = None
    scale_form: str = "as_is"  # "one_plus": the function takes weight and computes x-hat * (1 + weight)
    policy: str | None = None  # "mixed" (MP.P1): half x, float32 parameters and state
    output: dict = field(default_factory=dict)  # under the policy: input dtype -> output dtype (MP.N2)

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm: {self.norm!r} is not one of {', '.join(NORMS)}")
        unknown = sorted(set(self.dtypes) - set(DTYPES))
        if unknown or not self.dtypes:
            raise ValueError(f"dtypes: {unknown or 'none'} given; choose from {', '.join(DTYPES)}")
        if self.policy not in (None, "mixed"):
            raise ValueError(f"policy: {self.policy!r} is not a policy (spec MP.P1): None or 'mixed'")
        if self.policy == "mixed" and not set(self.dtypes) <= HALF:
            raise ValueError(
                f"dtypes: {list(self.dtypes)} under policy='mixed' - the policy takes half-precision "
                "activations (MP.P1): float16 and/or bfloat16"
            )
        if self.output and self.policy != "mixed":
            raise ValueError("output: an output dtype other than the input's is a mixed policy's (MP.N2)")
        allowed = CANONICAL_PARAMETERS[self.norm]
        for key in self.conventions:
            if key not in allowed:
                raise ValueError(
                    f"conventions: {key!r} is not a canonical parameter of {self.norm} "
                    f"(one of {', '.join(allowed)})"
                )
        _check_convention_values(self.norm, self.conventions)
        for key, values in self.refuses.items():
            if key not in _reference_defaults(self.norm):
                raise ValueError(
                    f"refuses: {key!r} is not a parameter of {self.norm} "
                    f"(one of {', '.join(_reference_defaults(self.norm))})"
                )
            if not isinstance(values, (list, tuple, set, frozenset)):
                raise ValueError(f"refuses: {key}={values!r} must list the values refused, e.g. [{values!r}]")
        if not callable(self.fn):
            raise TypeError(f"{self.norm}: the implementation must be callable, got {type(self.fn).__name__}")
        _check_keywords(self)
        _check_wraps(self)
        if self.scale_form not in SCALE_FORMS or (
            self.scale_form != "as_is" and "scale" not in _reference_defaults(self.norm)
        ):
            raise ValueError(
                f"scale_form: {self.scale_form!r} for {self.norm}; one of {', '.join(SCALE_FORMS)} "
                f"(a form other than 'as_is' only for a norm with a scale, RMS.N3)"
            )
        if not isinstance(self.arrays, Arrays) and self.arrays not in ARRAYS:
            raise ValueError(
                f"arrays: {self.arrays!r} is not one of {', '.join(ARRAYS)} or an Arrays(to, back)"
            )

    def __call__(self, *args, **kwargs):  # the decorated function still works as itself
        return self.fn(*args, **kwargs)

    @property
    def parameters(self) -> set[str]:
        """The canonical keyword parameters the function takes."""
        signature = inspect.signature(self.fn)
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return set(CANONICAL_PARAMETERS[self.norm]) | set(_reference_defaults(self.norm)) | {"state"}
        return set(list(signature.parameters)[1:])

    @property
    def label(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def converter(self) -> Arrays:
        return self.arrays if isinstance(self.arrays, Arrays) else ARRAYS[self.arrays]()


def _check_wraps(impl: Implementation) -> None:
    """`wraps` names a built-in adapter that implements the same norm."""
    if impl.wraps is None:
        return
    from . import built_in, load

    offering = [name for name in built_in() if impl.norm in load(name).declarations]
    if impl.wraps not in offering:
        raise ValueError(
            f"wraps: {impl.wraps!r} is not a built-in adapter of {impl.norm}; one of {', '.join(offering)}"
        )


def _check_keywords(impl: Implementation) -> None:
    """Every parameter the function requires after x is a canonical parameter of its norm (or `state`):
    a misspelt one (`epsilon` for `eps`) would never be passed, so it is refused at load, naming the
    valid ones (spec/<norm>.md P-clauses)."""
    valid = set(_reference_defaults(impl.norm)) | {"state"}
    signature = inspect.signature(impl.fn)
    required = [
        p.name
        for p in list(signature.parameters.values())[1:]
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.default is p.empty
    ]
    unknown = [name for name in required if name not in valid]
    if unknown:  # one with a default is never passed, and may stay
        raise ValueError(
            f"{impl.norm}: {impl.label} requires {', '.join(map(repr, unknown))}, not a parameter of "
            f"{impl.norm} (spec/{impl.norm}.md P-clauses); the suite passes only "
            f"{', '.join(sorted(valid))}, by keyword - rename it, or give it a default"
        )


def _check_convention_values(norm: str, conventions: dict) -> None:
    """Each declared value must be one the spec defines: the reference runs a typical call with it, and
    a value it refuses (an unknown eps placement, a negative eps) is refused here, with the reference's
    own message naming the parameter, its clause and the valid values - before any example is drawn."""
    record = R.NORMS[norm]
    x = np.random.default_rng(0).normal(size=(4, 6, 3, 5))
    for key, value in conventions.items():
        try:
            record.forward(x, **record.typical_params(x, {key: value}))
        except R.ClauseError as exc:
            raise ValueError(f"conventions: {key}={value!r} is not a value the spec defines: {exc}") from None
        except (ValueError, TypeError):  # the value is fine; the typical call's other parameters clash
            continue


def implementation(
    norm: str,
    *,
    dtypes=("float32", "float64"),
    conventions: dict | None = None,
    arrays: str | Arrays = "numpy",
    accumulation: dict | None = None,
    refuses: dict | None = None,
    wraps: str | None = None,
    scale_form: str = "as_is",
    policy: str | None = None,
    output: dict | None = None,
):
    """Decorator: declare a function as an implementation of `norm` (see the module docstring)."""

    def wrap(fn):
        return Implementation(
            norm,
            fn,
            tuple(dtypes),
            dict(conventions or {}),
            arrays,
            dict(accumulation or {}),
            {
                key: tuple(values) if isinstance(values, (list, tuple, set, frozenset)) else values
                for key, values in (refuses or {}).items()
            },
            wraps,
            scale_form,
            policy,
            dict(output or {}),
        )

    return wrap


def _reference_defaults(norm: str) -> dict:
    """The reference function's keyword parameters and their canonical defaults (None: required)."""
    signature = inspect.signature(getattr(R, norm))
    return {
        name: (None if p.default is p.empty else p.default)
        for name, p in list(signature.parameters.items())[1:]
    }


class FunctionAdapter(Adapter):
    """Implementations in the function form, as one adapter named by where they were loaded from."""

    family = "plug-in"

    def __init__(self, name: str, implementations):
        self.name = name
        self.implementations: dict[str, Implementation] = {}
        for impl in implementations:
            if impl.norm in self.implementations:
                raise PluginError(
                    f"{name}: two implementations of {impl.norm} ({self.implementations[impl.norm].label}, "
                    f"{impl.label}); check one at a time: {name}:{impl.label}"
                )
            self.implementations[impl.norm] = impl
        policies = {impl.policy for impl in self.implementations.values()}
        if len(policies) > 1:
            raise PluginError(
                f"{name}: its implementations declare different policies {sorted(map(str, policies))}"
            )
        if policies == {"mixed"}:
            self.policy = Policy(
                mechanism="declared by the plug-in: half x, float32 parameters", source=SOURCE
            )
        self.declarations = {norm: self._declare(impl) for norm, impl in self.implementations.items()}

    def _declare(self, impl: Implementation) -> NormDeclaration:
        taken, defaults = impl.parameters, _reference_defaults(impl.norm)
        conventions = []
        for key in CANONICAL_PARAMETERS[impl.norm]:
            value = impl.conventions.get(key, DIVISOR_CONVENTIONS.get(key, defaults.get(key)))
            if value is None and key not in taken and key in REQUIRED.get(impl.norm, ()):
                raise PluginError(
                    f"{impl.label}: takes no {key} and the spec has no default for it; declare the "
                    f"value it computes with, e.g. conventions={{{key!r}: ...}}"
                )
            if key in DIVISOR_CONVENTIONS and key not in impl.conventions:
                continue  # canonical unless declared (BN.P8): nothing to draw, nothing to hand over
            if key in taken and key not in DIVISOR_CONVENTIONS:
                conventions.append(Convention(key, key, value, SOURCE))
            elif key in impl.conventions or key not in _irrelevant(impl):
                conventions.append(Convention(key, f"— (not a parameter of {impl.label})", value, SOURCE))
        converter = impl.converter()
        return NormDeclaration(
            norm=impl.norm,
            api=impl.label,
            dtypes=impl.dtypes,
            conventions=tuple(conventions),
            accumulation=dict(impl.accumulation),
            gradients=converter.vjp is not None,
            stateful=impl.norm in ("batch_norm", "instance_norm") and "state" in taken,
            scale_form=impl.scale_form,
            parameters="float32" if impl.policy == "mixed" else None,
            output=dict(impl.output),
        )

    def wrapped(self, norm: str) -> str | None:
        """The built-in adapter the implementation of `norm` declares it wraps, or None."""
        impl = self.implementations.get(norm)
        return impl.wraps if impl is not None else None

    def environment(self) -> dict:
        return {
            "adapter": self.name,
            "framework": "plug-in",
            "version": None,
            "implementations": {norm: impl.label for norm, impl in self.implementations.items()},
        }

    def _run(self, norm, x, params, dtype, cotangent):
        impl = self.implementations[norm]
        taken, declaration = impl.parameters, self.declarations[norm]
        held = declaration.parameter_dtype(dtype)  # float32 under a mixed policy (MP.P1)
        fixed = {**_reference_defaults(norm), **{c.key: c.value for c in declaration.conventions}}
        arrays = impl.converter()
        plain, differentiable = {}, {}
        for key, value in params.items():
            refused = impl.refuses.get(key, ())
            require(
                not any(_same(value, r) for r in refused),
                f"{impl.label} refuses {key}={value!r} (declared: refuses={{{key!r}: {list(refused)!r}}})",
            )
            if key in taken:
                if key == "scale" and impl.scale_form == "one_plus" and value is not None:
                    # the strategy drew weight in the dtype: scale - 1 recovers it exactly (RMS.N3)
                    differentiable[key] = arrays.to(np.asarray(value) - 1.0, held)
                elif isinstance(value, np.ndarray) and key in ARRAY_PARAMETERS:
                    differentiable[key] = arrays.to(value, held)
                elif isinstance(value, R.RunningStats):
                    plain[key] = R.RunningStats(
                        arrays.to(value.mean, held), arrays.to(value.var, held), value.num_batches_tracked
                    )
                else:
                    plain[key] = value
            elif key in STATE_ONLY and key in _irrelevant(impl):
                continue
            else:
                require(
                    _same(value, fixed.get(key), x.ndim if key in AXIS_PARAMETERS else None),
                    _not_taken(impl, key, fixed.get(key), value),
                )
        differentiable["x"] = arrays.to(x, dtype)

        def call(**inputs):
            return impl.fn(inputs.pop("x"), **inputs, **plain)

        result = call(**differentiable)
        y, state = result if declaration.stateful and isinstance(result, tuple) else (result, None)
        out = declaration.output_dtype(dtype)
        _check_output(impl, y, dtype, x.shape, out=out)
        outcome = Outcome(arrays.back(y), _state(state, arrays) if state is not None else None, dtype=out)
        if cotangent is not None:
            grads = arrays.vjp(
                lambda **inputs: _output(call(**inputs), declaration.stateful),
                differentiable,
                arrays.to(cotangent, out),
            )
            outcome.grads = R.Grads(
                *(None if grads.get(k) is None else arrays.back(grads[k]) for k in ("x", "scale", "offset"))
            )
        return outcome


AXIS_PARAMETERS = ("axes", "channel_axis")  # compared as axes of the input: -3 is 1 for a rank-4 input


def _not_taken(impl: Implementation, key: str, fixed, value) -> str:
    """Why an example is not run: it draws `value` for a parameter the function does not take. The same
    words for every such example (an array is named, not printed), and a hint that works."""
    if key in ARRAY_PARAMETERS:
        return f"{impl.label} takes no {key}: examples that draw {key} are not run (the others are judged)"
    shown = f"{type(value).__name__}" if isinstance(value, (np.ndarray, R.RunningStats)) else repr(value)
    return (
        f"{impl.label} takes no {key}: it computes {key}={fixed!r}, not {shown} (take `{key}` as a "
        f"keyword, or declare conventions={{{key!r}: ...}} with the value it computes)"
    )


def _check_output(impl: Implementation, y, dtype: str, shape: tuple, *, out: str | None = None) -> None:
    """The protocol: y is an array of the input's `dtype` - or of the output dtype `out` its policy
    declares (a wider or narrower one would be compared as if it were what the implementation computes)
    - and of the input's shape."""
    out = out or dtype
    protocol = "the plug-in protocol, adapters/plugin.py"
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise ProtocolError(f"{impl.label} returned a {type(y).__name__}, not an array ({protocol})")
    if tuple(y.shape) != tuple(shape):
        raise ProtocolError(
            f"{impl.label} returned shape {tuple(y.shape)} for an input of shape {tuple(shape)}: y must "
            f"have the input's shape ({protocol})"
        )
    # numpy/jax/TF dtypes have a name; torch, paddle, mlx print "module.float32"
    got = (getattr(y.dtype, "name", None) or str(y.dtype)).rsplit(".", 1)[-1]
    if got != out:
        declared = "" if out == dtype else f", where its policy declares {out} output (MP.N2)"
        raise ProtocolError(
            f"{impl.label} returned {got} for a {dtype} input{declared}: y must be an array of the input's "
            f"dtype, or of the output dtype its policy declares ({protocol})"
        )


def _irrelevant(impl: Implementation) -> tuple[str, ...]:
    stateless = impl.norm in ("batch_norm", "instance_norm") and "state" not in impl.parameters
    return STATE_ONLY if stateless else ()


def _output(result, stateful: bool):
    return result[0] if stateful and isinstance(result, tuple) else result


def _state(state, arrays: Arrays) -> R.RunningStats:
    mean, var = (state.mean, state.var) if hasattr(state, "mean") else state[:2]
    tracked = getattr(state, "num_batches_tracked", 0)
    return R.RunningStats(arrays.back(mean), arrays.back(var), int(tracked))


def _same(value, fixed, ndim: int | None = None) -> bool:
    """Whether a drawn value is the fixed one (axes compared as the axes of a rank-`ndim` input)."""
    if value is None or fixed is None:
        return value is None and fixed is None
    if ndim is not None:
        return sorted(a % ndim for a in np.atleast_1d(value)) == sorted(
            a % ndim for a in np.atleast_1d(fixed)
        )
    if isinstance(value, (tuple, list)) or isinstance(fixed, (tuple, list)):
        return tuple(np.atleast_1d(value)) == tuple(np.atleast_1d(fixed))
    return value == fixed


# ---------------------------------------------------------------------------------------------
# Loading: "path/to/file.py[:obj]", "package.module[:obj]", or an installed entry point.

ENTRY_POINT_GROUP = "normconf.adapters"


class PluginError(Exception):
    """A plug-in that cannot be loaded or does not follow the protocol; the message says which and why."""


class ProtocolError(PluginError):
    """A loaded plug-in answered outside the protocol (not an array, or not of the input's dtype)."""


def is_spec(name: str) -> bool:
    """Whether an adapter name points at a plug-in (a file or module) rather than a built-in adapter."""
    return name.endswith(".py") or ":" in name


def load(spec: str) -> Adapter:
    """The adapter `spec` points at: an Adapter (instance or class), an @implementation, a list of
    them, or (no `:obj`) every one a file or module defines."""
    where, _, attribute = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    module = _import(where)
    if attribute:
        try:
            obj = _resolve(module, attribute)
        except AttributeError:
            raise PluginError(f"{spec}: {where} has no {attribute!r}") from None
        return as_adapter(obj, spec)
    found = [v for v in vars(module).values() if isinstance(v, Implementation)]
    classes = [v for v in vars(module).values() if isinstance(v, Adapter)]
    if classes and not found:
        if len(classes) > 1:
            raise PluginError(f"{spec}: defines {len(classes)} adapters; name one with {spec}:<name>")
        return as_adapter(classes[0], spec)
    if not found:
        raise PluginError(
            f"{spec}: defines no @implementation functions and no Adapter instance "
            f"(see normconf.adapters.plugin)"
        )
    return as_adapter(found, spec)


def as_adapter(obj, name: str) -> Adapter:
    """`obj` (Adapter instance or class, Implementation, or a sequence of Implementations) as an adapter."""
    if isinstance(obj, type) and issubclass(obj, Adapter):
        obj = obj()
    if isinstance(obj, Adapter):
        if not obj.name:
            obj.name = name
        _check_protocol(obj, name)
        return obj
    if isinstance(obj, Implementation):
        obj = [obj]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(o, Implementation) for o in obj):
        return FunctionAdapter(name, obj)
    raise PluginError(
        f"{name}: is a {type(obj).__name__}, not an @implementation, a list of them, or an Adapter "
        f"(see normconf.adapters.plugin)"
    )


def _check_protocol(adapter: Adapter, name: str) -> None:
    """A full-form adapter declares known norms and dtypes and has a runner for each norm."""
    for norm, declaration in adapter.declarations.items():
        if norm not in NORMS:
            raise PluginError(f"{name}: declares unknown norm {norm!r} (one of {', '.join(NORMS)})")
        if not isinstance(declaration, NormDeclaration):
            raise PluginError(
                f"{name}: declarations[{norm!r}] is a {type(declaration).__name__}, not a NormDeclaration"
            )
        bad = sorted(set(declaration.dtypes) - set(DTYPES))
        if bad:
            raise PluginError(f"{name}: {norm} declares unknown dtypes {bad}")
        if type(adapter)._run is Adapter._run and not callable(getattr(adapter, f"_run_{norm}", None)):
            raise PluginError(f"{name}: declares {norm} but has no _run_{norm} method")


def _import(where: str):
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise PluginError(f"{where}: no such file")
        module_name = f"normconf_plugin_{abs(hash(str(path)))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.parent))  # its own imports of neighbouring files work
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise PluginError(f"{where}: importing it raised {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise PluginError(f"{where}: cannot import ({exc})") from exc


def _resolve(module, attribute: str):
    obj = module
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def entry_points() -> dict:
    """Installed plug-ins: {name: entry point} of the `normconf.adapters` group."""
    from importlib.metadata import entry_points as installed

    return {ep.name: ep for ep in installed(group=ENTRY_POINT_GROUP)}


def load_entry_point(name: str) -> Adapter:
    point = entry_points()[name]
    try:
        obj = point.load()
    except Exception as exc:
        raise PluginError(
            f"entry point {name} ({point.value}): loading it raised {type(exc).__name__}: {exc}"
        ) from exc
    return as_adapter(obj, name)
