"""RMSNorm (spec/rms_norm.md): divide by the root mean square over chosen axes; no centring."""

from __future__ import annotations

import numpy as np

from . import _common as c


def default_eps(dtype) -> float:
    """RMS.P3: the eps PyTorch uses when none is given, the machine epsilon of the input dtype."""
    return float(np.finfo(dtype).eps)


def _check(x, axes, eps, scale, offset, eps_placement):
    x = c.as_input(x, "RMS.C1", min_rank=1)
    axes = c.as_axes(axes, x.ndim, "RMS.C2")
    c.require_values(x, axes, "RMS.C1")
    eps = c.as_real(eps, "RMS.C3", "eps", low=0.0)
    param_shape = tuple(x.shape[a] for a in axes)
    scale = c.as_param(scale, param_shape, "RMS.C4", "scale")
    offset = c.as_param(offset, param_shape, "RMS.C4", "offset")
    c.as_choice(eps_placement, c.EPS_PLACEMENTS, "RMS.C5", "eps_placement")
    return x, axes, eps, scale, offset


def _normalized(x, axes, eps, eps_placement):
    """(x̂, divisor d, slope): d = sqrt(mean(x²) + eps), or sqrt(mean(x²)) + eps with eps outside
    (RMS.P4); slope = 2·d·D'(mean(x²)), the weight of the x̂ term in the VJP (1 with eps inside)."""
    if eps_placement == "inside_sqrt":
        rms = c.root_mean_square(x, axes, eps)
        return x / rms, rms, 1.0
    root = c.root_mean_square(x, axes, 0.0)
    divisor = root + eps
    return x / divisor, divisor, np.where(root > 0, divisor / np.where(root > 0, root, 1.0), 0.0)


@c.ieee
def rms_norm(
    x, *, axes=(-1,), eps: float, scale=None, offset=None, eps_placement: str = "inside_sqrt"
) -> np.ndarray:
    """x / sqrt(mean(x^2 over axes) + eps) * scale + offset. eps has no canonical default (RMS.P3)."""
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset, eps_placement)
    return c.affine(_normalized(x, axes, eps, eps_placement)[0], scale, offset, axes)


@c.ieee
def rms_norm_vjp(
    g, x, *, axes=(-1,), eps: float, scale=None, offset=None, eps_placement: str = "inside_sqrt"
) -> c.Grads:
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset, eps_placement)
    g = c.as_cotangent(g, x, "RMS.C1")
    xhat, divisor, slope = _normalized(x, axes, eps, eps_placement)
    g_hat, dscale, doffset = c.affine_vjp(g, xhat, scale, offset, axes)
    # d/dx of x / D(mean(x^2)): (g - slope * xhat * mean(g * xhat)) / d
    dx = (g_hat - slope * xhat * np.mean(g_hat * xhat, axis=axes, keepdims=True)) / divisor
    return c.Grads(dx, dscale, doffset)
