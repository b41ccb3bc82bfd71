"""InstanceNorm (spec/instance_norm.md): per-sample, per-channel statistics over the spatial axes.

Optional running statistics follow BatchNorm's update (BN.S2) applied to the batch average of the
per-instance statistics (IN.S3); they are used in eval mode only when tracked.
"""

from __future__ import annotations

import numpy as np

from . import _common as c
from .batch_norm import (
    Result,
    RunningStats,
    check_running_norm,
    normalized,
    running_norm_vjp,
    update_running_stats,
)

BATCH_AXIS = 0


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
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> Result:
    """One InstanceNorm call: output, and the new running state (None when none is tracked)."""
    k = check_running_norm(
        "IN",
        x,
        channel_axis,
        eps,
        scale,
        offset,
        state,
        momentum,
        running_var,
        training,
        normalize_var,
        eps_placement,
        batch_is_statistic=True,
    )
    s = normalized(k, training)
    xhat, m = s.xhat, s.moments
    new_state = k.state
    if training and k.state is not None:
        assert m is not None, "training normalizes with the batch's moments"
        # Bessel's correction applies per instance (n = spatial size) before averaging (IN.S3).
        var = c.bessel(m.var, m.n) if k.running_var == "unbiased" else m.var
        new_state = update_running_stats(
            k.state, _per_channel(m.mean, k.axis), _per_channel(var, k.axis), k.momentum
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
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> c.Grads:
    k = check_running_norm(
        "IN",
        x,
        channel_axis,
        eps,
        scale,
        offset,
        state,
        momentum,
        running_var,
        training,
        normalize_var,
        eps_placement,
        batch_is_statistic=True,
    )
    return running_norm_vjp(k, g, training, "IN")
