"""Known divergences, as data: which adapter differs from the spec where, by which clause, and why.

Each framework family keeps its own entries, sorted by clause, in `adapters/<family>/known.py` (its
`KNOWN`); `known()` (and `KNOWN`, built on first use) gathers them in family-name order. This module
holds the record (`Divergence`), the lookup (`explaining`) and the models of framework arithmetic that
more than one family's entries share; a model only one family needs lives in that family's file.

An entry explains a failing comparison only for the examples its `applies` predicate accepts; the
suite then records an expected divergence (with the reason, which the report shows) instead of a
finding. Each entry carries a minimal `example` that must still diverge: a meta-test runs it, so an
entry that no longer matches anything is flagged rather than silently hiding a fixed framework.
An entry whose behaviour depends on the CPU says so (`cpu`): it explains failures only where that
dependency holds, and where it does not the meta-test checks that the adapter conforms (NUM.N10).
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import importlib.util
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import normconf.adapters
from normconf import reference as R
from normconf.adapters._cpu import CpuDependency
from normconf.reference.lp_normalize import lp_norm

from . import levels
from . import tolerances as T
from .checks import budget, reduction_length, state_error_scales, statistic_view, uses_batch_stats
from .models import (  # noqa: F401 - the model kinds, for the families' known.py
    Bounded,
    Computes,
    Envelope,
    Judged,
    Model,
    OneOf,
    Raises,
    Reference,
    Simulated,
    along,
    param,
    reference_value,
    rounded,
)
from .strategies import OVERFLOW_MAGNITUDE, Case
from .tolerances import SAFETY, conditioning, finfo, growth


@dataclass(frozen=True)
class Divergence:
    adapters: str  # fnmatch pattern over adapter names
    norm: str
    clause: str  # the spec's D clause describing it
    reason: str
    applies: Callable[[Case, str], bool]  # (case, dtype) -> does this entry explain a failure there?
    example: Callable[[], tuple[Case, str]]  # a minimal (case, dtype) that shows the divergence
    shows_in: str = "forward"  # where the example diverges: "forward" output, "gradient", or running "state"
    non_finite: bool = False  # explains how NaN / ±inf inputs come out (NUM.N9): judged on the input as run
    # occurs only on CPUs where this holds (NUM.N10); elsewhere the adapter conforms
    cpu: CpuDependency | None = None
    # what the framework computes instead (models.py): a failure is this divergence only if it agrees
    model: Model | None = None
    # the masking meta-test's perturbations (by name) this divergence's own uncertainty covers, each with
    # the measured reason: below that size no comparison can tell a bug from the divergence
    indistinguishable: dict = field(default_factory=dict)
    # the releases of the adapter's framework it occurs in (a PEP 440 specifier set, "<1.27"; "" = every
    # one): outside them the adapter must conform (`normconf run --versions` measures other releases)
    releases: str = ""
    # a framework bug, not a convention (spec NUM.L6): what is wrong, as an upstream report would state it,
    # and where it stands upstream; the report and the matrix mark it, `normconf bugs` prints its repro
    bug: str = ""

    @property
    def level(self) -> str:
        """The conformance level it is counted at (NUM.L5): range for NUM.D1, else its model's kind."""
        return levels.of_divergence(self)

    @property
    def severity(self) -> str:
        """The report's kind of divergence: "semantic", "precision" or "special" (models.KINDS)."""
        return self.model.kind if self.model is not None else "precision"

    def judge(self, observations, dtype: str) -> Judged:
        """Whether the framework's answers are what this divergence says it computes."""
        if self.model is None:
            return Judged(False, math.inf, "this entry has no model")
        return self.model.judge(observations, dtype)

    def example_as_run(self) -> tuple[Case, str]:
        """The entry's example as its meta-test runs it: with a cotangent (0.3 everywhere, unless the
        example has its own) where it shows in the gradient."""
        case, dtype = self.example()
        g = case.cotangent
        if g is None and self.shows_in == "gradient":
            g = np.full_like(case.x, 0.3)
        return Case(case.norm, case.x, case.params, case.kind, cotangent=g), dtype

    def framework_alone(self, adapter: str) -> str | None:
        """The framework-alone script of this entry's example in `adapter` (no normconf in it: what an
        upstream report of a bug carries), or None where the adapter writes none."""
        case, dtype = self.example_as_run()
        return normconf.adapters.get(adapter).framework_repro(
            self.norm, case.x, case.params, dtype=dtype, cotangent=case.cotangent
        )

    def holds_here(self) -> bool:
        """Whether this divergence occurs on this CPU under the ISA caps in force (always, without a
        `cpu`)."""
        return self.cpu is None or self.cpu.holds()

    def holds_in_release(self, adapter: str) -> bool:
        """Whether this divergence occurs in the release of `adapter`'s framework being measured (always,
        without `releases`, or where the release is unknown)."""
        if not self.releases:
            return True
        from packaging.specifiers import SpecifierSet

        from normconf.envs import release_of

        release = release_of(adapter)
        return release is None or SpecifierSet(self.releases).contains(release, prereleases=True)

    def names(self, adapter: str) -> bool:
        """Whether this entry's adapter pattern names `adapter` (`*` is the only wildcard: names hold `[`)."""
        return adapter == self.adapters or (
            "*" in self.adapters and fnmatch.fnmatchcase(adapter, self.adapters)
        )

    def matches(self, adapter: str, norm: str, case: Case, dtype: str) -> bool:
        return (
            self.names(adapter)
            and norm in INHERITS.get(self.norm, (self.norm,))
            and self.holds_here()
            and self.holds_in_release(adapter)
            and self.applies(case, dtype)
        )


# A synchronized BatchNorm is its framework's BatchNorm with pooled statistics (spec/sync_batch_norm.md):
# what that BatchNorm does differently, its synchronized form does too.
INHERITS = {"batch_norm": ("batch_norm", "sync_batch_norm")}

KNOWN: list[Divergence]  # every family's entries: built on first use by the module's __getattr__ (below)


@functools.lru_cache(maxsize=None)
def known() -> list[Divergence]:
    """Every known divergence: the `KNOWN` of each family folder's known.py (adapters/<family>/), the
    families in name order."""
    entries: list[Divergence] = []
    families = sorted(m.name for m in pkgutil.iter_modules(normconf.adapters.__path__) if m.ispkg)
    for family in families:
        module = f"{normconf.adapters.__name__}.{family}.known"
        if importlib.util.find_spec(module) is not None:
            entries += importlib.import_module(module).KNOWN
    return entries


def __getattr__(name: str):
    if name == "KNOWN":
        return known()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def candidates(
    adapter: str, norm: str, case: Case, dtype: str, non_finite_only: bool = False, gradient: bool = False
) -> list[Divergence]:
    """The entries whose territory holds a failure of `adapter` on (case, dtype): those about the same
    kind of comparison first (`gradient`: a VJP, else an output or a state). Each is only a candidate:
    its model must agree with what the framework answered (`Divergence.judge`)."""
    named = (adapter, *filter(None, [_wrapped(adapter, norm)]))  # a plug-in's wrapped built-in too
    found = [
        entry
        for entry in known()
        if (entry.non_finite or not non_finite_only)
        and any(entry.matches(name, norm, case, dtype) for name in named)
    ]
    if not non_finite_only and not any(entry.clause in levels.RANGE_CLAUSES for entry in found):
        generic = declared_range(norm, normconf.adapters.accumulation(adapter, norm, dtype))
        if generic is not None and generic.applies(case, dtype):
            found.append(generic)  # the range limit every implementation is granted (NUM.L3)
    same_kind = [entry for entry in found if (entry.shows_in == "gradient") == gradient]
    return same_kind + [entry for entry in found if entry not in same_kind]


def _wrapped(adapter: str, norm: str) -> str | None:
    """The built-in adapter a plug-in declares its `norm` wraps (`wraps=`), whose divergences are its
    own arithmetic's; None for anything else."""
    try:
        wrapped = getattr(normconf.adapters.load(adapter), "wrapped", None)
    except Exception:  # an adapter the registry does not know (a test's stand-in)
        return None
    return wrapped(norm) if wrapped is not None else None


def explaining(
    adapter: str, norm: str, case: Case, dtype: str, non_finite_only: bool = False, gradient: bool = False
) -> Divergence | None:
    """The first candidate entry for a failure of `adapter` on (case, dtype), or None (its model not
    consulted: for the divergence meta-test, which checks each entry's own example)."""
    return (candidates(adapter, norm, case, dtype, non_finite_only, gradient) or [None])[0]


# --- the models of framework arithmetic the families' entries share ---------------------------------

HALF_SQUARE_LIMIT = 255.9  # |x| above which x*x overflows float16 (sqrt(65504) = 255.94)


def max_abs(case: Case) -> float:
    """The largest |x| of the case's input (0 for an empty one)."""
    return float(np.max(np.abs(case.x))) if case.x.size else 0.0


def tiny(dtype: str) -> float:
    """The smallest normal number of `dtype`."""
    return float(finfo(dtype).tiny)


def huge(dtype: str) -> float:
    """The largest finite number of `dtype`."""
    return float(finfo(dtype).max)


def half(dtype: str) -> bool:
    """Whether `dtype` is a 16-bit float (float16 or bfloat16)."""
    return dtype in ("float16", "bfloat16")


def batch_stats(case: Case) -> bool:
    """Whether the case normalizes with batch statistics: training, or no running state to use."""
    return uses_batch_stats(case.params)


def values_per_statistic(case: Case) -> int:
    """How many values each statistic (mean, variance) reduces over."""
    return reduction_length(case.norm, case.x, case.params)


def one_value_per_statistic(case: Case, dtype: str) -> bool:
    """Batch statistics over a single value each (BN.D6, IN.D3, BN.D16)."""
    return batch_stats(case) and values_per_statistic(case) == 1


def norm_of(case: Case) -> float:
    """The largest Lp norm of the case's rows (lp_normalize; 0 for an empty input)."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    return float(np.max(lp_norm(case.x, param(case, "p"), axes), initial=0.0)) if case.x.size else 0.0


def min_norm(case: Case) -> float:
    """The smallest Lp norm of the case's rows (lp_normalize; inf for an empty input)."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    return float(np.min(lp_norm(case.x, param(case, "p"), axes), initial=np.inf)) if case.x.size else np.inf


def eps_underflows(case: Case, dtype: str) -> bool:
    """BN.D14: eps is not a float16 number (below ~3e-8 it rounds to 0) in a float16 run."""
    return dtype == "float16" and float(np.float16(param(case, "eps"))) != case.params.get("eps", 1e-5)


def half_squares_overflow(case: Case, dtype: str) -> bool:
    """Squares taken in float16 overflow: some |x| above HALF_SQUARE_LIMIT in a float16 run."""
    return dtype == "float16" and max_abs(case) > HALF_SQUARE_LIMIT


def norm_square_overflows(case: Case, dtype: str) -> bool:
    """LP.D4 for sum(x^2) in the input dtype: a row's squared norm beyond its range (float32 or
    narrower)."""
    return dtype != "float64" and norm_of(case) ** 2 > huge(dtype)


def power_sum_out_of_range(case: Case, dtype: str, norm_power: float | None = None) -> bool:
    """LP.D4: |x|^p taken in the input dtype (float32 or narrower) over- or underflows, or so does the
    norm raised to `norm_power` (p, the sum of |x|^p, by default)."""
    p = param(case, "p")
    return dtype != "float64" and (
        max_abs(case) ** p > huge(dtype)
        or 0 < max_abs(case) ** p < tiny(dtype)
        or norm_of(case) ** (p if norm_power is None else norm_power) > huge(dtype)
    )


def lrn_base_power(case: Case) -> float:
    """LRN's largest base^(beta + 1), base = k + alpha/size * sum of squares over a full window of max |x|."""
    p = case.params
    a = p.get("alpha", 1e-4) / (p["size"] if p.get("alpha_over_size", True) else 1)
    base = p.get("k", 1.0) + a * p["size"] * max_abs(case) ** 2
    return base ** (p.get("beta", 0.75) + 1.0)


def lrn_power_derivative_underflows(case: Case, dtype: str) -> bool:
    """LRN.D5: the derivative of base^-beta, -beta base^(-beta-1), below the input dtype's smallest normal
    (float32 or narrower)."""
    return dtype != "float64" and lrn_base_power(case) > 1.0 / tiny(dtype)


def float64_running_update(case: Case, dtype: str) -> bool:
    """BN.D15: a float64 training step that updates running statistics (kept in float32 by some)."""
    return dtype == "float64" and case.params.get("state") is not None and param(case, "training")


def float64_state_read(case: Case, dtype: str) -> bool:
    """BN.D15: a float64 step that reads or updates running statistics (kept in float32 by some): a
    training step's update, an eval step's normalization."""
    return dtype == "float64" and case.params.get("state") is not None


def one_pass_standardized(
    x: np.ndarray, axes: tuple[int, ...], eps: float, dtype: str, clip: bool, placement: str = "inside_sqrt"
) -> np.ndarray:
    """x̂ with var = E[x^2] - E[x]^2 in `dtype` (clipped at 0 when `clip`), eps inside the root or outside
    it: the one-pass formula of BN.D4 / BN.D8 / LN.D4 / GN.D4 / LN.D11."""
    if dtype == "bfloat16":  # NumPy knows it through ml_dtypes only (optional: the frameworks bring it)
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    with np.errstate(all="ignore"):
        xd = np.asarray(x, dtype=np.float64).astype(dtype)
        mean = xd.mean(axis=axes, keepdims=True, dtype=dtype)
        var = (xd * xd).mean(axis=axes, keepdims=True, dtype=dtype) - mean * mean
        var = np.maximum(var, 0) if clip else var
        eps = np.asarray(eps, dtype=dtype)
        divisor = np.sqrt(var + eps) if placement == "inside_sqrt" else np.sqrt(var) + eps
        return ((xd - mean) / divisor).astype(np.float64)


def one_pass_exceeds_budget(case: Case, dtype: str, clip: bool, acc: str = "float32") -> bool:
    """Does honest one-pass arithmetic in `acc` itself break the NUM.N5/N6 budget on this example?"""
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    eps = param(case, "eps")
    placement = case.params.get("eps_placement", "inside_sqrt")
    within = "float64" if dtype == "float64" else acc
    xhat = back(one_pass_standardized(view, axes, eps, within, clip, placement))
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    ref = getattr(R, case.norm)(case.x, **plain)
    ref = getattr(ref, "y", ref)
    bound, _ = budget(
        case.norm, case.x, plain, ref, acc_dtype=acc if dtype != "float64" else dtype, out_dtype=dtype
    )
    with np.errstate(invalid="ignore"):
        # an eighth of the budget: the simulation's summation order is not the framework's
        if bool(np.any(~np.isfinite(xhat) | (np.abs(xhat - ref) > bound / 8))):
            return True
    if not batch_stats(case):
        return False
    # the framework's summation order is not the simulation's: what one-pass can err whatever the order
    # (its bound; past 16 values a running sum's more, `long_sums`) - Paddle's float32 GroupNorm over 10
    # values near 100 had its variance off by 9e-4 relative where NumPy's order was off by 2e-6
    within = acc if dtype != "float64" else dtype
    loss = one_pass_forward_loss(within)(Case(case.norm, case.x, plain, case.kind), dtype, "y")
    if bool(np.any(loss > bound / 8)):
        return True
    state = case.params.get("state")
    if state is None or not param(case, "training"):
        return False
    # the running variance takes the batch's: its own budget (as the running-statistics property's)
    n = reduction_length(case.norm, case.x, case.params)
    state_bound = T.running_stat_budget(
        acc_dtype=within,
        out_dtype=dtype,
        n=n,
        batch_error_scale=state_error_scales(case.norm, case.x, case.params, within)["var"],
        y_ref=getattr(R, case.norm)(case.x, **case.params).state.var,
        previous=state.var,
    )
    return bool(np.any(one_pass_forward_loss(within)(case, dtype, "var") > state_bound / 8))


def one_pass_gradient_amplified(case: Case, dtype: str) -> bool:
    """LN.D4, gradients: the one-pass variance's relative error u * E[x^2] / (var + eps) beyond what
    NUM.N8 allows a backward-stable gradient, u * SAFETY * growth(n) * kappa."""
    if not batch_stats(case) or not case.x.size:  # every dtype: flax's float64 statistics are one-pass too
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    eps = param(case, "eps")
    amplification = np.mean(view * view, axis=axes) / (view.var(axis=axes) + eps)
    kappa = conditioning(view, axes, eps)
    allowed = SAFETY * growth(reduction_length(case.norm, case.x, case.params)) * kappa
    return bool(np.any(amplification > np.reshape(allowed, np.shape(amplification))))


def _square_statistics(case: Case) -> np.ndarray:
    """Every var + eps (mean square + eps for RMSNorm) the norm takes rsqrt of, in float64."""
    if not case.x.size:
        return np.zeros(1)
    if case.norm == "rms_norm":
        axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
        return np.mean(case.x * case.x, axis=axes) + (case.params.get("eps") or 0.0)
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    return view.var(axis=axes) + param(case, "eps")


def half_rsqrt_jvp_overflows(case: Case, dtype: str) -> bool:
    """LN.D10 in float16 arithmetic: rsqrt(v)/v beyond float16's range (v < ~6.1e-4), or the half of it
    times the cotangent reaching rsqrt(v) (`half_rsqrt_jvp_groups`)."""
    if dtype != "float16" or not batch_stats(case) or not case.x.size:
        return False
    smallest = float(np.min(_square_statistics(case)))
    if smallest == 0 or smallest**-1.5 > huge(dtype):
        return True
    return bool(np.any(statistic_mask(case, lambda v, a: half_rsqrt_jvp_groups(v, a, case, dtype))))


def rsqrt_jvp_underflows(case: Case, dtype: str) -> bool:
    """LN.D10: rsqrt(v)/v below float32's smallest normal (v ~> 2e25) in a float32-or-narrower run."""
    return dtype != "float64" and rsqrt_jvp_underflows_in_float32(case, dtype)


def half_rsqrt_jvp_underflows(case: Case, dtype: str) -> bool:
    """LN.D10 in float16 arithmetic: rsqrt(v)/(2v) below float16's smallest normal (v ~> 400) - the
    derivative keeps a subnormal's few bits."""
    return (
        dtype == "float16"
        and batch_stats(case)
        and float(np.max(_square_statistics(case))) ** 1.5 > 1.0 / tiny("float16")
    )


def rsqrt_jvp_underflows_in_float32(case: Case, dtype: str) -> bool:
    """LN.D10 where every dtype, float64 included, is computed in float32 (Keras on jax and torch)."""
    return batch_stats(case) and float(np.max(_square_statistics(case))) ** 1.5 > 1.0 / tiny("float32")


# example data more than one family's entries use
OFFSET_ROWS = 1e4 + np.array([[0.5, -0.25, 0.125, -0.5, 0.25, 0.0]])  # offset 1e4: one-pass variance fails
# 16 values offset by 100 from a unit spread, exact in float32: one-pass float32 variance misses the budget
# by ~10x but keeps y to ~1e-3, so a wrong answer of another kind still shows beside it
MODERATE_ROWS = (100.0 + np.random.default_rng(0).normal(size=16)).astype(np.float32).astype(np.float64)
HUGE_ROW = np.array([[7.29e17, -1.2254e18, -2.4433e18]])  # variances ~2e36: rsqrt's derivative underflows
RSQRT_EXAMPLES = {  # HUGE_ROW as each norm's (x, params)
    "layer_norm": (HUGE_ROW, {"axes": (-1,), "eps": 1e-12}),
    "rms_norm": (HUGE_ROW, {"axes": (-1,), "eps": 1e-12}),
    "group_norm": (HUGE_ROW.reshape(1, 3, 1), {"groups": 1, "channel_axis": -1, "eps": 1e-12}),
    "batch_norm": (HUGE_ROW.T.copy(), {"channel_axis": -1, "eps": 1e-12, "running_var": "biased"}),
    "instance_norm": (HUGE_ROW.reshape(1, 3, 1), {"channel_axis": -1, "eps": 1e-12}),
}
# TF's RsqrtGrad (LN.D10): values ~1e18 and a unit cotangent
HUGE_2X3 = np.array(
    [
        [8.928809573238702e17, -1.5008069836351734e18, -2.9924863714923643e18],
        [-3.151854259746636e18, 2.042272067532882e18, 2.6908372805573673e18],
    ]
)
SMALL_COTANGENT = np.array(
    [
        [0.1257302165031433, -0.13210485875606537, 0.6404226422309875],
        [0.10490011423826218, -0.5356693863868713, 0.3615950644016266],
    ]
)


# --- the models the families' entries share (models.py says how each kind is judged) ---------------


def statistic_mask(case: Case, holds) -> np.ndarray:
    """The elements of x whose statistic group satisfies `holds(view, axes) -> keepdims bool` (a
    divergence that breaks whole groups: an overflowing sum, an inf rstd)."""
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    with np.errstate(all="ignore"):
        return np.asarray(back(np.asarray(holds(view, axes), dtype=bool)), dtype=bool)


def groups_where_var_below(threshold) -> Callable:
    """affected(case, dtype, which): the groups whose var + eps is below `threshold(dtype)`; a gradient
    of scale or offset sums over every group, so any such group reaches all of it."""

    def affected(case: Case, dtype: str, which: str):
        eps = param(case, "eps")
        mask = statistic_mask(
            case, lambda view, axes: view.var(axis=axes, keepdims=True) + eps < threshold(dtype)
        )
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def groups_where_any(value_holds) -> Callable:
    """affected(case, dtype, which): the groups holding an element for which `value_holds(x, dtype)`
    (an overflowing square); scale/offset gradients are reached wholly."""

    def affected(case: Case, dtype: str, which: str):
        mask = statistic_mask(
            case, lambda view, axes: np.any(value_holds(view, dtype), axis=axes, keepdims=True)
        )
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def window_mask(case: Case, bad: np.ndarray) -> np.ndarray:
    """LRN: the elements whose window of channels holds a `bad` element."""
    from normconf.reference.local_response_norm import window, window_sum

    axis = param(case, "channel_axis") % case.x.ndim
    win = window(int(case.params["size"]), param(case, "extra"))
    return window_sum(np.asarray(bad, dtype=np.float64), axis, *win) > 0


def row_mask(case: Case, per_row) -> np.ndarray:
    """lp_normalize: the elements of rows for which `per_row(x, p, axes) -> keepdims bool`."""
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    with np.errstate(all="ignore"):
        return np.broadcast_to(per_row(case.x, param(case, "p"), axes), case.x.shape)


def scale_along(case: Case) -> np.ndarray:
    """The canonical scale broadcast against x (1 when absent)."""
    scale = case.params.get("scale")
    return np.ones(1) if scale is None else along(case, scale)


def statistic_held(case: Case, dtype: str, which: str):
    """The gradient of x with the derivative of the norm's divisor lost (it underflows: rsqrt's
    -rsqrt(v)/(2v), base^(-beta-1), the norm's own derivative), as `Computes` takes it: the other
    gradients are the reference's."""
    if which != "x":
        return None
    record, g = R.NORMS[case.norm], case.cotangent * scale_along(case)
    with np.errstate(all="ignore"):
        if record.gradient_terms == "standardizing":
            view, axes, back = statistic_view(case.norm, case.x, case.params)
            gview = statistic_view(case.norm, np.broadcast_to(g, case.x.shape), case.params)[0]
            divisor = record.standardized(view, axes, case.params).divisor
            return np.asarray(back((gview - gview.mean(axis=axes, keepdims=True)) / divisor))
        if record.gradient_terms == "rms":
            axes = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
            return g / np.sqrt(
                np.mean(case.x * case.x, axis=axes, keepdims=True) + (case.params.get("eps") or 0.0)
            )
        if record.gradient_terms == "lp":
            axes = tuple(a % case.x.ndim for a in param(case, "axes"))
            return g / np.maximum(lp_norm(case.x, param(case, "p"), axes), param(case, "eps"))
        if record.gradient_terms == "window":
            from normconf.reference.local_response_norm import window, window_base

            p = case.params
            axis = param(case, "channel_axis") % case.x.ndim
            a = param(case, "alpha") / (p["size"] if param(case, "alpha_over_size") else 1)
            base = window_base(
                case.x, axis, window(int(p["size"]), param(case, "extra")), a, param(case, "k")
            )
            return g * base ** -param(case, "beta")
    raise ValueError(f"no divisor to hold for {case.norm}")


def half_square_windows(case: Case, dtype: str, which: str):
    """LRN.D3: the elements whose window holds an |x| whose float16 square overflows."""
    return window_mask(case, np.abs(case.x) > HALF_SQUARE_LIMIT)


def rows_below_eps(case: Case, dtype: str, which: str):
    """LP.D5: rows of norm below eps, which divide by an eps rounded to 0 (or by 1/eps gone to inf)."""
    return row_mask(case, lambda x, p, axes: lp_norm(x, p, axes) < param(case, "eps"))


def rows_where_norm_square_overflows(case: Case, dtype: str, which: str):
    """LP.D4 for sum(x^2) in the input dtype: the rows whose squared norm leaves its range."""
    return row_mask(case, lambda x, p, axes: lp_norm(x, p, axes) ** 2 > huge(dtype))


def groups_where(holds) -> Callable:
    """affected(case, dtype, which) from `holds(view, axes, case, dtype) -> keepdims bool` per
    statistic group; scale/offset gradients are reached wholly when any group is."""

    def affected(case: Case, dtype: str, which: str):
        mask = statistic_mask(case, lambda view, axes: holds(view, axes, case, dtype))
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def offset_along(case: Case) -> np.ndarray:
    """The canonical offset broadcast against x (0 when absent)."""
    offset = case.params.get("offset")
    if offset is None:
        return np.zeros(1)
    return np.reshape(
        offset, np.shape(scale_along(Case(case.norm, case.x, {**case.params, "scale": offset}, case.kind)))
    )


def standardized_as(xhat_of) -> Callable:
    """A model's compute(case, dtype, which): y = x̂ * scale + offset, with x̂ from
    `xhat_of(view, axes, eps, dtype, placement)` on the case's statistic view (another arithmetic for the
    statistics; `placement` the case's eps placement); every other quantity, and eval with running
    statistics, as the reference."""

    def compute(case: Case, dtype: str, which: str):
        if which != "y" or not batch_stats(case) or not case.x.size:
            return None
        view, axes, back = statistic_view(case.norm, case.x, case.params)
        placement = case.params.get("eps_placement", "inside_sqrt")
        with np.errstate(all="ignore"):
            xhat = np.asarray(
                back(xhat_of(view, axes, param(case, "eps"), dtype, placement)), dtype=np.float64
            )
            return xhat * scale_along(case) + offset_along(case)

    return compute


def statistics_in(acc: str | None = None) -> Callable:
    """standardized_as: two-pass statistics with every operation rounded to `acc` (None: the input
    dtype), as NUM.N6 writes them."""
    from .tolerances import standardized_in_dtype

    def xhat(view, axes, eps, dtype, placement):
        return standardized_in_dtype(view, axes, eps, acc or dtype, eps_placement=placement, breakdown=False)

    return standardized_as(xhat)


def one_pass_in(acc: str | None = None, clip: bool = True, float64_too: bool = False) -> Callable:
    """standardized_as: var = E[x²] - E[x]² in `acc` (None: the input dtype; float64 runs in float64
    unless `float64_too`), clipped at 0 when `clip` (BN.D4 / BN.D8 / LN.D4 / GN.D4)."""

    def xhat(view, axes, eps, dtype, placement):
        within = "float64" if dtype == "float64" and not float64_too else acc or dtype
        return one_pass_standardized(view, axes, eps, within, clip, placement)

    return standardized_as(xhat)


def affine_in_dtype(case: Case, dtype: str, which: str):
    """GN.D6: x̂ rounded to the input dtype, then times scale and plus offset, each rounded to it."""
    if which != "y":
        return None
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    xhat = reference_value(Case(case.norm, case.x, plain, case.kind), "y")
    scaled = rounded(rounded(xhat, dtype) * rounded(scale_along(case), dtype), dtype)
    return rounded(scaled + rounded(offset_along(case), dtype), dtype)


def xhat_rounding(case: Case, dtype: str, which: str):
    """GN.D6's x̂ is itself computed in the input dtype ((x - mean) * rstd, two roundings), not rounded
    from the exact one: up to eps·|x̂| more (one or two ulps), times |scale| (measured 0.4 ulp past the rounded
    model where y = x̂·scale + offset cancels, mlx.nn's float16 LayerNorm over 10^4 values)."""
    if which != "y":
        return None
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    xhat = reference_value(Case(case.norm, case.x, plain, case.kind), "y")
    return float(finfo(dtype).eps) * np.abs(xhat) * np.abs(scale_along(case))


def half_rsqrt_jvp_groups(view, axes, case: Case, dtype: str):
    """LN.D10 in float16: the groups where rsqrt(v)/v leaves float16's range (v = var + eps: below
    ~6.1e-4), or the cotangent reaching rsqrt(v), Σ |g·scale·(x - mean)| (any partial sum), times
    rsqrt(v)/(2v) does (the chain rule's product: over 10^4 values of spread 0.03 it is ~3 x 1.6e4). RMSNorm:
    v = mean(x²) + eps and Σ |g·scale·x|."""
    spread = (
        np.mean(view * view, axis=axes, keepdims=True)
        if case.norm == "rms_norm"
        else view.var(axis=axes, keepdims=True)
    )
    v = spread + param(case, "eps")
    with np.errstate(all="ignore"):
        cubed = v**-1.5  # rsqrt(v)/v - JAX's ans / x, TF's y^3 - is formed before the halving
        return (
            (v == 0) | (cubed > huge(dtype)) | (rsqrt_cotangent(view, axes, case) * cubed / 2 > huge(dtype))
        )


def rsqrt_cotangent(view, axes, case: Case) -> np.ndarray:
    """Per statistic group (keepdims), Σ |g·scale·(x - mean)| (RMSNorm: Σ |g·scale·x|): a bound on every
    partial sum of the cotangent reaching rsqrt(var + eps) - a float16 sum of 10^4 such terms (haiku
    broadcasts the statistic before rsqrt, so the chain rule forms each term times rsqrt(v)/(2v) and
    then sums them) can leave the range on the way although the total cancels (0 without a cotangent)."""
    if case.cotangent is None:
        return np.zeros(np.sum(view, axis=axes, keepdims=True).shape)
    g = np.broadcast_to(case.cotangent * scale_along(case), case.x.shape)
    gview = statistic_view(case.norm, g, case.params)[0]
    centred = view if case.norm == "rms_norm" else view - view.mean(axis=axes, keepdims=True)
    return np.sum(np.abs(gview * centred), axis=axes, keepdims=True)


def one_pass_gradient_loss(acc: str | None = None, float64_too: bool = False) -> Callable:
    """Bounded's rel(case, dtype): a one-pass variance's relative error, u(acc) * E[x²] / (var + eps)
    times `long_sums`, carried into the gradient (times SAFETY), per group; acc None: the input dtype
    (float64 runs in float64)."""

    def rel(case: Case, dtype: str):
        acc_dtype = "float64" if dtype == "float64" and not float64_too else acc or dtype
        eps = param(case, "eps")

        def loss(view, axes):
            mean_square = np.mean(view * view, axis=axes, keepdims=True)
            return (
                SAFETY
                * float(finfo(acc_dtype).eps)
                * long_sums(case)
                * mean_square
                / (view.var(axis=axes, keepdims=True) + eps)
            )

        view, axes, back = statistic_view(case.norm, case.x, case.params)
        with np.errstate(all="ignore"):
            return np.asarray(back(loss(view, axes)), dtype=np.float64)

    return rel


def state_held_in(state_dtype: Callable[[str], str]) -> Callable:
    """BN.D15 / BN.D25, as a Simulated model: the running statistics kept in state_dtype(dtype) - the
    step starts from the state as that dtype holds it (rounded, inf past its range: an update
    0 * inf is NaN) and its update is rounded to it; an eval step's y and gradients computed from the
    state as held."""

    def compute(case: Case, dtype: str, which: str):
        state = case.params.get("state")
        if state is None:
            return None
        within = state_dtype(dtype)
        held = R.RunningStats(
            rounded(state.mean, within), rounded(state.var, within), state.num_batches_tracked
        )
        if which in ("mean", "var"):
            return rounded(reference_value(case, which, {"state": held}), within)
        return None if param(case, "training") else reference_value(case, which, {"state": held})

    return compute


def state_past_half_example(norm: str = "batch_norm", **extra) -> Callable:
    """BN.D25's example: a float16 training step from a running variance of 1e6 - inf as float16 holds
    it - at momentum 1 (canonical), which the frameworks' momentum 0 turns into 0 * inf = NaN."""
    return lambda: (
        Case(
            norm,
            np.array([[0.5, 1.0], [-1.0, 2.0], [0.25, -0.5], [1.5, 0.75]]),
            {
                "channel_axis": 1,
                "eps": 1e-5,
                "running_var": "biased",
                "momentum": 1.0,
                "training": True,
                "state": R.RunningStats(np.array([0.0, 0.0]), np.array([1e6, 2.0]), 0),
                **extra,
            },
            "standard",
        ),
        "float16",
    )


# BN.D15: running statistics kept in float32, float64 inputs too
state_in_float32 = state_held_in(lambda dtype: "float32")


def trailing_axes(case: Case, dtype: str) -> dict:
    """LN.D8 / RMS.D6, for Reference: the same number of axes, the trailing ones."""
    count = len(tuple(param(case, "axes")))
    return {"axes": tuple(range(case.x.ndim - count, case.x.ndim))}


def rows_of_zero_norm(case: Case, dtype: str, which: str):
    """LP.D6: the rows whose norm is 0 (the gradient there is inf)."""
    return row_mask(case, lambda x, p, axes: lp_norm(x, p, axes) == 0)


def eps_in(acc: str | None = None) -> Callable:
    """Reference's changes(case, dtype): eps as a number of `acc` (None: the input dtype) - below
    float16's smallest subnormal it is 0, and a zero variance then gives 0/0 (BN.D14)."""

    def changes(case: Case, dtype: str) -> dict:
        return {"eps": float(rounded(param(case, "eps"), acc or dtype))}

    return changes


def rows_out_of_range(norm_power: float | None = None) -> Callable:
    """LP.D4's affected(case, dtype, which): the rows whose |x|^p over- or underflows the input dtype, or
    whose norm raised to `norm_power` (p, the sum of |x|^p, by default) overflows it."""

    def affected(case: Case, dtype: str, which: str):
        p, top = param(case, "p"), huge(dtype)

        def out(x, p_, axes):
            largest = np.max(np.abs(x), axis=axes, keepdims=True, initial=0.0) ** p_
            power = lp_norm(x, p_, axes) ** (p_ if norm_power is None else norm_power)
            return (largest > top) | ((largest > 0) & (largest < tiny(dtype))) | (power > top)

        return row_mask(case, lambda x, p_, axes: out(x, p, axes))

    return affected


# LP.D4's gradient: autodiff through an overflowed (or underflowed) norm leaves those rows no digit
LP_GRADIENT_OUT_OF_RANGE = {"x": "any", "y": "none"}


def lp_in_dtype(case: Case, dtype: str, which: str):
    """LP.D4: y with |x|^p and its sum rounded to the input dtype (overflowing to inf, underflowing to
    0), the eps placement applied to that norm."""
    if which != "y":
        return None
    p, eps, placement = param(case, "p"), param(case, "eps"), param(case, "eps_placement")
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    with np.errstate(all="ignore"):
        power_sum = rounded(np.sum(rounded(np.abs(case.x) ** p, dtype), axis=axes, keepdims=True), dtype)
        norm = power_sum ** (1.0 / p)
        if placement == "max_power_sum":
            divisor = np.sqrt(np.maximum(power_sum, eps))
        elif placement == "add_norm":
            divisor = norm + eps
        elif placement in ("none", "none_or_zero"):
            divisor = norm
        else:  # max_norm
            divisor = np.maximum(norm, eps)
        y = case.x / divisor
        return np.where(divisor == 0, 0.0, y) if placement == "none_or_zero" else y


def long_sums(case: Case) -> float:
    """How much more a one-pass variance's sums may err past 16 values per statistic: n / 16. The bounds
    were measured on rows of up to 16 values; a sum accumulated value by value errs up to (n - 1)·u
    (Higham, Accuracy and Stability, 4.2: same-sign squares leave no cancellation to average it out).
    Measured: onnxruntime's float32-stash GroupNorm variance 2.7 % off, Keras-on-NumPy's float32 running
    variance 28 % off, over 10^4 bfloat16/float16 values offset by 100."""
    return max(1.0, values_per_statistic(case) / 16)


def one_pass_forward_loss(acc: str | None = None, float64_too: bool = False) -> Callable:
    """Bounded's absolute(case, dtype, which) for y: the one-pass variance's relative error,
    SAFETY * u(acc) * E[x²] / (var + eps) times `long_sums`, halved through the square root, times
    |scale * x̂|."""

    def absolute(case: Case, dtype: str, which: str):
        if which not in ("y", "var") or not batch_stats(case) or not case.x.size:
            return None
        within = "float64" if dtype == "float64" and not float64_too else acc or dtype
        view, axes, back = statistic_view(case.norm, case.x, case.params)
        eps = param(case, "eps")
        summed = long_sums(case)
        if which == "var":  # the running variance takes momentum times the batch's: its error too
            mean_square = np.mean(view * view, axis=axes)
            momentum = param(case, "momentum")
            weight = 1.0 if momentum is None else momentum  # the cumulative average's first step takes it all
            return weight * SAFETY * float(finfo(within).eps) * summed * np.ravel(mean_square)
        with np.errstate(all="ignore"):
            var = view.var(axis=axes, keepdims=True)
            loss = (
                SAFETY
                * float(finfo(within).eps)
                * summed
                * np.mean(view * view, axis=axes, keepdims=True)
                / (var + eps)
            )
            xhat = (view - view.mean(axis=axes, keepdims=True)) / np.sqrt(var + eps)
            return np.asarray(back(loss * np.abs(xhat)), dtype=np.float64) * np.abs(scale_along(case)) / 2

    return absolute


def one_pass_model(acc: str | None = None, clip: bool = True, float64_too: bool = False) -> Model:
    """BN.D4 / BN.D8 / LN.D4 / GN.D4 / GN.D7 / SBN.D2: var = E[x²] - E[x]² in `acc` - simulated, or
    within the error such a variance can have whatever the summation order (its size, bounded)."""
    forward, backward = one_pass_forward_loss(acc, float64_too), one_pass_gradient_absolute(acc, float64_too)

    def absolute(case: Case, dtype: str, which: str):
        return (backward if which in ("x", "scale") else forward)(case, dtype, which)

    def near_zero(view, axes, case: Case, dtype: str):
        """Where var + eps is within the one-pass rounding of 0 the divisor keeps no digit."""
        within = "float64" if dtype == "float64" and not float64_too else acc or dtype
        unit = SAFETY * float(finfo(within).eps)
        mean_square = np.mean(view * view, axis=axes, keepdims=True)
        return view.var(axis=axes, keepdims=True) + param(case, "eps") <= unit * mean_square

    return OneOf(
        (
            Simulated(one_pass_in(acc, clip, float64_too)),
            Bounded(absolute=absolute),
            # y and the gradients only: a running variance takes momentum times a tiny batch variance
            # batch statistics only: a model applies to the step whose arithmetic it describes, and an
            # eval step with running statistics computes no variance (haiku's eval output 2.8e3 x its
            # budget was once excused here)
            Envelope(
                lambda case, dtype, which: (
                    groups_where(near_zero)(case, dtype, which)
                    if which in ("y", "x", "scale") and batch_stats(case)
                    else False
                ),
                allowed="any",
                kind="special",
            ),
        )
    )


def one_pass_gradient_absolute(acc: str | None = None, float64_too: bool = False) -> Callable:
    """Bounded's absolute(case, dtype, which) for dx: a one-pass variance's relative error δ (as
    `one_pass_gradient_loss`) moves each term of dx = (g - mean(g) - x̂ mean(g x̂)) / σ by δ: the bound is
    δ (|g| + mean|g| + |x̂| mean|g x̂|) / σ, scale included - the terms, not their cancelled sum."""

    def absolute(case: Case, dtype: str, which: str):
        if which not in ("x", "scale") or not batch_stats(case) or not case.x.size:
            return None
        loss = one_pass_gradient_loss(acc, float64_too)(case, dtype)
        if which == "scale":  # dscale = sum of g x̂: each x̂ off by half the variance's relative error
            view, axes, back = statistic_view(case.norm, case.x, case.params)
            with np.errstate(all="ignore"):
                xhat = np.abs(view - view.mean(axis=axes, keepdims=True)) / np.sqrt(
                    view.var(axis=axes, keepdims=True) + param(case, "eps")
                )
                terms = loss * np.abs(case.cotangent) * np.asarray(back(xhat), dtype=np.float64) / 2
            kept = R.NORMS[case.norm].parameter_shape(case.x, case.params)
            return np.reshape(_sum_to_parameter(case, terms), kept)
        view, axes, back = statistic_view(case.norm, case.x, case.params)
        g = np.broadcast_to(case.cotangent * scale_along(case), case.x.shape)
        gview = statistic_view(case.norm, np.abs(g), case.params)[0]
        with np.errstate(all="ignore"):
            sigma = np.sqrt(view.var(axis=axes, keepdims=True) + param(case, "eps"))
            xhat = np.abs(view - view.mean(axis=axes, keepdims=True)) / sigma
            terms = (
                gview
                + gview.mean(axis=axes, keepdims=True)
                + xhat * (gview * xhat).mean(axis=axes, keepdims=True)
            )
            return loss * np.asarray(back(terms / sigma), dtype=np.float64)

    return absolute


def _sum_to_parameter(case: Case, values: np.ndarray) -> np.ndarray:
    """An x-shaped array summed over the axes a per-statistic parameter (scale, offset) does not span."""
    record = R.NORMS[case.norm]
    if record.statistics == "axes":
        kept = tuple(sorted(a % case.x.ndim for a in param(case, "axes")))
    else:
        kept = (param(case, "channel_axis") % case.x.ndim,)
    return np.sum(values, axis=tuple(i for i in range(case.x.ndim) if i not in kept))


# LN.D10 / RMS.D3: rsqrt's derivative underflows - wholly (the term lost) or partly (a subnormal's few bits):
# the answer lies between the gradient without the term and the reference
def _term_kept_to_a_few_bits(case: Case, dtype: str, which: str):
    """The variance term kept, but to the few bits a subnormal leaves it, possibly none: within its own
    size (measured up to 65 % of it past the reference on Keras' synchronized float32 step, whose
    RsqrtGrad multiplies dy into y^3 on the way)."""
    held = statistic_held(case, dtype, which)
    return None if held is None else np.abs(reference_value(case, which) - held)


RSQRT_HELD = Computes(statistic_held, between=True, absolute=_term_kept_to_a_few_bits)


def underflowing_derivative_windows(case: Case, dtype: str, which: str):
    """LRN.D5: the elements whose window's base^(beta + 1) passes 1 / the smallest normal of the input
    dtype: there the derivative of base^-beta underflows and the cross term keeps few or no digits."""
    if which != "x" or dtype == "float64":
        return False
    from normconf.reference.local_response_norm import window, window_base

    p = case.params
    axis = param(case, "channel_axis") % case.x.ndim
    a = param(case, "alpha") / (p["size"] if param(case, "alpha_over_size") else 1)
    base = window_base(case.x, axis, window(int(p["size"]), param(case, "extra")), a, param(case, "k"))
    with np.errstate(all="ignore"):
        return window_mask(case, base ** (param(case, "beta") + 1.0) > 1.0 / tiny(dtype))


# --- NUM.D1: squares beyond the range of the dtype the statistics are computed in ------------------

# what may break where a statistic overflowed: y as if x-hat were 0 (the divisor went to inf) or
# non-finite (inf - inf); dx likewise 0 or non-finite; dscale loses those groups' terms (any value);
# doffset (a sum of the cotangent) and the running statistics only by turning non-finite
SQUARES_ALLOWED = {
    "y": "non_finite_or_offset",
    "x": "non_finite_or_zero",
    "scale": "any",
    "offset": "non_finite",
    "mean": "non_finite",
    "var": "non_finite",
}


def squares_overflow_in(half_in_half: bool) -> Callable:
    """affected(case, dtype, which): the elements whose statistic's sum of squares exceeds the largest
    float32 (float16's for a float16 input when `half_in_half`) - only where the input's own statistics
    normalize."""

    def affected(case: Case, dtype: str, which: str):
        limit = huge("float16" if half_in_half and dtype == "float16" else "float32")
        mask = levels.square_sums(case) > limit
        mask = np.broadcast_to(mask, case.x.shape)
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def parameter_sums_overflow(case: Case, dtype: str, which: str):
    """NUM.D1's gradient form, affected(case, dtype, which) for statistics summed in float16: the
    parameter elements whose gradient terms - g times x̂ or times x - mean (autodiff of
    (x - mean) * (scale * rsqrt(var + eps)) sums the undivided deviation), or g alone for doffset - add up
    in absolute value past 65504, so that some order of their float16 sum leaves the range although the
    answer may not (in eval too: x̂ = x / sqrt(state var + eps) is not bounded); in training dx reads such
    sums per statistic, so its elements in those groups; y and the state are not this."""
    if dtype != "float16" or case.cotangent is None or which not in ("scale", "offset", "x"):
        return False
    if case.params.get("scale") is None and case.params.get("offset") is None and which != "x":
        return False
    plain = Case(
        case.norm, case.x, {k: v for k, v in case.params.items() if k not in ("scale", "offset")}, ""
    )
    values, axes, back = statistic_view(case.norm, case.x, case.params)
    try:
        with np.errstate(all="ignore"):
            xhat = np.asarray(reference_value(plain, "y"), dtype=np.float64)
    except R.ClauseError:  # a call the spec refuses has no gradient to overflow
        return False
    with np.errstate(all="ignore"):
        if batch_stats(case) or case.params.get("state") is None:
            mean = np.broadcast_to(back(np.mean(values, axis=axes, keepdims=True)), case.x.shape)
        else:
            mean = along(case, case.params["state"].mean)
        deviation = np.maximum(np.abs(xhat), np.abs(case.x - mean))
        g = np.broadcast_to(case.cotangent, case.x.shape)
        sums = {
            "scale": _sum_to_parameter(case, np.abs(g) * deviation),
            "offset": _sum_to_parameter(case, np.abs(g)),
        }
    limit = huge("float16")
    if which == "scale":  # or x̂ itself past float16 (an eval step's small running variance), as it is formed
        beyond = (sums["scale"] > limit) | (_sum_to_parameter(case, np.abs(xhat) > limit) > 0)
        return np.reshape(beyond, np.shape(sums["scale"]))
    if which == "offset":
        return np.reshape(sums["offset"] > limit, np.shape(sums["offset"]))
    if not batch_stats(case):  # eval: dx = g scale / sqrt(var + eps), no sum
        return False
    # dx reads, per statistic, the sums of g scale over its values and of g scale times the deviation
    view = statistic_view(case.norm, np.abs(g * scale_along(case)), case.params)[0]
    spread = statistic_view(case.norm, deviation, case.params)[0]
    with np.errstate(all="ignore"):
        beyond = (np.sum(view * spread, axis=axes, keepdims=True) > limit) | (
            np.sum(view, axis=axes, keepdims=True) > limit
        )
    return np.asarray(back(beyond), dtype=bool)


# where a parameter's terms add up past 65504 its float16 sum has no digit left to judge (spacing 32 at
# the top): any answer there, as NUM.D1's dscale; dx only non-finite
PARAMETER_SUMS_ALLOWED = {"scale": "any", "offset": "any", "x": "non_finite", "y": "none"}


def overflow_example(norm: str, dtype: str = "float32", rank: int = 4, **params) -> Callable:
    """An entry's example: a typical call on x whose squares overflow `dtype`'s statistics (the
    strategies' "overflow" magnitude), `params` overriding the typical ones (a framework's layout; None:
    absent, as an affine-free layer's scale); every array rounded to `dtype`. LRN takes beta = 0.5, where
    the reference's answer is not ~0."""
    params = {"beta": 0.5, "alpha": 1.0, **params} if norm == "local_response_norm" else params

    def example() -> tuple[Case, str]:
        magnitude = OVERFLOW_MAGNITUDE.get(dtype, OVERFLOW_MAGNITUDE["default"])
        shape = (2, 3, 2, 3)[:rank] if rank > 1 else (3,)
        x = rounded(magnitude * np.random.default_rng(0).uniform(-1, 1, size=shape), dtype)
        record = R.NORMS[norm]
        chosen = record.typical_params(x, params)
        for key in [k for k, v in params.items() if v is None] + ["state"]:
            chosen.pop(key, None)
        if record.stateful:
            chosen["training"] = True
        chosen = {k: rounded(v, dtype) if isinstance(v, np.ndarray) else v for k, v in chosen.items()}
        return Case(norm, x, chosen, "overflow"), dtype

    return example


def parameter_sums_example(norm: str, **params) -> Callable:
    """NUM.D1's gradient form: a float16 call with a scale (and an offset, unless `offset=None`) whose
    gradient terms leave float16 while their sum need not - a BatchNorm in eval with mean 0, variance
    0.25 (x̂ = 2x ~ 8e4, g ~ 2.5), any other norm with a cotangent of ~6e4 (x̂ is bounded there); `params`
    override the typical ones (a framework's layout)."""

    def example() -> tuple[Case, str]:
        rng = np.random.default_rng(0)
        x = rounded(4.0e4 * rng.uniform(-1, 1, size=(2, 4, 4)), "float16")
        record = R.NORMS[norm]
        chosen = record.typical_params(x, {k: v for k, v in params.items() if v is not None})
        if norm == "group_norm":
            chosen["groups"] = 2  # two channels per group, whichever axis holds the four
        if norm == "batch_norm":
            channels = x.shape[chosen.get("channel_axis", 1)]
            # running variance 0.25: x̂ = 2x reaches 8e4 - past float16 itself, not only its products
            chosen |= {
                "training": False,
                "state": R.RunningStats(np.zeros(channels), np.full(channels, 0.25), 1),
            }
            g = 2.5 * rng.uniform(-1, 1, size=x.shape)
        else:
            chosen.pop("state", None)
            g = 6.0e4 * rng.uniform(-1, 1, size=x.shape)
        shape = record.parameter_shape(x, chosen)
        chosen |= {"scale": np.full(shape, 1.5), "offset": np.zeros(shape)}
        for key in [k for k, v in params.items() if v is None]:
            chosen.pop(key, None)
        return Case(norm, x, chosen, "overflow", cotangent=rounded(g, "float16")), "float16"

    return example


def squares_beyond(stats: str) -> Callable:
    """affected(case, dtype, which) for statistics summed in `stats` whatever the input dtype: the
    elements whose sum of squares exceeds its largest number."""

    def affected(case: Case, dtype: str, which: str):
        mask = np.broadcast_to(levels.square_sums(case) > huge(stats), case.x.shape)
        return np.any(mask) if which in ("scale", "offset") else mask

    return affected


def parameter_sums_in_float16(adapters: str, norms, **params) -> list[Divergence]:
    """NUM.D1's gradient form for `adapters`, which sum a float16 call's parameter gradients in float16
    (measured per framework and norm): where a parameter's terms g x̂ (or g) add up past 65504 its sum may
    be ±inf or NaN, and in training dx with it; everything else is held to the reference."""
    return [
        Divergence(
            adapters,
            norm,
            "NUM.D1",
            "parameter gradients summed in float16 for a float16 input: where the terms g x̂ (or g) of a "
            "parameter add up past 65504 its float16 sum may leave the range",
            applies=lambda case, dtype: any(
                np.any(parameter_sums_overflow(case, dtype, which)) for which in ("scale", "offset")
            ),
            example=parameter_sums_example(norm, **params),
            shows_in="gradient",
            model=Envelope(parameter_sums_overflow, PARAMETER_SUMS_ALLOWED, kind="special"),
        )
        for norm in norms
    ]


@functools.lru_cache(maxsize=None)
def declared_range(norm: str, acc: str) -> Divergence | None:
    """NUM.L3 for every implementation alike: NUM.D1's model read from the statistics dtype it declares
    (`accumulation`), so a plug-in whose float32 statistics overflow is range limited exactly as a
    framework is (None for float64 statistics: no drawn input reaches their range)."""
    stats = levels.statistics_dtype(acc)
    if stats == "float64":
        return None
    affected = squares_beyond(stats)
    return Divergence(
        "*",
        norm,
        "NUM.D1",
        f"squares summed in {stats} (the declared statistics dtype) overflow: the statistic is inf and "
        "the group normalizes to its offset (or NaN)",
        applies=lambda case, dtype: bool(np.any(affected(case, dtype, "y"))),
        example=overflow_example(norm, "float32"),
        model=Envelope(affected, SQUARES_ALLOWED, kind="special"),
    )


def squares_overflow(
    adapters: str, norms, *, half_in_half: bool = False, rank: int = 4, base=None, **params
) -> list[Divergence]:
    """NUM.D1 for `adapters`: each of `norms` sums its squares in float32 (a float16 input's in float16
    too when `half_in_half`), and where that overflows the statistic is inf - the group normalizes to
    its offset, or to NaN - instead of the reference's finite answer. A model, not an excuse: elsewhere
    the reference holds (or `base`'s answer: Envelope), and in those groups only what an infinite
    divisor gives (SQUARES_ALLOWED)."""
    where = "in float32 (float16 for a float16 input)" if half_in_half else "in float32"
    affected = squares_overflow_in(half_in_half)
    return [
        Divergence(
            adapters,
            norm,
            "NUM.D1",
            f"squares summed {where} overflow: the statistic is inf and the group normalizes to its "
            "offset (or NaN)",
            applies=lambda case, dtype, affected=affected: bool(np.any(affected(case, dtype, "y"))),
            example=overflow_example(norm, "float32", rank, **params),
            model=Envelope(affected, SQUARES_ALLOWED, kind="special", base=base),
        )
        for norm in norms
    ]


# --- NUM.D2: a constant group at eps = 0 -----------------------------------------------------------


def constant_groups_at_eps_0(case: Case, dtype: str, which: str):
    """The elements of the groups whose values are all equal (variance exactly 0) when eps = 0: the
    spec's 0/0 = NaN there (NUM.N9)."""
    if param(case, "eps") != 0.0 or not batch_stats(case):
        return np.zeros(case.x.shape, dtype=bool)
    return statistic_mask(case, lambda view, axes: np.ptp(view, axis=axes, keepdims=True) == 0)


def zero_over_zero(
    adapters: str, norms, answer: str, reason: str, shape: tuple = (2, 5, 3), base=None, **params
) -> list[Divergence]:
    """NUM.D2 for `adapters`: at eps = 0 each of `norms` answers a constant group's 0/0 with `answer`
    ("non_finite_or_offset": its offset, as if x-hat were 0; "any": what rounding noise in its mean
    gives) instead of NaN - in exactly those groups; every other group is held to the reference (or to
    `base`, another divergence's model of them: Envelope). The
    example's first group is constant over `shape`'s values per statistic (15 by default: a count whose
    1/n is not a binary fraction, so a mean taken as sum * (1/n) is off by rounding)."""

    def example(norm: str):
        def build() -> tuple[Case, str]:
            x = np.random.default_rng(0).normal(size=shape)
            chosen = {**R.NORMS[norm].typical_params(x, params), "eps": 0.0}
            for key in [k for k, v in params.items() if v is None] + ["state"]:
                chosen.pop(key, None)
            if R.NORMS[norm].stateful:
                chosen["training"] = True
            view, axes, back = statistic_view(norm, np.ones_like(x), chosen)
            first = np.zeros(np.sum(view, axis=axes, keepdims=True).shape)
            first.flat[0] = 1.0  # the first group constant
            x = np.where(np.broadcast_to(np.asarray(back(first)), x.shape) > 0, 1.5, x)
            return Case(norm, rounded(x, "float32"), chosen, "constant_channel"), "float32"

        return build

    return [
        Divergence(
            adapters,
            norm,
            "NUM.D2",
            reason,
            applies=lambda case, dtype: bool(np.any(constant_groups_at_eps_0(case, dtype, "y"))),
            example=example(norm),
            model=Envelope(constant_groups_at_eps_0, {"y": answer}, kind="special", base=base),
        )
        for norm in norms
    ]


# --- NUM.D3: statistics summed sequentially (error growing as n u) ----------------------------------


def outer_sequential_mean(x: np.ndarray, channel: int, acc: str) -> np.ndarray:
    """TF's reduce_mean of x over every axis but `channel` when some reduced axis precedes it (Eigen's
    outer-dimension reduction): one running sum per channel in `acc`, the reduced axes after the
    channel outermost and those before it innermost, each in memory order; then / n in `acc`. Measured
    bit for bit against TF 2.21 on (2, 2, 10^4), (10^2, 2, 10^2), (4, 3, 50, 50), (4, 50, 50, 3)."""
    after = [a for a in range(x.ndim) if a > channel]
    before = [a for a in range(x.ndim) if a < channel]
    kind = np.dtype(acc).type
    rows = np.transpose(np.asarray(x, dtype=kind), [channel, *after, *before]).reshape(x.shape[channel], -1)
    total = np.add.accumulate(rows, axis=1, dtype=kind)[:, -1]  # sequential, not pairwise
    return (total / kind(rows.shape[1])).astype(np.float64)


def sequentially_summed(acc_of: Callable[[str], str]) -> Callable:
    """A model's compute for BatchNorm over batch statistics as tf.nn.moments takes them (NUM.D3):
    mean and var = mean((x - mean)²) each an `outer_sequential_mean` in acc_of(dtype); y from them in
    float64 (the rest of the arithmetic is within the property's budget)."""

    def compute(case: Case, dtype: str, which: str):
        if which != "y" or not batch_stats(case) or not case.x.size:
            return None
        acc, kind = acc_of(dtype), np.dtype(acc_of(dtype)).type
        channel = param(case, "channel_axis") % case.x.ndim
        shape = [1] * case.x.ndim
        shape[channel] = -1
        x = np.asarray(case.x, dtype=kind)
        mean = outer_sequential_mean(x, channel, acc).reshape(shape)
        centred = (x - mean.astype(kind)).astype(kind)
        var = outer_sequential_mean(centred * centred, channel, acc).reshape(shape)
        with np.errstate(all="ignore"):
            xhat = (case.x - mean) / np.sqrt(var + param(case, "eps"))
        return xhat * scale_along(case) + offset_along(case)

    return compute


def running_sums_matter(case: Case, dtype: str = "") -> bool:
    """NUM.D3's territory: batch statistics over more values than the sqrt(n) model covers a running
    sum's (n - 1) u for (n - 1 > SAFETY growth(n), n > 23)."""
    n = values_per_statistic(case) if case.x.size else 0
    return batch_stats(case) and n - 1 > SAFETY * growth(n)


def sums_outer_axes(case: Case, dtype: str) -> bool:
    """NUM.D3 for tf.nn.moments: BatchNorm reducing an axis before the channel axis, where running sums
    matter."""
    return (
        case.norm == "batch_norm"
        and running_sums_matter(case)
        and param(case, "channel_axis") % case.x.ndim > 0
    )


def long_offset_rows(channel_axis: int = 1) -> tuple[Case, str]:
    """NUM.D3's example: two channels of 10^5 values 10^4 + 7/16 + a multiple of 1/2: each step of a
    running float32 sum past 2^23 rounds its 7/16 the same way, so the mean drifts by ~0.36 standard
    deviations (2 x the budget); a pairwise sum stays within ~10^-3."""
    rng = np.random.default_rng(0)
    x = 1e4 + 0.4375 + np.round(rng.normal(size=(2, 2, 50_000)) * 2) / 2
    params = {
        "channel_axis": channel_axis,
        "eps": 1e-5,
        "training": True,
        "momentum": 0.0,
        "running_var": "biased",
    }
    return Case("batch_norm", x, params, "offset"), "float32"


def sequential_sums(adapters: str, reason: str, acc_of: Callable[[str], str], dtypes: tuple) -> Divergence:
    """NUM.D3 for `adapters`: BatchNorm's batch statistics as running sums over outer axes, in
    acc_of(dtype), for the input `dtypes` it was measured in."""
    return Divergence(
        adapters,
        "batch_norm",
        "NUM.D3",
        reason,
        lambda case, dtype: dtype in dtypes and sums_outer_axes(case, dtype),
        long_offset_rows,
        model=Computes(sequentially_summed(acc_of), kind="precision"),
    )


def running_sums_bound(acc_of: Callable[[str], str]) -> Callable:
    """Bounded's absolute(case, dtype, which) for y where the statistics are running sums in
    acc_of(dtype) in an order no simulation reproduces (NUM.D3): a recursive sum of n values errs by at
    most γ = (n - 1) u of their magnitudes (Higham, Accuracy and Stability, 4.2), so the mean by
    dm = γ mean|x|, the two-pass variance by dm² + γ (var + dm²), and y by |scale| (dm + |x - mean| dv /
    (2 (var + eps))) / sqrt(var + eps); RMSNorm's mean square by γ relative, y by γ/2 |y|."""

    def absolute(case: Case, dtype: str, which: str):
        if which != "y" or not batch_stats(case) or not case.x.size:
            return None
        unit = float(finfo(acc_of(dtype)).eps) / 2
        gamma = (values_per_statistic(case) - 1) * unit
        with np.errstate(all="ignore"):
            if case.norm == "rms_norm":
                return SAFETY * gamma / 2 * np.abs(reference_value(case, "y"))
            view, axes, back = statistic_view(case.norm, case.x, case.params)
            var, eps = view.var(axis=axes, keepdims=True), param(case, "eps")
            dm = gamma * np.mean(np.abs(view), axis=axes, keepdims=True)
            dv = dm * dm + gamma * (var + dm * dm)
            centred = np.abs(view - view.mean(axis=axes, keepdims=True))
            loss = (dm + centred * dv / (2 * (var + eps))) / np.sqrt(var + eps)
            return SAFETY * np.asarray(back(loss), dtype=np.float64) * np.abs(scale_along(case))

    return absolute


def running_sums(adapters: str, norms: tuple, reason: str, acc_of: Callable[[str], str]) -> list[Divergence]:
    """NUM.D3 for `adapters` whose reductions are running sums in an order not reproduced: the bound."""

    def example(norm: str):
        def build() -> tuple[Case, str]:
            # one channel (instance, row) of 10^5 values, contiguous: NUM.N6's yardstick sums it pairwise
            case, dtype = long_offset_rows(1)
            x, params = case.x.reshape(2, -1, 1), {"channel_axis": -1, "eps": 1e-5}
            if norm == "batch_norm":
                x = x.reshape(-1, 1)
                params.update(training=True, running_var="biased", momentum=0.0)
            if norm == "layer_norm":
                x, params = x.reshape(2, -1), {"axes": (-1,), "eps": 1e-5}
            if norm == "group_norm":
                params["groups"] = 1
            return Case(norm, x, params, "offset"), dtype

        return build

    return [
        Divergence(
            adapters,
            norm,
            "NUM.D3",
            reason,
            running_sums_matter,
            example(norm),
            model=Bounded(absolute=running_sums_bound(acc_of)),
        )
        for norm in norms
    ]


# --- LN.D10 for an L2 normalize: rsqrt(sum x^2) differentiated in the input dtype --------------------


def rsqrt_of_square_sum_underflows(case: Case, dtype: str) -> bool:
    """LN.D10 for an L2 normalize (Keras ops.normalize, TF l2_normalize): rsqrt(sum x^2)/sum x^2 below
    the input dtype's smallest normal (float32 or narrower)."""
    return dtype != "float64" and norm_of(case) ** 3 > 1.0 / tiny(dtype)


def subnormal_projection(case: Case, dtype: str, which: str):
    """LN.D10 for an L2 normalize in the input dtype: rsqrt(v)/v = 1/norm^3 rounded among the subnormals
    keeps a few bits - the projection x (x·g) / norm^3 is off by up to |x (x·g)| * spacing / 2 there;
    below the smallest subnormal it is lost whole (the `either` model), above the normals it is exact."""
    if which != "x":
        return None
    info = finfo(dtype)
    axes = tuple(a % case.x.ndim for a in param(case, "axes"))
    cube = 1.0 / lp_norm(case.x, 2.0, axes) ** 3
    partial = (cube >= float(info.smallest_subnormal)) & (cube < float(info.tiny))
    projection = np.abs(case.x * np.sum(case.x * case.cotangent, axis=axes, keepdims=True))
    return np.where(partial, SAFETY * projection * float(info.smallest_subnormal) / 2, 0.0)


# the norm's derivative lost, wholly or to the bits a subnormal leaves it
LP_RSQRT_HELD = OneOf((Computes(statistic_held, either=True), Bounded(absolute=subnormal_projection)))


# --- TensorFlow's kernels, shared by the families built on them (tf.nn, tf_keras, Keras on TF) ---------


def tf_rsqrt_grad(adapter: str, norm: str, example: Callable[[], tuple[Case, str]]) -> Divergence:
    """LN.D10 where TF's RsqrtGrad, -dy y^3 / 2, differentiates rsqrt(var + eps) in float32."""
    return Divergence(
        adapter,
        norm,
        "LN.D10",
        "TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        rsqrt_jvp_underflows,
        example,
        "gradient",
        model=RSQRT_HELD,
    )


def tf_moments_sums(adapter: str) -> Divergence:
    """NUM.D3 where BatchNorm's statistics come from tf.nn.moments in the input dtype (float32, float64)."""
    return sequential_sums(
        adapter,
        "tf.nn.moments sums the batch axes as one running float32 (float64) sum: its error grows as n u",
        acc_of=lambda dtype: dtype,
        dtypes=("float32", "float64"),
    )
