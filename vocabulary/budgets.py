"""Budgets: how far an honest implementation may land from the reference (spec/numerics.md NUM.N5, N8),
and the statistic views every budget and model reads. The suite times them (conformance/checks.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from normconf import reference as R
from normconf.reference.local_response_norm import checked as lrn_checked
from normconf.reference.local_response_norm import window_base, window_sum
from normconf.reference.lp_normalize import EPS_PLACEMENTS, lp_norm
from normconf.reference.lp_normalize import checked as lp_checked

from . import tolerances as T

STANDARDIZING = {name for name, norm in R.NORMS.items() if norm.standardizing}


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


def gradient_budget(
    norm: str,
    case_x: np.ndarray,
    params: dict,
    g: np.ndarray,
    want: dict,
    *,
    acc_dtype: str,
    out_dtype: str,
    parameter_dtype: str | None = None,
    seed: int = 0,
) -> dict:
    """NUM.N8: {"x"|"scale"|"offset": elementwise budget} for the VJP of `norm` at (x, params, g). dx
    comes out in `out_dtype`, dscale and doffset in `parameter_dtype` (float32 under a mixed policy,
    MP.N1; the input's dtype otherwise)."""
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
    out = {"x": out_dtype, "scale": parameter_dtype or out_dtype, "offset": parameter_dtype or out_dtype}
    budgets = {}
    for key, w in want.items():
        if w is None:
            continue
        # the terms may be rounded once more, to the gradient's dtype, before they cancel
        last = T.output_roundoff(acc_dtype, out[key])  # NUM.N5: the gradient's own last rounding
        # below the gradient dtype's normal range its rounding is absolute: one subnormal spacing, no finer
        floor = float(T.finfo(out[key]).smallest_subnormal)
        budgets[key] = (
            T.SAFETY * (spread[key] + (rel + last) * terms.get(key, 0.0) + last * np.abs(w)) + floor
        )
    return budgets


def state_budget(
    norm: str, x: np.ndarray, params: dict, expected, previous, *, acc_dtype: str, out_dtype: str
) -> dict[str, tuple]:
    """NUM.N5 for the running statistics one step updates: {"mean" | "var": (elementwise budget,
    "NUM.N5")} for the `expected` state a step from `previous` gives (RunningStats both), the batch
    statistics taken in `acc_dtype` and the state held in `out_dtype`. Every property, meta-test and
    model that judges a state asks here."""
    n = reduction_length(norm, x, params)
    scales = state_error_scales(norm, x, params, acc_dtype)
    return {
        what: (
            T.running_stat_budget(
                acc_dtype=acc_dtype,
                out_dtype=out_dtype,
                n=n,
                batch_error_scale=scales[what],
                y_ref=getattr(expected, what),
                previous=getattr(previous, what),
            ),
            "NUM.N5",
        )
        for what in ("mean", "var")
    }


def state_error_scales(norm: str, x: np.ndarray, params: dict, acc_dtype: str) -> dict:
    """NUM.N5 for running statistics: the size of what each batch statistic is computed from. A mean
    off by d moves each (x - mean)^2 by 2 |x - mean| d + d^2, with d ~ u * growth(n) * max|x|."""
    n = reduction_length(norm, x, params)
    view, axes, _ = statistic_view(norm, x, params)
    centred, big = view - view.mean(axis=axes, keepdims=True), float(np.max(np.abs(x), initial=0.0))
    drift = T.unit_roundoff(acc_dtype) * T.growth(n) * big
    return {"mean": big, "var": 2 * float(np.max(np.abs(centred), initial=0.0)) * big + drift * big}
