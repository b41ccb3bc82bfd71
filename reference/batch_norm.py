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
class Checked:
    """Validated arguments of a norm with running statistics (BatchNorm here, InstanceNorm too)."""

    x: np.ndarray
    axis: int
    reduced: tuple[int, ...]
    eps: float
    scale: np.ndarray | None
    offset: np.ndarray | None
    state: RunningStats | None
    momentum: float | None
    running_var: str
    normalize_var: str = "biased"
    eps_placement: str = "inside_sqrt"


def check_state(state, channels: int, clause: str) -> RunningStats | None:
    if state is None:
        return None
    if not isinstance(state, RunningStats):
        raise c.ClauseError(clause, "state", f"must be a RunningStats or None, got {type(state).__name__}")
    return RunningStats(
        c.as_required_param(state.mean, (channels,), clause, "state.mean"),
        c.as_required_param(state.var, (channels,), clause, "state.var"),
        c.as_count(state.num_batches_tracked, clause, "state.num_batches_tracked", low=0),
    )


def check_running_norm(
    prefix: str,
    x,
    channel_axis,
    eps,
    scale,
    offset,
    state,
    momentum,
    running_var,
    training,
    normalize_var="biased",
    eps_placement="inside_sqrt",
    *,
    batch_is_statistic: bool,
) -> Checked:
    """The C-clauses BN.C1-C8 (and IN.C1-C8, numbered alike); `prefix` says whose.

    BatchNorm reduces every axis but the channel axis; InstanceNorm (`batch_is_statistic`) also keeps
    the batch axis 0, so each instance has its own statistics.
    """
    x = c.as_input(x, f"{prefix}.C1", min_rank=3 if batch_is_statistic else 2)
    axis = c.as_axis(channel_axis, x.ndim, f"{prefix}.C2", "channel_axis")
    if batch_is_statistic and axis == 0:
        raise c.ClauseError(f"{prefix}.C2", "channel_axis", "must not be the batch axis 0")
    channels = x.shape[axis]
    reduced = c.other_axes(x.ndim, (0, axis) if batch_is_statistic else (axis,))
    eps = c.as_real(eps, f"{prefix}.C3", "eps", low=0.0)
    momentum = (
        None if momentum is None else c.as_real(momentum, f"{prefix}.C4", "momentum", low=0.0, high=1.0)
    )
    scale = c.as_param(scale, (channels,), f"{prefix}.C5", "scale")
    offset = c.as_param(offset, (channels,), f"{prefix}.C5", "offset")
    state = check_state(state, channels, f"{prefix}.C5")
    c.as_choice(running_var, RUNNING_VAR_ESTIMATORS, f"{prefix}.C6", "running_var")
    if not isinstance(training, bool):
        raise c.ClauseError(f"{prefix}.C6", "training", f"must be True or False, got {training!r}")
    n = c.count(x.shape, reduced)
    if n == 0 or x.shape[0] == 0:
        raise c.ClauseError(f"{prefix}.C1", "x", f"has no values per statistic (shape {x.shape})")
    if training and state is not None and running_var == "unbiased" and n < 2:
        raise c.ClauseError(
            f"{prefix}.C7",
            "x",
            f"an unbiased running-variance update needs >= 2 values per statistic, got {n}",
        )
    # the normalizing variance exists only where batch statistics normalize (BN.S1/S4)
    c.check_divisor(normalize_var, eps_placement, n if training or state is None else 2, f"{prefix}.C8")
    return Checked(
        x, axis, reduced, eps, scale, offset, state, momentum, running_var, normalize_var, eps_placement
    )


def update_running_stats(state: RunningStats, mean, var, momentum) -> RunningStats:
    """BN.S2 / BN.S5: blend a batch's per-channel statistics into the running ones.

    `var` is already the estimator BN.P4 asks for. `momentum` is the weight on the new batch (BN.N4);
    None averages all batches so far equally.
    """
    tracked = state.num_batches_tracked + 1
    weight = 1.0 / tracked if momentum is None else momentum
    return RunningStats(
        (1.0 - weight) * state.mean + weight * mean, (1.0 - weight) * state.var + weight * var, tracked
    )


def normalized(k: Checked, training: bool) -> c.Standardized:
    """x̂ and its divisor; `moments` is None when the running statistics normalize.

    BN.S1/S3/S4: batch statistics in training, and in eval when no running stats are tracked.
    """
    if training or k.state is None:
        return c.standardized(k.x, k.reduced, k.eps, k.normalize_var, k.eps_placement)
    var = c.along(k.state.var, k.x.ndim, k.axis)
    divisor = np.sqrt(var + k.eps) if k.eps_placement == "inside_sqrt" else np.sqrt(var) + k.eps
    return c.Standardized((k.x - c.along(k.state.mean, k.x.ndim, k.axis)) / divisor, divisor, None, 0.0)


def running_norm_vjp(k: Checked, g, training: bool, prefix: str) -> c.Grads:
    """BN.S6 / IN.S4: the VJP of either norm; the state update is not differentiated."""
    g = c.as_cotangent(g, k.x, f"{prefix}.C1")
    s = normalized(k, training)
    g_hat, dscale, doffset = c.affine_vjp(g, s.xhat, k.scale, k.offset, k.axis)
    dx = g_hat / s.divisor if s.moments is None else c.standardized_vjp(g_hat, s, k.reduced)
    return c.Grads(dx, dscale, doffset)


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
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> Result:
    """One BatchNorm call: output, and the new running state (None when none is tracked)."""
    k = check_running_norm(
        "BN",
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
        batch_is_statistic=False,
    )
    s = normalized(k, training)
    xhat, m = s.xhat, s.moments
    new_state = k.state
    if training and k.state is not None:
        assert m is not None, "training normalizes with the batch's moments"
        var = c.bessel(m.var, m.n) if k.running_var == "unbiased" else m.var
        new_state = update_running_stats(k.state, m.mean.reshape(-1), var.reshape(-1), k.momentum)
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
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> c.Grads:
    """Cotangents of the output y w.r.t. x, scale and offset (the state update is not differentiated)."""
    k = check_running_norm(
        "BN",
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
        batch_is_statistic=False,
    )
    return running_norm_vjp(k, g, training, "BN")
