"""What a framework computes where a known divergence holds, and how closely it must agree.

A known divergence is a model, never an excuse: a failing comparison counts as that divergence only
when the framework's answer agrees with the entry's model within the model's budget; otherwise it is a
finding, which names the divergence considered and by how much the framework missed it.

A model judges observations - the framework's answer for one quantity (`y`, the running `mean` or
`var`, the gradient of `x`, `scale` or `offset`) of one case, with the property's elementwise budget.
Its `kind` is the severity the report shows: "semantic" (differs in exact arithmetic: conventions,
axes, state), "precision" (only in low precision or on ill-conditioned inputs), "special" (NaN, ±inf,
degenerate inputs the framework refuses).

- `Raises`: the framework refuses the input with an exception.
- `Reference`: the spec's reference under other parameters or conventions, held to the budget.
- `Computes`: a NumPy model of the divergent arithmetic, exact up to rounding: held to the budget.
- `Simulated`: a NumPy simulation of arithmetic whose rounding depends on summation order (one-pass
  variance, half-precision statistics): held to the budget plus `slack` times the simulated
  divergence's own size (its largest distance from the reference) - a quantitative envelope.
- `Bounded`: arithmetic the entry can only bound: within `rel` of the reference's magnitude.
- `OneOf`: several behaviours of one entry (it raises, or computes as another model says).
- `Envelope`: the divergent arithmetic breaks only the elements `affected(case, dtype)` marks (an
  overflow's statistic groups, an underflowing window): there the answer may be non-finite or zero
  (`allowed`), everywhere else it is held to the reference and the budget.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normconf import reference as R

from . import tolerances as T
from .case import Case

KINDS = ("semantic", "precision", "special")
QUANTITIES = ("y", "mean", "var", "x", "scale", "offset", "raised")


def quantity(what: str) -> str:
    """The quantity a verdict's `what` names: "y", "mean", "var", "x", "scale", "offset" or "raised"."""
    if what.startswith(("refuses the input", "raised", "crashed", "timed out")):
        return "raised"
    if "state.mean" in what:
        return "mean"
    if "state.var" in what:
        return "var"
    for key in ("x", "scale", "offset"):
        if what.startswith(f"d{key}"):
            return key
    return "y"


@dataclass(frozen=True)
class Observation:
    """The framework's answer for one quantity of one case, with the property's elementwise budget."""

    case: Case
    quantity: str
    actual: Any  # float64 array, or None when it raised
    bound: Any
    message: str = ""  # what it raised


@dataclass(frozen=True)
class Judged:
    agrees: bool
    miss: float  # the worst error against the model over its budget (inf: another kind of outcome)
    where: str = ""  # what missed: the quantity and element


def reference_value(case: Case, which: str, changes: dict | None = None):
    """The reference's `which` ("y", "mean", "var", "x", "scale", "offset") for the case, with its
    parameters changed by `changes` (for x/scale/offset: the VJP of the case's cotangent)."""
    params = {**case.params, **(changes or {})}
    with np.errstate(all="ignore"):
        if which in ("x", "scale", "offset"):
            grads = getattr(R, f"{case.norm}_vjp")(case.cotangent, case.x, **params)
            return getattr(grads, which)
        out = getattr(R, case.norm)(case.x, **params)
    if which in ("mean", "var"):
        return getattr(out.state, which)
    return getattr(out, "y", out)


def _closest(observation: Observation, model) -> np.ndarray:
    """Per element, the model's value or the reference's, whichever the framework's answer is nearer."""
    reference = np.asarray(reference_value(observation.case, observation.quantity), dtype=np.float64)
    actual, model = np.asarray(observation.actual, dtype=np.float64), np.asarray(model, dtype=np.float64)
    if actual.shape != model.shape or actual.shape != reference.shape:
        return model
    with np.errstate(all="ignore"):
        nearer = np.abs(actual - model) <= np.abs(actual - reference)
    return np.where(nearer | ~np.isfinite(reference), model, reference)


def _clamped(observation: Observation, model) -> np.ndarray:
    """Per element, the framework's answer clamped into [min, max] of the model and the reference: its
    distance from that interval is what the budget judges."""
    reference = np.asarray(reference_value(observation.case, observation.quantity), dtype=np.float64)
    actual, model = np.asarray(observation.actual, dtype=np.float64), np.asarray(model, dtype=np.float64)
    if actual.shape != model.shape or actual.shape != reference.shape:
        return model
    with np.errstate(all="ignore"):
        return np.clip(actual, np.minimum(model, reference), np.maximum(model, reference))


def own_rounding(model, dtype: str) -> np.ndarray:
    """The rounding a model's own answer carries in `dtype` (SAFETY ulps of it): what every model is
    allowed beyond the property's budget, which is sized for the reference's answer."""
    with np.errstate(all="ignore"):
        size = np.nan_to_num(np.abs(np.asarray(model, dtype=np.float64)), nan=0.0, posinf=0.0)
    return T.SAFETY * T.unit_roundoff(dtype) * size


def _against(observation: Observation, model, bound, dtype: str) -> Judged:
    """The answer against the model's: the property's budget (sized for the reference's answer), plus
    the rounding of the model's own answer in the dtype - a model far from the reference in magnitude
    (an unnormalized channel) is held to its own size, as NUM.N5 holds the reference to its."""
    if observation.actual is None or model is None:
        return Judged(False, math.inf, f"{observation.quantity}: no answer to compare")
    bound = np.asarray(bound, dtype=np.float64) + own_rounding(model, dtype)
    comparison = T.compare(observation.actual, model, bound, dtype)
    return Judged(comparison.passed, comparison.ratio, f"{observation.quantity} at {comparison.index}")


@dataclass(frozen=True)
class Model:
    kind: str = field(default="precision", kw_only=True)  # the severity: one of KINDS

    def judge(self, observations, dtype: str) -> Judged:
        """Agreement of every observation: the first that does not agree, else the closest call."""
        judged = [self._judged(observation, dtype) for observation in observations]
        missed = [j for j in judged if not j.agrees]
        return missed[0] if missed else max(judged, key=lambda j: j.miss, default=Judged(True, 0.0))

    def _judged(self, observation: Observation, dtype: str) -> Judged:
        """judge_one, where a model undefined on the case (its reference refuses the changed
        parameters, shapes that do not broadcast) agrees with nothing."""
        try:
            return self.judge_one(observation, dtype)
        except (R.ClauseError, ValueError, TypeError) as exc:
            return Judged(False, math.inf, f"the model is not defined here: {exc}")

    def judge_one(self, observation: Observation, dtype: str) -> Judged:
        raise NotImplementedError

    def width(self, observation: Observation, dtype: str):
        """How far beyond the budget, elementwise, this model lets an answer stray from its prediction:
        its own uncertainty (0 for an exact model; inf where no digit is left). A bug smaller than
        this is indistinguishable from the divergence."""
        return 0.0

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Raises(Model):
    """The framework raises (or, isolated, crashes) on these inputs; any answer is not this divergence."""

    pattern: str | tuple = ""  # a substring (or one of several) the exception's message holds ("": any)
    kind: str = field(default="special", kw_only=True)

    def judge_one(self, observation, dtype):
        if observation.quantity != "raised":
            return Judged(False, math.inf, f"{observation.quantity}: an answer where it should raise")
        patterns = (self.pattern,) if isinstance(self.pattern, str) else self.pattern
        if self.pattern and not any(p in observation.message for p in patterns):
            return Judged(False, math.inf, f"raised something else: {observation.message[:200]}")
        return Judged(True, 0.0)


@dataclass(frozen=True)
class Reference(Model):
    """The reference with `changes(case, dtype) -> {parameter: value}` (another convention, axes, a
    state the framework uses instead); quantities it does not change must match as they are."""

    changes: Callable[[Case, str], dict] = field(default=lambda case, dtype: {})
    kind: str = field(default="semantic", kw_only=True)

    def judge_one(self, observation, dtype):
        if observation.quantity == "raised":
            return Judged(False, math.inf, "raised where the model gives an answer")
        changes = self.changes(observation.case, dtype)
        try:
            model = reference_value(observation.case, observation.quantity, changes)
        except R.ClauseError as exc:
            return Judged(False, math.inf, f"the model is not defined here: {exc}")
        return _against(observation, model, observation.bound, dtype)


@dataclass(frozen=True)
class Computes(Model):
    """`compute(case, dtype, quantity)` -> the framework's answer as the divergent arithmetic gives it
    (None: this model says nothing about that quantity, which must then match the reference)."""

    compute: Callable = field(default=lambda case, dtype, which: None)
    # the loss reaches some elements only (an underflow in some statistics): each element agrees with
    # the model or with the reference
    either: bool = field(default=False, kw_only=True)
    # the loss is partial (a term kept with the few bits a subnormal leaves it): anywhere between the
    # model and the reference
    between: bool = field(default=False, kw_only=True)
    # a second divergence's error on top of this model's answer: absolute(case, dtype, which), elementwise
    absolute: Callable | None = field(default=None, kw_only=True)
    # the model's own arithmetic is conditioned otherwise than the reference's (another normalization:
    # running averages in place of batch statistics): its answer is also allowed SAFETY x how far it
    # moves under relative perturbations of x (and the cotangent) of u(dtype) growth(n) - NUM.N8's
    # first-order budget applied to the model instead of the reference
    conditioned: bool = field(default=False, kw_only=True)

    def model_value(self, case, dtype, which):
        with np.errstate(all="ignore"):
            value = self.compute(case, dtype, which)
        return reference_value(case, which) if value is None else value

    def width(self, observation, dtype):
        """`between`: the interval from the model to the reference; `absolute`: its widening."""
        case, which = observation.case, observation.quantity
        width = np.zeros(np.shape(observation.actual))
        with np.errstate(all="ignore"):
            if self.between or self.either:
                gap = np.abs(
                    np.asarray(self.model_value(case, dtype, which))
                    - np.asarray(reference_value(case, which))
                )
                width = width + (gap if self.between else 0.0)
            if self.absolute is not None:
                extra = self.absolute(case, dtype, which)
                width = width + (0.0 if extra is None else np.asarray(extra))
        return np.nan_to_num(width, nan=np.inf)

    def judge_one(self, observation, dtype):
        if observation.quantity == "raised":
            return Judged(False, math.inf, "raised where the model gives an answer")
        model = self.model_value(observation.case, dtype, observation.quantity)
        if self.either and observation.actual is not None:
            model = _closest(observation, model)
        if self.between and observation.actual is not None:
            model = _clamped(observation, model)
        bound = observation.bound
        if self.absolute is not None:
            extra = self.absolute(observation.case, dtype, observation.quantity)
            bound = bound if extra is None else np.asarray(bound) + np.asarray(extra)
        if self.conditioned:
            bound = np.asarray(bound) + self.own_spread(observation.case, dtype, observation.quantity)
        return _against(observation, model, bound, dtype)

    def own_spread(self, case: Case, dtype: str, which: str) -> np.ndarray:
        """SAFETY x the model's answer's first-order move under relative perturbations of x and the
        cotangent of u(dtype) growth(n) (NUM.N8, the reference's budget applied to the model)."""
        n = R.NORMS[case.norm].reduction_length(case.x, case.params)
        rel = T.unit_roundoff(dtype) * T.growth(n)
        arrays = {"x": case.x, **({"g": case.cotangent} if case.cotangent is not None else {})}

        def answer(x, g=None):
            moved = Case(case.norm, x, case.params, case.kind, cotangent=g)
            return {"v": np.asarray(self.model_value(moved, dtype, which), dtype=np.float64)}

        return T.SAFETY * T.perturbation_spread(answer, arrays, rel)["v"]


@dataclass(frozen=True)
class Simulated(Computes):
    """As Computes, for arithmetic whose rounding depends on the order of a reduction: the budget is
    the property's plus `slack` times the largest distance of the simulation from the reference."""

    slack: float = field(default=4.0, kw_only=True)

    def judge_one(self, observation, dtype):
        if observation.quantity == "raised":
            return Judged(False, math.inf, "raised where the model gives an answer")
        case, which = observation.case, observation.quantity
        model = self.model_value(case, dtype, which)
        reference = reference_value(case, which)
        with np.errstate(all="ignore"):
            gap = np.abs(np.asarray(model, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
        size = float(np.max(gap[np.isfinite(gap)], initial=0.0))
        return _against(observation, model, np.asarray(observation.bound) + self.slack * size, dtype)

    def width(self, observation, dtype):
        case, which = observation.case, observation.quantity
        with np.errstate(all="ignore"):
            gap = np.abs(
                np.asarray(self.model_value(case, dtype, which), dtype=np.float64)
                - np.asarray(reference_value(case, which), dtype=np.float64)
            )
        size = float(np.max(gap[np.isfinite(gap)], initial=0.0))
        return self.slack * size + np.where(np.isfinite(gap), 0.0, np.inf)


@dataclass(frozen=True)
class Envelope(Model):
    """Only the elements `affected(case, dtype, quantity)` marks may break, as `allowed` says:
    "non_finite" (NaN or ±inf), "non_finite_or_zero", "non_finite_or_offset" (y as if x-hat were 0: the
    offset where there is one, else 0 - a divisor gone to inf), "any" (bounded only by the mask) or
    "none" (this quantity is not the divergence's); every other element is held to the reference and
    the budget - or to `base`'s answer and width, where the break happens inside another divergence's
    arithmetic (a Computes or Simulated model: equinox's first step, which replaces its state by the
    batch's; flax's one-pass variance)."""

    affected: Callable = field(default=lambda case, dtype, which: None)
    allowed: str | dict = "non_finite"  # or one per quantity ("y", "x", "scale", "mean", ...)
    kind: str = field(default="special", kw_only=True)
    base: Computes | None = field(default=None, kw_only=True)

    def _mask(self, case, dtype, which, shape):
        with np.errstate(all="ignore"):
            mask = np.asarray(self.affected(case, dtype, which), dtype=bool)
        if which in ("mean", "var") and mask.shape == np.shape(case.x):  # a channel's state: its groups
            axis = case.params.get("channel_axis", 1) % case.x.ndim
            mask = np.any(mask, axis=tuple(i for i in range(case.x.ndim) if i != axis))
        return np.broadcast_to(mask, shape)

    def _allowed(self, which: str) -> str:
        return self.allowed.get(which, "non_finite") if isinstance(self.allowed, dict) else self.allowed

    def width(self, observation, dtype):
        """No digit is left where "any" answer is allowed; elsewhere (and for finite answers where only
        non-finite or zero ones are) the reference and the budget hold."""
        if self._allowed(observation.quantity) != "any":
            return 0.0
        shape = np.shape(observation.actual)
        return np.where(self._mask(observation.case, dtype, observation.quantity, shape), np.inf, 0.0)

    def judge_one(self, observation, dtype):
        if observation.quantity == "raised":
            return Judged(False, math.inf, "raised where the model gives an answer")
        case, which = observation.case, observation.quantity
        held = self.base.model_value(case, dtype, which) if self.base else reference_value(case, which)
        reference = np.asarray(held, dtype=np.float64)
        actual = np.asarray(observation.actual, dtype=np.float64)
        if actual.shape != reference.shape:
            return Judged(False, math.inf, f"{which} has shape {actual.shape}, not {reference.shape}")
        mask = self._mask(case, dtype, which, actual.shape)
        settled = _offset(case, which, actual.shape)  # what y is when x-hat is 0 (the offset, or 0)
        broken = {
            "non_finite": ~np.isfinite(actual),
            "non_finite_or_zero": ~np.isfinite(actual) | (actual == 0),
            # the offset as the framework holds it: in the input dtype, or in float32 statistics
            "non_finite_or_offset": ~np.isfinite(actual)
            | (actual == settled)
            | (actual == rounded(settled, "float32")),
            "any": np.ones(actual.shape, dtype=bool),
            "none": np.zeros(actual.shape, dtype=bool),
        }[self._allowed(which)]
        outside = np.where(mask & broken, reference, actual)  # inside the mask, broken values are excused
        # a base's answer carries its own width (a simulation's slack for its summation order)
        bound = np.asarray(observation.bound) + (self.base.width(observation, dtype) if self.base else 0.0)
        return _against(Observation(case, which, outside, observation.bound), reference, bound, dtype)


def param(case: Case, key: str):
    """The case's canonical parameter `key`: as drawn, or the reference's default (its norm's record)."""
    if key in case.params:
        return case.params[key]
    default = R.NORMS[case.norm].parameters()[key]
    if default is inspect.Parameter.empty:
        raise KeyError(f"{case.norm} requires {key}: the case has none")
    return default


def along(case: Case, parameter: np.ndarray) -> np.ndarray:
    """An affine parameter (scale, offset) shaped to broadcast against x as the norm applies it."""
    record = R.NORMS[case.norm]
    if record.statistics == "axes":
        axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
        shape = [case.x.shape[i] if i in axes else 1 for i in range(case.x.ndim)]
    else:
        axis = param(case, "channel_axis") % case.x.ndim
        shape = [case.x.shape[i] if i == axis else 1 for i in range(case.x.ndim)]
    return np.reshape(parameter, shape)


def _offset(case: Case, which: str, shape) -> np.ndarray:
    """y's value where the normalized input is 0: the offset broadcast as the norm applies it (0 without
    one, and for every quantity but y)."""
    offset = case.params.get("offset")
    if which != "y" or offset is None:
        return np.zeros(shape)
    return np.broadcast_to(along(case, offset), shape)


@dataclass(frozen=True)
class Bounded(Model):
    """Arithmetic the entry can only bound: the answer within `rel` of the reference's magnitude
    (elementwise, on top of the budget). The entry states the measured size `rel` is set from."""

    # or rel(case, dtype): a number, or an elementwise array for y; where it reaches 1 no digit is left
    # and any answer is excused
    rel: float | Callable = 0.0
    # or an absolute elementwise bound, absolute(case, dtype, quantity) (None: that quantity exact)
    absolute: Callable | None = field(default=None, kw_only=True)

    def _rel(self, observation, dtype, reference):
        rel = self.rel(observation.case, dtype) if callable(self.rel) else self.rel
        if self.absolute is not None:
            extra = self.absolute(observation.case, dtype, observation.quantity)
            with np.errstate(all="ignore"):
                rel = rel + (0.0 if extra is None else np.asarray(extra) / np.abs(reference))
        return rel

    def width(self, observation, dtype):
        reference = np.asarray(reference_value(observation.case, observation.quantity), dtype=np.float64)
        rel = np.asarray(self._rel(observation, dtype, reference), dtype=np.float64)
        with np.errstate(all="ignore"):
            return np.where(rel >= 1, np.inf, np.nan_to_num(rel * np.abs(reference), nan=np.inf))

    def judge_one(self, observation, dtype):
        if observation.quantity == "raised":
            return Judged(False, math.inf, "raised where the model gives an answer")
        reference = np.asarray(reference_value(observation.case, observation.quantity), dtype=np.float64)
        rel = self._rel(observation, dtype, reference)
        if observation.actual is None or np.shape(observation.actual) != reference.shape:
            return _against(observation, reference, observation.bound, dtype)
        with np.errstate(all="ignore"):
            bound = np.asarray(observation.bound) + rel * np.abs(reference)
            excused = np.broadcast_to(np.asarray(rel) >= 1, reference.shape)
        actual = np.where(excused, reference, np.asarray(observation.actual, dtype=np.float64))
        within = Observation(observation.case, observation.quantity, actual, bound)
        return _against(within, reference, bound, dtype)

    def describe(self) -> str:
        return f"Bounded(rel={self.rel:g})" if not callable(self.rel) else "Bounded(rel by the input)"


@dataclass(frozen=True)
class OneOf(Model):
    """Several behaviours one entry names (it raises, or answers as another model says): agrees when
    any of `models` does; its severity is the first's."""

    models: tuple = ()
    kind: str = field(default="", kw_only=True)

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", self.models[0].kind)

    def judge(self, observations, dtype: str) -> Judged:
        judged = [model.judge(observations, dtype) for model in self.models]
        agreeing = [j for j in judged if j.agrees]
        return agreeing[0] if agreeing else min(judged, key=lambda j: j.miss)

    def width(self, observation, dtype):
        widths = [np.asarray(model.width(observation, dtype), dtype=np.float64) for model in self.models]
        return np.maximum.reduce(np.broadcast_arrays(*widths)) if len(widths) > 1 else widths[0]

    def describe(self) -> str:
        return " or ".join(model.describe() for model in self.models)


def dtype_of(name: str):
    """NumPy's dtype for `name` (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def rounded(value, dtype: str) -> np.ndarray:
    """`value` rounded to `dtype` and back to float64."""
    with np.errstate(all="ignore"):
        return np.asarray(value, dtype=np.float64).astype(dtype_of(dtype)).astype(np.float64)
