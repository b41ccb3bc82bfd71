"""Synchronized (cross-replica) BatchNorm (spec/sync_batch_norm.md): one BatchNorm step whose
statistics pool the batches of R replicas.

The replicas' batches are given as one array split along the batch axis 0 (`replica_sizes`), so a
synchronized step has the same signature as every other norm and its output is the replicas' outputs
concatenated. Both pooling rules are one computation: per-element weights that sum to 1 over each
channel's values — 1/N for every element (count weighting, SBN.S1) or 1/(R·n_r) for an element of
replica r (equal weighting, SBN.S2).
"""

from __future__ import annotations

import numpy as np

from . import _common as c
from .batch_norm import Result, check_running_norm, normalized, update_running_stats

WEIGHTINGS = ("count", "equal")


def check(
    x, replica_sizes, weighting, channel_axis, eps, scale, offset, state, momentum, running_var, training
):
    """SBN.C1-C3, then BN.C1-C7 on the pooled batch (the statistics are one BatchNorm's)."""
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
        batch_is_statistic=False,
    )
    if k.axis == 0:
        raise c.ClauseError(
            "SBN.C2", "channel_axis", "must not be the batch axis 0, along which the replicas split"
        )
    if (
        isinstance(replica_sizes, (str, bytes))
        or not hasattr(replica_sizes, "__len__")
        or len(replica_sizes) == 0
    ):
        raise c.ClauseError(
            "SBN.C1", "replica_sizes", f"must be a non-empty sequence of batch sizes, got {replica_sizes!r}"
        )
    sizes = tuple(c.as_count(n, "SBN.C1", "replica_sizes", low=1) for n in replica_sizes)
    if sum(sizes) != k.x.shape[0]:
        raise c.ClauseError(
            "SBN.C1",
            "replica_sizes",
            f"must sum to the batch size {k.x.shape[0]}, got {sizes} (sum {sum(sizes)})",
        )
    c.as_choice(weighting, WEIGHTINGS, "SBN.C3", "weighting")
    return k, sizes


def element_weights(shape, axis: int, sizes: tuple[int, ...], weighting: str) -> np.ndarray:
    """Each element's weight in its channel's statistics, broadcastable to `shape` (varies along axis 0
    only): 1/N (count) or 1/(R·n_r) for replica r with n_r values per channel (equal)."""
    per_sample = c.count(shape, c.other_axes(len(shape), (0, axis)))  # values per channel in one sample
    if weighting == "count":
        rows = np.full(shape[0], 1.0 / (shape[0] * per_sample))
    else:
        rows = np.concatenate([np.full(n, 1.0 / (len(sizes) * n * per_sample)) for n in sizes])
    return rows.reshape((-1,) + (1,) * (len(shape) - 1))


def pooled(x: np.ndarray, reduced: tuple[int, ...], w: np.ndarray, eps: float) -> c.Standardized:
    """x̂ = (x − m) / sqrt(v + eps) with the weighted mean m = Σ w·x and variance v = Σ w·(x − m)²
    (two-pass, the mean refined once as in `_common.moments`)."""
    m0 = np.sum(w * x, axis=reduced, keepdims=True)
    centred = x - m0
    m1 = np.sum(w * centred, axis=reduced, keepdims=True)
    centred -= m1
    var = np.sum(w * centred * centred, axis=reduced, keepdims=True)
    divisor = np.sqrt(var + eps)
    risky = (var < 2.0**-900) | (var == np.inf)  # squares under- or overflowed: scale by the largest value
    if np.any(risky):
        big = np.max(np.abs(centred), axis=reduced, keepdims=True)
        big = np.where((big > 0) & np.isfinite(big), big, 1.0)
        scaled = np.sum(w * np.square(centred / big), axis=reduced, keepdims=True)
        eps_scaled = eps / big / big
        divisor = np.where(np.isfinite(eps_scaled), big * np.sqrt(scaled + eps_scaled), np.sqrt(eps))
    n = c.count(x.shape, reduced)
    return c.Standardized(centred / divisor, divisor, c.Moments(m0 + m1, centred, var, n), 1.0)


@c.ieee
def sync_batch_norm(
    x,
    *,
    replica_sizes,
    weighting: str = "count",
    channel_axis: int = 1,
    eps: float = 1e-5,
    scale=None,
    offset=None,
    training: bool = True,
    state=None,
    momentum: float | None = 0.1,
    running_var: str = "unbiased",
):
    """One synchronized step over the replicas' batches `x` (split along axis 0 by `replica_sizes`):
    their outputs, concatenated, and the new running state every replica then holds."""
    k, sizes = check(
        x, replica_sizes, weighting, channel_axis, eps, scale, offset, state, momentum, running_var, training
    )
    if not training and k.state is not None:  # SBN.S3: eval uses the running statistics, no pooling
        return Result(c.affine(normalized(k, False).xhat, k.scale, k.offset, k.axis), k.state)
    s = pooled(k.x, k.reduced, element_weights(k.x.shape, k.axis, sizes, weighting), k.eps)
    new_state = k.state
    if training and k.state is not None:
        m = s.moments
        assert m is not None, "training normalizes with the batch's moments"
        var = c.bessel(m.var, m.n) if k.running_var == "unbiased" else m.var
        new_state = update_running_stats(k.state, m.mean.reshape(-1), var.reshape(-1), k.momentum)
    return Result(c.affine(s.xhat, k.scale, k.offset, k.axis), new_state)


@c.ieee
def sync_batch_norm_vjp(
    g,
    x,
    *,
    replica_sizes,
    weighting: str = "count",
    channel_axis: int = 1,
    eps: float = 1e-5,
    scale=None,
    offset=None,
    training: bool = True,
    state=None,
    momentum: float | None = 0.1,
    running_var: str = "unbiased",
) -> c.Grads:
    """SBN.S4: cotangents of every replica's x (concatenated), scale and offset; the pooled statistics
    depend on every replica's values, so each replica's gradient has terms from all of them."""
    k, sizes = check(
        x, replica_sizes, weighting, channel_axis, eps, scale, offset, state, momentum, running_var, training
    )
    g = c.as_cotangent(g, k.x, "BN.C1")
    if not training and k.state is not None:
        s = normalized(k, False)
        g_hat, dscale, doffset = c.affine_vjp(g, s.xhat, k.scale, k.offset, k.axis)
        return c.Grads(g_hat / s.divisor, dscale, doffset)
    w = element_weights(k.x.shape, k.axis, sizes, weighting)
    s = pooled(k.x, k.reduced, w, k.eps)
    g_hat, dscale, doffset = c.affine_vjp(g, s.xhat, k.scale, k.offset, k.axis)
    # dL/dx = (ĝ − w·Σĝ − w·x̂·Σ ĝ·x̂) / σ: BN.S6 with the mean over values replaced by the weighted sum
    total_g = np.sum(g_hat, axis=k.reduced, keepdims=True)
    total_gx = np.sum(g_hat * s.xhat, axis=k.reduced, keepdims=True)
    dx = (g_hat - w * total_g - w * s.xhat * total_gx) / s.divisor
    return c.Grads(dx, dscale, doffset)
