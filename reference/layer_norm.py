"""LayerNorm (spec/layer_norm.md): statistics over chosen axes of each sample, elementwise affine."""

from __future__ import annotations

import numpy as np

from . import _common as c


def _check(x, axes, eps, scale, offset, normalize_var, eps_placement):
    x = c.as_input(x, "LN.C1", min_rank=1)
    axes = c.as_axes(axes, x.ndim, "LN.C2")
    c.require_values(x, axes, "LN.C1")
    eps = c.as_real(eps, "LN.C3", "eps", low=0.0)
    param_shape = tuple(x.shape[a] for a in axes)
    scale = c.as_param(scale, param_shape, "LN.C4", "scale")
    offset = c.as_param(offset, param_shape, "LN.C4", "offset")
    c.check_divisor(normalize_var, eps_placement, c.count(x.shape, axes), "LN.C5")
    return x, axes, eps, scale, offset


@c.ieee
def layer_norm(
    x,
    *,
    axes=(-1,),
    eps: float = 1e-5,
    scale=None,
    offset=None,
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> np.ndarray:
    """Normalize over `axes`; scale and offset have the shape x.shape[axes] (LN.P3); LN.P4 the divisor."""
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset, normalize_var, eps_placement)
    return c.affine(c.standardized(x, axes, eps, normalize_var, eps_placement).xhat, scale, offset, axes)


@c.ieee
def layer_norm_vjp(
    g,
    x,
    *,
    axes=(-1,),
    eps: float = 1e-5,
    scale=None,
    offset=None,
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> c.Grads:
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset, normalize_var, eps_placement)
    g = c.as_cotangent(g, x, "LN.C1")
    s = c.standardized(x, axes, eps, normalize_var, eps_placement)
    g_hat, dscale, doffset = c.affine_vjp(g, s.xhat, scale, offset, axes)
    return c.Grads(c.standardized_vjp(g_hat, s, axes), dscale, doffset)
