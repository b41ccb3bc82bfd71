"""InstanceNorm (spec/instance_norm.md): per-sample, per-channel statistics over the spatial axes.

Optional running statistics follow BatchNorm's update (BN.S2) applied to the batch average of the
per-instance statistics (IN.S3); they are used in eval mode only when tracked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common as c
from .batch_norm import RUNNING_VAR_ESTIMATORS, Result, RunningStats, check_momentum, check_state, update_running_stats

BATCH_AXIS = 0


@dataclass(frozen=True)
class _Checked:
    x: np.ndarray
    axis: int
    spatial: tuple[int, ...]
    eps: float
    scale: np.ndarray | None
    offset: np.ndarray | None
    state: RunningStats | None
    momentum: float | None
    running_var: str


def _check(x, channel_axis, eps, scale, offset, state, momentum, running_var, training) -> _Checked:
    x = c.as_input(x, "IN.C1", min_rank=3)
    axis = c.as_axis(channel_axis, x.ndim, "IN.C2", "channel_axis")
    if axis == BATCH_AXIS:
        raise c.ClauseError("IN.C2", "channel_axis", "must not be the batch axis 0")
    channels = x.shape[axis]
    spatial = c.other_axes(x.ndim, (BATCH_AXIS, axis))
    eps = c.as_real(eps, "IN.C3", "eps", low=0.0)
    momentum = check_momentum(momentum, "IN.C4")
    scale = c.as_param(scale, (channels,), "IN.C5", "scale")
    offset = c.as_param(offset, (channels,), "IN.C5", "offset")
    state = check_state(state, channels, "IN.C5")
    c.as_choice(running_var, RUNNING_VAR_ESTIMATORS, "IN.C6", "running_var")
    if not isinstance(training, bool):
        raise c.ClauseError("IN.C6", "training", f"must be True or False, got {training!r}")
    n = c.count(x.shape, spatial)
    if n == 0 or x.shape[BATCH_AXIS] == 0:
        raise c.ClauseError("IN.C1", "x", f"has no values per instance and channel (shape {x.shape})")
    if training and state is not None and running_var == "unbiased" and n < 2:
        raise c.ClauseError(
            "IN.C7", "x", f"an unbiased running-variance update needs >= 2 values per instance, got {n}"
        )
    return _Checked(x, axis, spatial, eps, scale, offset, state, momentum, running_var)


def _uses_instance_stats(training: bool, state) -> bool:
    """IN.S1/S4: instance statistics in training, and in eval when no running stats are tracked."""
    return training or state is None


def _normalized(k: _Checked, training: bool):
    if _uses_instance_stats(training, k.state):
        return c.standardized(k.x, k.spatial, k.eps)
    std = np.sqrt(c.along(k.state.var, k.x.ndim, k.axis) + k.eps)
    return (k.x - c.along(k.state.mean, k.x.ndim, k.axis)) / std, std, None


def _per_channel(stat: np.ndarray, axis: int) -> np.ndarray:
    """Average a keepdims per-(instance, channel) statistic over the batch: one value per channel."""
    return np.moveaxis(np.mean(stat, axis=BATCH_AXIS, keepdims=True), axis, 0).reshape(-1)


@c.ieee
def instance_norm(
    x,
    *,
    channel_axis: int = 1,
    eps: float = 1e-5,
    scale=None,
    offset=None,
    training: bool = True,
    state: RunningStats | None = None,
    momentum: float | None = 0.1,
    running_var: str = "unbiased",
) -> Result:
    """One InstanceNorm call: output, and the new running state (None when none is tracked)."""
    k = _check(x, channel_axis, eps, scale, offset, state, momentum, running_var, training)
    xhat, _, m = _normalized(k, training)
    new_state = k.state
    if training and k.state is not None:
        # Bessel's correction applies per instance (n = spatial size) before averaging (IN.S3).
        var = c.bessel(m.var, m.n) if k.running_var == "unbiased" else m.var
        new_state = update_running_stats(
            k.state, _per_channel(m.mean, k.axis), _per_channel(var, k.axis), m.n, k.momentum, "biased"
        )
    return Result(c.affine(xhat, k.scale, k.offset, k.axis), new_state)


@c.ieee
def instance_norm_vjp(
    g,
    x,
    *,
    channel_axis: int = 1,
    eps: float = 1e-5,
    scale=None,
    offset=None,
    training: bool = True,
    state: RunningStats | None = None,
    momentum: float | None = 0.1,
    running_var: str = "unbiased",
) -> c.Grads:
    k = _check(x, channel_axis, eps, scale, offset, state, momentum, running_var, training)
    g = c.as_cotangent(g, k.x, "IN.C1")
    xhat, std, m = _normalized(k, training)
    g_hat, dscale, doffset = c.affine_vjp(g, xhat, k.scale, k.offset, k.axis)
    dx = g_hat / std if m is None else c.standardized_vjp(g_hat, xhat, std, k.spatial)
    return c.Grads(dx, dscale, doffset)
