"""BatchNorm (spec/batch_norm.md): per-channel statistics over every other axis, with running stats.

A training step is a pure function: it returns the output and the *new* running state, so a
sequence of steps is a fold and nothing is mutated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common as c

RUNNING_VAR_ESTIMATORS = ("biased", "unbiased")


@dataclass(frozen=True)
class RunningStats:
    """Running statistics of one BatchNorm (or InstanceNorm) layer, one value per channel (BN.P7)."""

    mean: np.ndarray
    var: np.ndarray
    num_batches_tracked: int = 0

    @classmethod
    def initial(cls, channels: int) -> "RunningStats":
        """The canonical initial state (BN.P7): mean 0, variance 1, no batches seen."""
        return cls(np.zeros(channels), np.ones(channels), 0)


@dataclass(frozen=True)
class Result:
    y: np.ndarray
    state: RunningStats | None


@dataclass(frozen=True)
class _Checked:
    x: np.ndarray
    axis: int
    reduced: tuple[int, ...]
    eps: float
    scale: np.ndarray | None
    offset: np.ndarray | None
    state: RunningStats | None
    momentum: float | None
    running_var: str


def check_state(state, channels: int, clause: str) -> RunningStats | None:
    if state is None:
        return None
    if not isinstance(state, RunningStats):
        raise c.ClauseError(clause, "state", f"must be a RunningStats or None, got {type(state).__name__}")
    return RunningStats(
        c.as_param(state.mean, (channels,), clause, "state.mean"),
        c.as_param(state.var, (channels,), clause, "state.var"),
        c.as_count(state.num_batches_tracked, clause, "state.num_batches_tracked", low=0),
    )


def check_momentum(momentum, clause: str) -> float | None:
    """None is the cumulative average (BN.S5); otherwise the weight on the new batch (BN.N4)."""
    return None if momentum is None else c.as_real(momentum, clause, "momentum", low=0.0, high=1.0)


def _check(x, channel_axis, eps, scale, offset, state, momentum, running_var, training) -> _Checked:
    x = c.as_input(x, "BN.C1", min_rank=2)
    axis = c.as_axis(channel_axis, x.ndim, "BN.C2", "channel_axis")
    channels = x.shape[axis]
    reduced = c.other_axes(x.ndim, (axis,))
    eps = c.as_real(eps, "BN.C3", "eps", low=0.0)
    momentum = check_momentum(momentum, "BN.C4")
    scale = c.as_param(scale, (channels,), "BN.C5", "scale")
    offset = c.as_param(offset, (channels,), "BN.C5", "offset")
    state = check_state(state, channels, "BN.C5")
    c.as_choice(running_var, RUNNING_VAR_ESTIMATORS, "BN.C6", "running_var")
    if not isinstance(training, bool):
        raise c.ClauseError("BN.C6", "training", f"must be True or False, got {training!r}")
    n = c.count(x.shape, reduced)
    if n == 0:
        raise c.ClauseError("BN.C1", "x", f"has no values per channel (shape {x.shape})")
    if training and state is not None and running_var == "unbiased" and n < 2:
        raise c.ClauseError(
            "BN.C7", "x", f"an unbiased running-variance update needs >= 2 values per channel, got {n}"
        )
    return _Checked(x, axis, reduced, eps, scale, offset, state, momentum, running_var)


def update_running_stats(state: RunningStats, mean, var_biased, n: int, momentum, running_var) -> RunningStats:
    """BN.S2 / BN.S5: blend the batch statistics into the running ones.

    `momentum` is the weight on the new batch (BN.N4); None averages all batches so far equally.
    """
    tracked = state.num_batches_tracked + 1
    weight = 1.0 / tracked if momentum is None else momentum
    batch_var = c.bessel(var_biased, n) if running_var == "unbiased" else var_biased
    return RunningStats(
        (1.0 - weight) * state.mean + weight * mean,
        (1.0 - weight) * state.var + weight * batch_var,
        tracked,
    )


def _uses_batch_stats(training: bool, state) -> bool:
    """BN.S1/S3/S4: batch statistics in training, and in eval when no running stats are tracked."""
    return training or state is None


def _normalized(k: _Checked, training: bool):
    """(xhat, sqrt(var + eps), batch moments or None when the running stats normalize)."""
    if _uses_batch_stats(training, k.state):
        return c.standardized(k.x, k.reduced, k.eps)
    std = np.sqrt(c.along(k.state.var, k.x.ndim, k.axis) + k.eps)
    return (k.x - c.along(k.state.mean, k.x.ndim, k.axis)) / std, std, None


@c.ieee
def batch_norm(
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
    """One BatchNorm call: output, and the new running state (None when none is tracked)."""
    k = _check(x, channel_axis, eps, scale, offset, state, momentum, running_var, training)
    xhat, _, m = _normalized(k, training)
    new_state = k.state
    if training and k.state is not None:
        new_state = update_running_stats(
            k.state, m.mean.reshape(-1), m.var.reshape(-1), m.n, k.momentum, k.running_var
        )
    return Result(c.affine(xhat, k.scale, k.offset, k.axis), new_state)


@c.ieee
def batch_norm_vjp(
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
    """Cotangents of the output y w.r.t. x, scale and offset (the state update is not differentiated)."""
    k = _check(x, channel_axis, eps, scale, offset, state, momentum, running_var, training)
    g = c.as_cotangent(g, k.x, "BN.C1")
    xhat, std, m = _normalized(k, training)
    g_hat, dscale, doffset = c.affine_vjp(g, xhat, k.scale, k.offset, k.axis)
    dx = g_hat / std if m is None else c.standardized_vjp(g_hat, xhat, std, k.reduced)
    return c.Grads(dx, dscale, doffset)
