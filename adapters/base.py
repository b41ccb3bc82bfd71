"""The adapter protocol: one framework implementation behind canonical parameters.

An adapter declares, as data, what it supports and how the framework's conventions map onto the
spec's (each fact with the source it was read from), and runs the framework the way a user would:
NumPy arrays and canonical parameters in, NumPy float64 outputs (and new state, and gradients) out.
A configuration the framework cannot express raises `Unsupported` with the reason; nothing is
approximated.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from normconf.reference import NORMS as RECORDS
from normconf.reference import Grads, RunningStats

from . import _counters, plan

NORMS = tuple(RECORDS)  # every norm's name, in the records' order (normconf.reference.norms)
DTYPES = ("float16", "bfloat16", "float32", "float64")


class Unsupported(Exception):
    """The framework cannot express this canonical configuration; the message says why."""


@dataclass(frozen=True)
class Convention:
    """One declared fact: a canonical parameter or behaviour, the framework's name for it, the value
    the framework uses expressed canonically, and where that was read."""

    key: str  # canonical parameter or behaviour: "eps", "momentum", "running_var", "eps_placement", ...
    framework_name: str  # the framework's own name for it ("epsilon", "decay_rate", "—" where implicit)
    value: Any  # the framework's default or fixed behaviour, in canonical terms
    source: str  # URL of the source or docs it was read from
    clause: str | None = None  # the divergence clause explaining a difference from the canonical default
    note: str = ""  # how the mapping works, when it is not a rename ("canonical = 1 - momentum")

    @property
    def fixed(self) -> bool:
        """A behaviour the framework fixes, with no parameter to change it (framework_name "— ...")."""
        return self.framework_name.startswith("—")


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A mixed-precision policy as the framework's users turn it on (spec MP.P1): activations in a half
    type, parameters and running statistics in float32. Per norm, the declaration says what the policy
    leaves in which dtype (`parameters`, `accumulation`, `output`)."""

    name: str = "mixed"  # the canonical policy (POLICIES)
    mechanism: str  # what users write: 'torch.autocast("cpu", dtype=torch.bfloat16)'
    source: str  # where it was read, pinned to a tag or commit


POLICIES = ("none", "mixed")  # `--policies`: "none" selects the adapters that run without one


@dataclass(frozen=True, kw_only=True)
class NormDeclaration:
    """What one adapter offers for one norm."""

    norm: str  # one of NORMS
    api: str  # what a user calls: "torch.nn.BatchNorm2d"
    dtypes: tuple[str, ...]  # input dtypes the framework accepts for it
    conventions: tuple[Convention, ...]
    accumulation: dict[str, str] = field(default_factory=dict)  # input dtype -> dtype the statistics use
    gradients: bool = False  # gradients via the framework's autodiff
    stateful: bool = False  # keeps running statistics
    # canonical array parameters the call compiles into its program as constants (Keras' Normalization
    # takes mean and variance as constructor arguments): for a compiling adapter they are configuration,
    # drawn from the program pool with the shape (conformance/regimes.py)
    constants: tuple[str, ...] = ()
    # how the implementation stores its scale (RMS.N3): "as_is" (y = x-hat * scale) or "one_plus" (it
    # holds weight = scale - 1 and computes x-hat * (1 + weight), as Gemma's RMSNorm): the suite then
    # draws weight in the tested dtype and the reference takes scale = 1 + weight exactly
    scale_form: str = "as_is"
    # Under a mixed policy (MP.P1): the dtype scale, offset and the running statistics are held in
    # (float32), and input dtype -> the output's dtype where it is not the input's (MP.N2). None and {}:
    # the input's dtype, as without a policy.
    parameters: str | None = None
    output: dict[str, str] = field(default_factory=dict)

    def parameter_dtype(self, dtype: str) -> str:
        """The dtype the parameters and running statistics of a `dtype` call are held in."""
        return self.parameters or dtype

    def output_dtype(self, dtype: str) -> str:
        """The dtype the output of a `dtype` input comes out in (MP.N2)."""
        return self.output.get(dtype, dtype)

    def statistics_dtype(self, dtype: str) -> str:
        """The dtype the statistics of a `dtype` input are taken in (`accumulation`; the input's)."""
        return self.accumulation.get(dtype, dtype)

    def budget_dtypes(self, dtype: str) -> dict[str, str]:
        """The forward budget's dtypes for a `dtype` input (NUM.N5, MP.N1): checks.budget(**...)."""
        return {"acc_dtype": self.statistics_dtype(dtype), "out_dtype": self.output_dtype(dtype)}

    def state_budget_dtypes(self, dtype: str) -> dict[str, str]:
        """The running statistics' budget's (NUM.N5, MP.N1): batch statistics in the statistics' dtype,
        the state held in the parameters' - budgets.state_budget(**...)."""
        return {"acc_dtype": self.statistics_dtype(dtype), "out_dtype": self.parameter_dtype(dtype)}

    def gradient_budget_dtypes(self, dtype: str) -> dict[str, str]:
        """The gradient budget's (NUM.N8, MP.N1): dx in the input's dtype, dscale and doffset in the
        parameters' - checks.gradient_budget(**...)."""
        return {
            "acc_dtype": self.statistics_dtype(dtype),
            "out_dtype": dtype,
            "parameter_dtype": self.parameter_dtype(dtype),
        }

    def defaults(self) -> dict[str, Any]:
        """The framework's defaults as canonical keyword arguments (what a no-argument call means)."""
        return {c.key: c.value for c in self.conventions if c.key in CANONICAL_PARAMETERS.get(self.norm, ())}

    def fixed(self) -> dict[str, Any]:
        """Canonical parameters the framework pins to one value (a strategy must draw exactly these)."""
        return {
            c.key: c.value
            for c in self.conventions
            if c.fixed and c.key in CANONICAL_PARAMETERS.get(self.norm, ())
        }

    def convention(self, key: str) -> Convention:
        for c in self.conventions:
            if c.key == key:
                return c
        raise KeyError(f"{self.api} declares no convention {key!r}")


def under_policy(
    declarations: Mapping[str, NormDeclaration],
    norms: tuple[str, ...],
    dtypes: tuple[str, ...],
    *,
    parameters: str = "float32",
    accumulation: Mapping[str, str] | None = None,
    output: Mapping[str, str] | None = None,
) -> dict[str, NormDeclaration]:
    """A policy adapter's declarations (MP.P1): its plain sibling's for `norms`, taking the half types
    `dtypes` it runs the policy in, parameters and running statistics held in `parameters`, the
    statistics' dtype and the output's where the policy changes them from the plain declaration's."""
    return {
        norm: replace(
            declarations[norm],
            dtypes=tuple(d for d in dtypes if d in declarations[norm].dtypes),
            parameters=parameters,
            accumulation={**declarations[norm].accumulation, **(accumulation or {})},
            output=dict(output or {}),
        )
        for norm in norms
    }


# Divisor conventions (BN.P8, RMS.P4) no framework covered departs from: the suite draws them only where
# a declaration fixes them, and an adapter is never handed a value it has not declared.
DIVISOR_CONVENTIONS = {"normalize_var": "biased", "eps_placement": "inside_sqrt"}
SCALE_FORMS = ("as_is", "one_plus")  # NormDeclaration.scale_form
DIVISOR_NORMS = tuple(name for name, norm in RECORDS.items() if norm.divisor)

# The canonical keyword parameters of each reference function that a framework default can set.
CANONICAL_PARAMETERS = {name: norm.defaultable for name, norm in RECORDS.items()}


class Params(Mapping):
    """One call's canonical parameters, resolved once: every keyword parameter of the norm's reference
    function, with the reference's own default where the call gave none (a parameter the reference
    requires stays absent unless given). Read-only; `params.eps`, `params["eps"]` and `params.get("eps")`
    agree, so no adapter re-defaults a canonical parameter."""

    __slots__ = ("_values",)

    def __init__(self, norm: str, given: Mapping, omit: tuple[str, ...] = ()):
        known = RECORDS[norm].parameters()
        unknown = set(given) - set(known)
        if unknown:
            raise TypeError(f"{norm} takes no parameter {', '.join(sorted(unknown))}")
        defaults = {k: v for k, v in known.items() if v is not inspect.Parameter.empty}
        values = {k: v for k, v in {**defaults, **given}.items() if k not in omit}
        object.__setattr__(self, "_values", values)

    def __getitem__(self, key: str):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        raise AttributeError("Params are read-only: build new ones with {**params, key: value}")

    def __reduce__(self):  # pickled for isolated and replica children as the plain mapping it holds
        return (_params_from_values, (self._values,))

    def __repr__(self) -> str:
        return f"Params({self._values!r})"


def _params_from_values(values: dict) -> "Params":
    params = object.__new__(Params)
    object.__setattr__(params, "_values", dict(values))
    return params


@dataclass
class Outcome:
    """What a framework returned, converted to float64 NumPy."""

    y: np.ndarray
    state: RunningStats | None = None
    grads: Grads | None = None
    dtype: str | None = None  # the output's dtype as the framework returned it (NumPy's name), if read


class Adapter:
    """Base class: subclasses set the class attributes and implement `_run_<norm>` methods.

    `_run_<norm>(x, params, dtype, cotangent)` gets x as float64 NumPy, the canonical parameters of the
    reference function, the input dtype name, and an optional output cotangent; it returns an Outcome.
    """

    name: str = ""  # unique, e.g. "torch.functional"
    family: str = ""  # the extra that installs it: "torch", "tensorflow", "jax", "onnx"
    requires: tuple[str, ...] = ()  # importable module names the adapter needs
    declarations: dict[str, NormDeclaration] = {}
    # Relative cost of the adapter's run, the order workers claim adapters in (conformance/workers.py):
    # tens of seconds of the quick profile on the 2-core machine, two workers, calls isolated, JAX
    # compilation cache cold as in CI (the results' per-test `seconds`, summed; `normconf bench
    # --sections rate`). Measured 2026-12-02; 1 where not measured.
    cost: float = 1.0
    # Compiles a program per configuration and shape before it runs one (the JAX family, Keras on JAX):
    # its suite rate is bounded by compilation, not by the call (bench's targets differ).
    compiles: bool = False
    # The libraries whose ISA caps (NORMCONF_MAX_ISA: _cpu.SWITCHES) reach the adapter's kernels: where
    # none does, a capped run computes exactly what a native one does (the AVX2 gate leaves it out).
    isa_capped: tuple[str, ...] = ()
    # The divergence clause of a running-average schedule the canonical constant momentum cannot express
    # (haiku's zero-debiased averages, BN.D9): `run_own_schedule` follows it anyway (the porting hazards).
    own_schedule: str = ""
    _own_schedule_on: bool = False
    # The mixed-precision policy this adapter runs its norms under (spec MP.P1), None for none: a policy
    # adapter is its plain adapter's sibling (name "<plain>@mixed") whose declarations say what the
    # policy keeps in float32 and what comes out.
    policy: Policy | None = None

    def parameter_dtype(self, norm: str, dtype: str) -> str:
        """The dtype this adapter holds `norm`'s parameters and running statistics in for a `dtype`
        input: the input's, or float32 under a mixed policy (NormDeclaration.parameters)."""
        return self.declarations[norm].parameter_dtype(dtype)

    @property
    def policy_name(self) -> str:
        """The policy's name, "mixed", or "none" (POLICIES): what results record and `--policies` selects."""
        return self.policy.name if self.policy is not None else "none"

    def available(self) -> tuple[bool, str]:
        """(True, "") when every required module is importable, else (False, reason). Imports nothing."""
        missing = [m for m in self.requires if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed (pip install 'normconf[{self.family}]')"
        return True, ""

    def startup(self) -> str:
        """Python that imports this adapter's framework in a fresh process (bench's start-up figure)."""
        return "; ".join(f"import {module}" for module in self.requires)

    def cannot_run(self, norm: str) -> str:
        """Why this machine cannot run `norm` at all (its cells are skipped with the reason), or ""."""
        return ""

    def environment(self) -> dict[str, Any]:
        """Framework version, device and precision flags; subclasses add what they know."""
        return {"adapter": self.name}

    def counters(self) -> dict:
        """The framework's work in this process so far: {"compilations": n} where JAX runs."""
        return _counters.snapshot()

    def no_argument_calls(self) -> dict:
        """norm -> call(x, hints, dtype) -> (Outcome, implied): the framework's layer or function given
        only what it requires (from `hints`: groups, size), so that its own defaults apply; stateful
        layers run one step in their default mode. `implied` holds the canonical parameters the call
        fixes beyond the declared defaults (the initial state, training or not, affine inputs)."""
        return {}

    def run_framework_defaults(self, norm: str, x, hints: dict, *, dtype: str):
        """The framework's no-argument call on x (see `no_argument_calls`): (Outcome, implied)."""
        call = self.no_argument_calls().get(norm)
        if call is None:
            raise Unsupported(f"{self.name} declares no no-argument call for {norm}")
        if dtype not in self.declarations[norm].dtypes:
            raise Unsupported(f"{self.declarations[norm].api} does not take {dtype} inputs")
        return call(np.asarray(x, dtype=np.float64), dict(hints), dtype)

    def framework_repro(self, norm: str, x, params: dict, *, dtype: str, cotangent=None) -> str | None:
        """Python code that makes the same framework call with the framework alone (no normconf), for a
        bug report upstream: the rendered plan of a `_run_<norm>` that returns one (plan.py); None where
        the adapter cannot write one."""
        planned = self._run(norm, *self._resolved(norm, x, params, dtype, cotangent), dtype, cotangent)
        return self.render_plan(planned.plan) if isinstance(planned, plan.Planned) else None

    def execute_plan(self, planned) -> plan.Executed:
        """Run a plan (plan.Plan, or a family's own plan record where it overrides this and render_plan)."""
        return plan.execute(planned)

    def render_plan(self, planned) -> str:
        """The framework-alone script of a plan (the same record `execute_plan` runs)."""
        return plan.render(planned)

    def supports(self, norm: str) -> bool:
        return norm in self.declarations

    def run(self, norm: str, x, params: dict, *, dtype: str = "float64", cotangent=None) -> Outcome:
        """Run `norm` on x with canonical `params`, computing in `dtype`; gradients when given a cotangent."""
        result = self._run(norm, *self._resolved(norm, x, params, dtype, cotangent), dtype, cotangent)
        if not isinstance(result, plan.Planned):
            return result
        executed = self.execute_plan(result.plan)
        outcome = result.outcome(executed)
        if outcome.dtype is None:
            outcome.dtype = executed.y_dtype
        return outcome

    def run_own_schedule(self, norm: str, x, params: dict, *, dtype: str = "float64") -> Outcome:
        """`run`, except that a training step follows the framework's own running-average schedule where
        `own_schedule` names one the canonical momentum cannot express: a trajectory of what users of the
        framework get, for the porting hazards - never a conformance verdict."""
        self._own_schedule_on = True
        try:
            return self.run(norm, x, params, dtype=dtype)
        finally:
            self._own_schedule_on = False

    def _resolved(self, norm: str, x, params: dict, dtype: str, cotangent) -> tuple[np.ndarray, Params]:
        """x as float64 and the call's resolved Params, once the declaration is known to cover the call."""
        declaration = self.declarations.get(norm)
        if declaration is None:
            raise Unsupported(f"{self.name} has no {norm}")
        if dtype not in declaration.dtypes:
            raise Unsupported(f"{declaration.api} does not take {dtype} inputs")
        if cotangent is not None and not declaration.gradients:
            raise Unsupported(f"{declaration.api} has no gradients here")
        params = dict(params)
        if norm in DIVISOR_NORMS:  # a divisor convention is the declared (or canonical) one, then implicit
            fixed = declaration.fixed()
            for key, canonical in DIVISOR_CONVENTIONS.items():
                value = params.pop(key, canonical)
                require(
                    value == fixed.get(key, canonical),
                    f"{declaration.api} computes {key}="
                    f"{fixed.get(key, canonical)!r}, not {value!r} "
                    f"({'RMS.P4' if norm == 'rms_norm' else 'BN.P8'})",
                )
        omit = tuple(DIVISOR_CONVENTIONS) if norm in DIVISOR_NORMS else ()  # checked above, implicit now
        return np.asarray(x, dtype=np.float64), Params(norm, params, omit)

    def _run(self, norm: str, x: np.ndarray, params: Params, dtype: str, cotangent) -> Outcome | plan.Planned:
        """Dispatch to the `_run_<norm>` method (a plug-in may run every norm in one method instead): an
        Outcome, or a Planned call that `run` executes and `framework_repro` renders."""
        return getattr(self, f"_run_{norm}")(x, params, dtype, cotangent)


def stepped(state: RunningStats | None, training: bool, read):
    """The `finish` of a stateful layer's plan: y, the gradients, and the running statistics after the
    call - `read(executed) -> (mean, var)` - counted one step further when it trained (a layer that
    keeps no counter, InstanceNorm's, still advances the canonical one); no state without one."""

    def finish(executed, grads) -> Outcome:
        new_state = None
        if state is not None:
            mean, var = read(executed)
            tracked = state.num_batches_tracked + int(training)
            new_state = RunningStats(as_float64(mean), as_float64(var), tracked)
        return Outcome(executed.y, new_state, grads)

    return finish


def require(condition: bool, reason: str) -> None:
    """Raise Unsupported(reason) unless `condition`: a canonical configuration the framework lacks."""
    if not condition:
        raise Unsupported(reason)


def f32(value: float) -> float:
    """`value` as a 32-bit float attribute (ONNX's AttributeProto.f, a C++ `float` op attribute) stores it."""
    return float(np.float32(value))


def float32_attribute(value: float, dtype: str, what: str) -> float:
    """A value the framework passes as a 32-bit float: exact in a float64 run only when it is a float32
    number, otherwise unsupported there (`what` says whose attribute and which clause)."""
    value = float(value)
    require(
        dtype != "float64" or f32(value) == value,
        f"{what} is a 32-bit float: {value!r} would become {f32(value)!r}, "
        "so a float64 run cannot use it exactly",
    )
    return value


def channel_axis_of(x: np.ndarray, params: dict, default: int = 1) -> int:
    """The non-negative channel axis of canonical `params` for input x."""
    return params.get("channel_axis", default) % x.ndim


def trailing(axes, ndim: int) -> int | None:
    """How many trailing axes `axes` names, or None when they are not exactly the trailing ones."""
    normalized = sorted(a % ndim for a in ((axes,) if isinstance(axes, int) else axes))
    return len(normalized) if normalized == list(range(ndim - len(normalized), ndim)) else None


def as_float64(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)
