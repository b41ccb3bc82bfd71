"""Lp-normalize (spec/lp_normalize.md): divide by the p-norm over chosen axes, guarded by eps.

Where eps goes is the whole difference between frameworks (LP.N1); every placement is a function
of the norm ||x||_p, so it is one table.
"""

from __future__ import annotations

import numpy as np

from . import _common as c

# LP.N1: the divisor D as a function of the norm and of (eps, p), and whether D follows the norm
# (derivative 1) at that point; where it does not, D is constant in x.
EPS_PLACEMENTS = {
    "max_norm": (lambda norm, eps, p: np.maximum(norm, eps), lambda norm, eps, p: norm >= eps),
    "max_power_sum": (
        lambda norm, eps, p: np.maximum(norm, eps ** (1.0 / p)),
        lambda norm, eps, p: norm >= eps ** (1.0 / p),
    ),
    "add_norm": (lambda norm, eps, p: norm + eps, lambda norm, eps, p: np.ones(norm.shape, bool)),
    "none": (lambda norm, eps, p: norm, lambda norm, eps, p: np.ones(norm.shape, bool)),
    # x / N, and 0 for a zero row (x / inf): ONNX LpNormalization since onnx 1.21;
    # a NaN norm stays NaN (NUM.N9)
    "none_or_zero": (lambda norm, eps, p: np.where(norm == 0, np.inf, norm), lambda norm, eps, p: norm > 0),
}


def checked(x, p, axes, eps, eps_placement):
    x = c.as_input(x, "LP.C1", min_rank=1)
    axes = c.as_axes(axes, x.ndim, "LP.C2")
    c.require_values(x, axes, "LP.C1")
    p = c.as_real(p, "LP.C3", "p", low=1.0)
    eps = c.as_real(eps, "LP.C4", "eps", low=0.0)
    c.as_choice(eps_placement, EPS_PLACEMENTS, "LP.C5", "eps_placement")
    return x, p, axes, eps, eps_placement


def lp_norm(x: np.ndarray, p: float, axes: tuple[int, ...]) -> np.ndarray:
    """||x||_p over axes, keepdims, scaled by the largest magnitude so no power over- or underflows."""
    big = np.max(np.abs(x), axis=axes, keepdims=True)
    safe = np.where((big > 0) & np.isfinite(big), big, 1.0)
    return safe * np.sum((np.abs(x) / safe) ** p, axis=axes, keepdims=True) ** (1.0 / p)


@c.ieee
def lp_normalize(
    x, *, p: float = 2.0, axes=(1,), eps: float = 1e-12, eps_placement: str = "max_norm"
) -> np.ndarray:
    x, p, axes, eps, placement = checked(x, p, axes, eps, eps_placement)
    divisor, _ = EPS_PLACEMENTS[placement]
    return x / divisor(lp_norm(x, p, axes), eps, p)


@c.ieee
def lp_normalize_vjp(
    g, x, *, p: float = 2.0, axes=(1,), eps: float = 1e-12, eps_placement: str = "max_norm"
) -> c.Grads:
    x, p, axes, eps, placement = checked(x, p, axes, eps, eps_placement)
    g = c.as_cotangent(g, x, "LP.C1")
    divisor, follows_norm = EPS_PLACEMENTS[placement]
    norm = lp_norm(x, p, axes)
    d = divisor(norm, eps, p)
    # y = x / D(N): dx = g / D - x.g / D^2 * D'(N) * dN/dx, dN/dx_j = sign(x_j) (|x_j| / N)^(p-1);
    # at N = 0 the norm has no derivative and the spec takes the zero subgradient (LP.N2).
    through_norm = follows_norm(norm, eps, p) & (norm > 0)
    safe_norm = np.where(norm > 0, norm, 1.0)
    dnorm = np.sign(x) * (np.abs(x) / safe_norm) ** (p - 1.0)
    x_dot_g = np.sum(x * g, axis=axes, keepdims=True)
    return c.Grads(g / d - np.where(through_norm, x_dot_g / (d * d), 0.0) * dnorm)
