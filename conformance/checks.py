"""Comparing one framework outcome with the reference under the tolerance model (spec/numerics.md).

A check returns a Verdict: the worst element's error against its budget, the budget's basis, and
everything a report or a failure message needs (clause, adapter, dtype, the example, a repro).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normconf import reference as R
from normconf.reference.group_norm import _grouped, _ungrouped

from . import tolerances as T

STANDARDIZING = {"batch_norm", "instance_norm", "layer_norm", "group_norm"}


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

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def message(self) -> str:
        c = self.comparison
        return (f"[{self.clause}] {self.adapter} {self.norm} {self.dtype} {self.what}: worst error {c.worst_error:.3e} "
                f"at {c.index} vs budget {c.budget:.3e} ({self.basis}; {c.ratio:.3g}x budget, {c.ulps:.1f} ulps)")


def statistic_view(norm: str, x: np.ndarray, params: dict) -> tuple[np.ndarray, tuple[int, ...], Any]:
    """(view of x, axes each statistic spans, function mapping a keepdims statistic back to x's shape)."""
    ndim = x.ndim
    if norm in ("batch_norm", "instance_norm"):
        axis = params.get("channel_axis", 1) % ndim
        keep = (axis,) if norm == "batch_norm" else (0, axis)
        axes = tuple(i for i in range(ndim) if i not in keep)
        return x, axes, lambda s: np.broadcast_to(s, x.shape)
    if norm == "group_norm":
        axis = params.get("channel_axis", 1) % ndim
        view, axes = _grouped(x, params["groups"], axis, params.get("assignment", "contiguous"))
        moved = np.moveaxis(x, axis, 1).shape
        return view, axes, lambda s: _ungrouped(np.broadcast_to(s, view.shape), moved, axis)
    axes = params.get("axes", (-1,))
    axes = tuple(sorted(a % ndim for a in ((axes,) if isinstance(axes, int) else axes)))
    return x, axes, lambda s: np.broadcast_to(s, x.shape)


def reduction_length(norm: str, x: np.ndarray, params: dict) -> int:
    if norm == "local_response_norm":
        return int(params["size"])
    if norm == "channel_normalize":
        return 1
    view, axes, _ = statistic_view(norm, x, params)
    return max(1, math.prod(view.shape[a] for a in axes))


def _affine_magnitude(params: dict) -> float:
    scale = params.get("scale")
    return 1.0 if scale is None else float(np.max(np.abs(scale), initial=0.0))


def budget(norm: str, x: np.ndarray, params: dict, y_ref: np.ndarray, *, acc_dtype: str, out_dtype: str):
    """(elementwise budget, basis): NUM.N5, raised to NUM.N6 where honest arithmetic in the accumulation
    dtype is worse than the first-order model (ill-conditioned inputs of standardizing norms)."""
    n = reduction_length(norm, x, params)
    uses_batch_stats = not (params.get("training") is False and params.get("state") is not None)
    if norm in STANDARDIZING and uses_batch_stats:
        view, axes, back = statistic_view(norm, x, params)
        eps = params.get("eps", 1e-5)
        kappa = back(T.conditioning(view, axes, eps))
        xhat = back(R.layer_norm(view, axes=axes, eps=eps))
        first_order = T.standardizing_budget(acc_dtype=acc_dtype, out_dtype=out_dtype, n=n, kappa=kappa, xhat=xhat,
                                             scale=_affine_magnitude(params), y_ref=y_ref)
        honest = back(T.standardized_in_dtype(view, axes, eps, acc_dtype))
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
        return T.standardizing_budget(acc_dtype=acc_dtype, out_dtype=out_dtype, n=1, kappa=kappa, xhat=y_ref,
                                      scale=_affine_magnitude(params), y_ref=y_ref), "NUM.N5"
    first_order = T.standardizing_budget(acc_dtype=acc_dtype, out_dtype=out_dtype, n=n, kappa=1.0, xhat=y_ref,
                                         scale=None, y_ref=y_ref)
    return first_order, "NUM.N5"


def check(clause: str, adapter: str, norm: str, dtype: str, what: str, actual, expected, budget_and_basis,
          example: dict) -> Verdict:
    bound, basis = budget_and_basis
    comparison = T.compare(actual, expected, bound, dtype)
    return Verdict(clause, adapter, norm, dtype, what, comparison, basis, example)
