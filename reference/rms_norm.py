"""RMSNorm (spec/rms_norm.md): divide by the root mean square over chosen axes; no centring."""
from __future__ import annotations

import numpy as np

from . import _common as c


def default_eps(dtype) -> float:
    """RMS.P3: the eps PyTorch uses when none is given, the machine epsilon of the input dtype."""
    return float(np.finfo(dtype).eps)


def _check(x, axes, eps, scale, offset):
    x = c.as_input(x, "RMS.C1", min_rank=1)
    axes = c.as_axes(axes, x.ndim, "RMS.C2")
    eps = c.as_real(eps, "RMS.C3", "eps", low=0.0)
    param_shape = tuple(x.shape[a] for a in axes)
    scale = c.as_param(scale, param_shape, "RMS.C4", "scale")
    offset = c.as_param(offset, param_shape, "RMS.C4", "offset")
    return x, axes, eps, scale, offset


def _normalized(x, axes, eps):
    rms = c.root_mean_square(x, axes, eps)
    return x / rms, rms


@c.ieee
def rms_norm(x, *, axes=(-1,), eps: float, scale=None, offset=None) -> np.ndarray:
    """x / sqrt(mean(x^2 over axes) + eps) * scale + offset. eps has no canonical default (RMS.P3)."""
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset)
    return c.affine(_normalized(x, axes, eps)[0], scale, offset, axes)


@c.ieee
def rms_norm_vjp(g, x, *, axes=(-1,), eps: float, scale=None, offset=None) -> c.Grads:
    x, axes, eps, scale, offset = _check(x, axes, eps, scale, offset)
    g = c.as_cotangent(g, x, "RMS.C1")
    xhat, rms = _normalized(x, axes, eps)
    g_hat, dscale, doffset = c.affine_vjp(g, xhat, scale, offset, axes)
    # d/dx of x * r(x), r = (mean(x^2) + eps)^-1/2: r * (g - xhat * mean(g * xhat))
    dx = (g_hat - xhat * np.mean(g_hat * xhat, axis=axes, keepdims=True)) / rms
    return c.Grads(dx, dscale, doffset)
