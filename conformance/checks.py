"""Comparing one framework outcome with the reference under the tolerance model (spec/numerics.md).

A check returns a Verdict: the worst element's error against its budget, the budget's basis, and
everything a report or a failure message needs (clause, adapter, dtype, the example, a repro).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normconf import adapters
from normconf import reference as R
from normconf.reference.local_response_norm import checked as lrn_checked
from normconf.reference.local_response_norm import window_base, window_sum
from normconf.reference.lp_normalize import EPS_PLACEMENTS, lp_norm
from normconf.reference.lp_normalize import checked as lp_checked

from . import clock
from . import tolerances as T

STANDARDIZING = {name for name, norm in R.NORMS.items() if norm.standardizing}


@dataclass
class Verdict:
    """One comparison: passed or not, and the numbers behind it (NUM.N7)."""

    clause: str
    adapter: str
    norm: str
    dtype: str
    what: str  # "y", "state.var", "dx", ...
    comparison: T.Comparison
    basis: str  # "NUM.N5" or "NUM.N6"
    example: dict = field(default_factory=dict)
    hint: str = ""  # on a failure: the convention that would explain it (diagnosis.py)
    # the arrays compared and the elementwise budget (a known divergence's model judges them; not written)
    actual: Any = field(default=None, repr=False, compare=False)
    bound: Any = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def message(self) -> str:
        c = self.comparison
        if not c.index and math.isinf(c.worst_error):  # no answer to compare: it raised, crashed or hung
            return f"[{self.clause}] {self.adapter} {self.norm} {self.dtype} {self.what} ({self.basis})"
        return (
            f"[{self.clause}] {self.adapter} {self.norm} {self.dtype} {self.what}: "
            f"worst error {c.worst_error:.3e} "
            f"at {c.index} vs budget {c.budget:.3e} ({self.basis}; {c.ratio:.3g}x budget, {c.ulps:.1f} ulps)"
            + _budget_words(c, self.dtype)
            + (f"; {self.hint}" if self.hint else "")
        )


ABSURD = 1e6  # a budget this many times the reference value (and above 1) bounds nothing there


def _budget_words(c: T.Comparison, dtype: str) -> str:
    """What a budget that is itself non-finite or far beyond the reference value means, in words."""
    if not math.isfinite(c.budget):
        return f"; the budget is not finite there: an intermediate it is computed from leaves {dtype}'s range"
    if math.isfinite(c.expected) and c.budget > 1.0 and c.budget > ABSURD * abs(c.expected):
        return (
            f"; the budget dwarfs the reference value {c.expected:.3g}: an intermediate it is computed from "
            f"(a running state, a statistic) is near the edge of {dtype}'s range, so it bounds nothing here"
        )
    return ""


def _ulps_dtype(adapter: str, norm: str, dtype: str) -> str:
    """The dtype a result's ulps are counted in: the declared statistics dtype where narrower than the
    input's (float64 computed in float32 is off by float32 ulps, not by billions of float64 ones)."""
    acc = adapters.accumulation(adapter, norm, dtype)
    return acc if acc in T.NARROWER.get(dtype, ()) else dtype


def statistic_view(norm: str, x: np.ndarray, params: dict) -> tuple[np.ndarray, tuple[int, ...], Any]:
    """(view of x, axes each statistic spans, function mapping a keepdims statistic back to x's shape)."""
    return R.NORMS[norm].statistic_view(x, params)


def reduction_length(norm: str, x: np.ndarray, params: dict) -> int:
    return R.NORMS[norm].reduction_length(x, params)


def uses_batch_stats(params: dict) -> bool:
    """BN.S1/S4: statistics come from the input unless eval mode has running statistics."""
    return params.get("training", True) or params.get("state") is None


def _affine_magnitude(params: dict) -> float:
    scale = params.get("scale")
    return 1.0 if scale is None else float(np.max(np.abs(scale), initial=0.0))


def _divisor_conventions(params: dict) -> tuple[str, str]:
    return params.get("normalize_var", "biased"), params.get("eps_placement", "inside_sqrt")


@clock.phase("budget")
def budget(norm: str, x: np.ndarray, params: dict, y_ref: np.ndarray, *, acc_dtype: str, out_dtype: str):
    """(elementwise budget, basis): NUM.N5, raised to NUM.N6 where honest arithmetic in the accumulation
    dtype is worse than the first-order model (ill-conditioned inputs of standardizing norms)."""
    n = reduction_length(norm, x, params)
    if norm in STANDARDIZING and uses_batch_stats(params):
        view, axes, back = statistic_view(norm, x, params)
        eps = params.get("eps", 1e-5)
        standardized = R.NORMS[norm].standardized(view, axes, params)
        kappa = back(T.conditioning(view, axes, divisor=standardized.divisor))
        xhat = back(standardized.xhat)
        first_order = T.standardizing_budget(
            acc_dtype=acc_dtype,
            out_dtype=out_dtype,
            n=n,
            kappa=kappa,
            xhat=xhat,
            scale=_affine_magnitude(params),
            y_ref=y_ref,
        )
        if (
            str(acc_dtype) == "float64"
        ):  # float64 is the reference's own precision: no honest-arithmetic excuse
            return first_order, "NUM.N5"
        honest = back(T.standardized_in_dtype(view, axes, eps, acc_dtype, *_divisor_conventions(params)))
        with np.errstate(invalid="ignore"):
            honest_error = T.SAFETY * np.abs(honest - xhat) * _affine_magnitude(params)
        # where honest arithmetic in that dtype breaks down entirely (0/0, overflow) it excuses nothing
        honest_error = np.where(np.isfinite(honest_error), honest_error, 0.0)
        if np.any(honest_error > first_order):
            return np.maximum(first_order, honest_error), "NUM.N6"
        return first_order, "NUM.N5"
    if norm in STANDARDIZING:
        # eval with running statistics: (x - running_mean) / sqrt(running_var + eps) rounds |x| and
        # |running_mean| before dividing, so their size over the divisor is the conditioning
        state, axis = params["state"], params.get("channel_axis", 1) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        divisor = np.sqrt(state.var.reshape(shape) + params.get("eps", 1e-5))
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = (np.abs(x) + np.abs(state.mean.reshape(shape))) / divisor
        return T.standardizing_budget(
            acc_dtype=acc_dtype,
            out_dtype=out_dtype,
            n=1,
            kappa=kappa,
            xhat=y_ref,
            scale=_affine_magnitude(params),
            y_ref=y_ref,
        ), "NUM.N5"
    first_order = T.standardizing_budget(
        acc_dtype=acc_dtype, out_dtype=out_dtype, n=n, kappa=1.0, xhat=y_ref, scale=None, y_ref=y_ref
    )
    if norm == "lp_normalize":
        k = lp_checked(x, params.get("p", 2.0), params.get("axes", (1,)), 0.0, "max_norm")
        exponent = T.lp_exponent_budget(acc_dtype=acc_dtype, x=x, p=k[1], axes=k[2], y_ref=y_ref)
        if np.any(exponent > 0):
            return first_order + exponent, "NUM.N11"
    return first_order, "NUM.N5"


@clock.phase("judge")
def check(
    clause: str,
    adapter: str,
    norm: str,
    dtype: str,
    what: str,
    actual,
    expected,
    budget_and_basis,
    example: dict,
    diagnose=None,
) -> Verdict:
    """The comparison as a Verdict; on a failure, `diagnose(actual, bound)` may name what explains it."""
    bound, basis = budget_and_basis
    comparison = T.compare(actual, expected, bound, dtype, _ulps_dtype(adapter, norm, dtype))
    if np.shape(actual) != np.shape(expected):  # a protocol violation: say so, there is no element to show
        what = f"{what} has shape {tuple(np.shape(actual))}, not {tuple(np.shape(expected))}"
    verdict = Verdict(
        clause, adapter, norm, dtype, what, comparison, basis, example, actual=actual, bound=bound
    )
    if not comparison.passed and diagnose is not None:
        verdict.hint = diagnose(actual, bound)
    return verdict


def gradient_terms(norm: str, x: np.ndarray, params: dict, g: np.ndarray) -> dict:
    """NUM.N8: the magnitudes of the terms each gradient is summed from (a running-error bound): what
    rounding in a VJP's intermediate sums can cost even where the terms cancel to nearly nothing. How
    they are summed is the norm record's `gradient_terms` (a key of TERMS)."""
    record = R.NORMS[norm]
    gamma = _affine_magnitude(params)
    plain = {k: v for k, v in params.items() if k not in ("scale", "offset")}
    xhat, affine_sums = None, {}
    if record.gradient_terms in ("standardizing", "rms"):
        xhat = record.forward(x, **plain)
        xhat = getattr(xhat, "y", xhat)
        if params.get("scale") is not None or params.get("offset") is not None:
            param_axes = _param_axes(norm, x, params)
            summed = tuple(i for i in range(x.ndim) if i not in param_axes)
            # each x̂ in the sum carries the forward error u * (kappa + |x̂|) of NUM.N5
            error_scale = np.abs(xhat)
            if record.standardizing and uses_batch_stats(params):
                view, axes, back = statistic_view(norm, x, params)
                error_scale = error_scale + back(
                    T.conditioning(view, axes, divisor=R.NORMS[norm].standardized(view, axes, params).divisor)
                )
            affine_sums = {
                "scale": np.sum(np.abs(g) * error_scale, axis=summed),
                "offset": np.sum(np.abs(g), axis=summed),
            }
    with np.errstate(all="ignore"):
        terms = TERMS[record.gradient_terms](norm, x, params, g, gamma, xhat)
    return {"x": np.where(np.isfinite(terms), terms, 0.0), **affine_sums}


def _standardizing_terms(norm, x, params, g, gamma, xhat):
    """dx = (ĝ − mean ĝ − x̂·mean(ĝx̂))/σ; in eval with running statistics it is linear in g (no terms)."""
    if not uses_batch_stats(params):
        return np.zeros_like(x)
    view, axes, back = statistic_view(norm, x, params)
    gv = np.abs(statistic_view(norm, g, params)[0]) * gamma
    xh = np.abs(statistic_view(norm, xhat, params)[0])
    sigma = R.NORMS[norm].standardized(view, axes, params).divisor
    # x̂ itself carries the forward error u * kappa (NUM.N5), which the terms then multiply
    kappa = T.conditioning(view, axes, divisor=sigma)
    return back(
        kappa
        * (gv + gv.mean(axis=axes, keepdims=True) + xh * (gv * xh).mean(axis=axes, keepdims=True))
        / sigma
    )


def _rms_terms(norm, x, params, g, gamma, xhat):
    """dx = (ĝ − x̂·mean(ĝx̂))/r."""
    axes = tuple(sorted(a % x.ndim for a in params.get("axes", (-1,))))
    r = np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + params["eps"])
    gv, xh = np.abs(g) * gamma, np.abs(xhat)
    return (gv + xh * (gv * xh).mean(axis=axes, keepdims=True)) / r


def _window_terms(norm, x, params, g, gamma, xhat):
    """LRN: g·base^-β plus the window sum of the base's derivative."""
    defaults = R.NORMS[norm].parameters()
    xv, axis, win, a, beta, k = lrn_checked(
        x,
        *(params.get(key, defaults[key]) for key in ("size", "alpha", "beta", "k", "channel_axis")),
        params.get("alpha_over_size", defaults["alpha_over_size"]),
        params.get("extra", defaults["extra"]),
    )
    base = window_base(xv, axis, win, a, k)
    through = window_sum(np.abs(g * xv) * abs(beta) * base ** (-beta - 1.0), axis, win[1], win[0])
    # powers amplify relative errors by their exponent: |beta| + 1 for base^(-beta-1)
    return (abs(beta) + 1.0) * (np.abs(g) * base**-beta + 2.0 * a * np.abs(xv) * through)


def _lp_terms(norm, x, params, g, gamma, xhat):
    """Lp: g/d and the projection term through the norm."""
    defaults = R.NORMS[norm].parameters()
    xv, p, axes, eps, placement = lp_checked(
        x, *(params.get(key, defaults[key]) for key in ("p", "axes", "eps", "eps_placement"))
    )
    n = lp_norm(xv, p, axes)
    d = EPS_PLACEMENTS[placement][0](n, eps, p)
    safe = np.where(n > 0, n, 1.0)
    # |x|^p and its root amplify relative errors by p
    return p * (
        np.abs(g) / d
        + np.sum(np.abs(g * xv), axis=axes, keepdims=True) / (d * d) * (np.abs(xv) / safe) ** (p - 1)
    )


def _linear_terms(norm, x, params, g, gamma, xhat):
    """A map linear in g (channel_normalize): no sums to round."""
    return np.zeros_like(x)


# a norm record's `gradient_terms` -> how its VJP's terms are summed
TERMS = {
    "standardizing": _standardizing_terms,
    "rms": _rms_terms,
    "window": _window_terms,
    "lp": _lp_terms,
    "linear": _linear_terms,
}


def _param_axes(norm: str, x: np.ndarray, params: dict) -> tuple[int, ...]:
    """The axes the affine parameters span: the normalized axes, or the channel axis."""
    if R.NORMS[norm].statistics == "axes":
        return tuple(sorted(a % x.ndim for a in params.get("axes", (-1,))))
    return (params.get("channel_axis", 1) % x.ndim,)


@clock.phase("budget")
def gradient_budget(
    norm: str,
    case_x: np.ndarray,
    params: dict,
    g: np.ndarray,
    want: dict,
    *,
    acc_dtype: str,
    out_dtype: str,
    seed: int = 0,
) -> dict:
    """NUM.N8: {"x"|"scale"|"offset": elementwise budget} for the VJP of `norm` at (x, params, g)."""
    n = reduction_length(norm, case_x, params)
    summed = max(1, case_x.size // max(1, np.size(params.get("scale", 1.0))))
    rel = T.unit_roundoff(acc_dtype) * T.growth(max(n, summed))
    vjp = getattr(R, f"{norm}_vjp")
    learned = {k: params[k] for k in ("scale", "offset") if params.get(k) is not None}
    fixed = {k: v for k, v in params.items() if k not in learned}

    def grads(x, g, **learned_now):
        out = vjp(g, x, **learned_now, **fixed)
        return {"x": out.x, "scale": out.scale, "offset": out.offset}

    spread = T.perturbation_spread(grads, {"x": case_x, "g": g, **learned}, rel, seed=seed)
    terms = gradient_terms(norm, case_x, params, g)
    # the terms may be rounded once more, to the input dtype, before they cancel
    last = T.output_roundoff(acc_dtype, out_dtype)  # NUM.N5: the gradient's own last rounding
    term_rel = rel + last
    # below the output dtype's normal range its rounding is absolute: one subnormal spacing, no finer
    floor = float(T.finfo(out_dtype).smallest_subnormal)
    return {
        key: T.SAFETY * (spread[key] + term_rel * terms.get(key, 0.0) + last * np.abs(w)) + floor
        for key, w in want.items()
        if w is not None
    }


def state_error_scales(norm: str, x: np.ndarray, params: dict, acc_dtype: str) -> dict:
    """NUM.N5 for running statistics: the size of what each batch statistic is computed from. A mean
    off by d moves each (x - mean)^2 by 2 |x - mean| d + d^2, with d ~ u * growth(n) * max|x|."""
    n = reduction_length(norm, x, params)
    view, axes, _ = statistic_view(norm, x, params)
    centred, big = view - view.mean(axis=axes, keepdims=True), float(np.max(np.abs(x), initial=0.0))
    drift = T.unit_roundoff(acc_dtype) * T.growth(n) * big
    return {"mean": big, "var": 2 * float(np.max(np.abs(centred), initial=0.0)) * big + drift * big}
