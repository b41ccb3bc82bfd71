"""LayerNorm (spec/layer_norm.md): statistics over chosen axes of each sample, elementwise affine."""
from __future__ import annotations

import numpy as np

from . import _common as c


def _check(x, axes, eps, scale, offset):
    x = c.as_input(x, "LN.C1", min_rank=1)
    axes = c.as_axes(axes, x.ndim, "LN.C2")
    eps = c.as_real(eps, "LN.C3", "eps", low=0.0)
    param_shape = tuple(x.shape[a] for a in axes)
    scale = c.as_param(scale, param_shape, "LN.C4", "scale")
    offset = c.as_param(offset, param_shape, "LN.C4", "offset")
    return x, axes, eps, scale, offset


@c.ieee
def layer_norm(x, *, axes=(-1,), eps: float = 1e-5, scale=None, offset=None) -> np.ndarray:
    """Normalize over `axes`; scale and offset have the shape x.shape[axes] (LN.P4)."""
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset)
    return c.affine(c.standardized(x, axes, eps)[0], scale, offset, axes)


@c.ieee
def layer_norm_vjp(g, x, *, axes=(-1,), eps: float = 1e-5, scale=None, offset=None) -> c.Grads:
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset)
    g = c.as_cotangent(g, x, "LN.C1")
    xhat, std, _ = c.standardized(x, axes, eps)
    g_hat, dscale, doffset = c.affine_vjp(g, xhat, scale, offset, axes)
    return c.Grads(c.standardized_vjp(g_hat, xhat, std, axes), dscale, doffset)
