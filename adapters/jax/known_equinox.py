"""equinox's known divergences (equinox: BatchNorm's 'ema' mode; equinox[batch]: its batch mode;
"equinox*" both), by clause: normalizing with the running averages (BN.D10) and rsqrt's derivative out of
range (LN.D10). known.py lists them in the family's order, with the entries equinox shares with flax and
haiku (BN.D14, LN.D10, NUM.D1)."""

from __future__ import annotations

import numpy as np

from normconf import reference as R
from normconf.reference import RunningStats
from normconf.vocabulary import (
    HUGE_ROW,
    RSQRT_HELD,
    Case,
    Computes,
    Divergence,
    Envelope,
    Raises,
    batch_stats,
    groups_where,
    half_rsqrt_jvp_groups,
    half_rsqrt_jvp_overflows,
    param,
    reference_value,
    rounded,
    rsqrt_jvp_underflows,
    tiny,
)

from .known_common import HALVES, XLA_PROMOTED_HALF

# equinox's BatchNorm gradient where the batch variance is ~1e35 (drawn by the quick profile, as found)
_EQX_HUGE = np.array(
    [
        [
            [
                [-7.720282054763479e17, -6.073974360962499e17, 7.280617033039872e15],
                [7.544476845631078e16, -4.596612813522207e17, -1.0060976009164882e18],
            ]
        ],
        [
            [
                [9.668968674702131e16, -2.301425068414075e17, -8.450446423731732e17],
                [5.663297490858803e17, 8.723883283248579e17, 2.29102987316822e17],
            ]
        ],
    ]
)
_EQX_HUGE_COTANGENT = np.array(
    [
        [
            [
                [-1.3758431673049927, -0.8541995286941528, -1.262688159942627],
                [-0.3357083201408386, -0.024902762845158577, 0.37274956703186035],
            ]
        ],
        [
            [
                [-0.3915764093399048, -0.6178653836250305, -0.10967652499675751],
                [1.0256526470184326, -0.7968522906303406, -1.2155134677886963],
            ]
        ],
    ]
)


# The models: what equinox computes where a divergence holds (vocabulary/models.py).
def ema_normalized(case: Case, dtype: str, which: str):
    """BN.D10: a training batch normalized by the running averages after this step's update; the first
    step (equinox's first_time) replaces the running state by the batch's statistics (momentum 1).
    Elsewhere (eval, or no state) the reference holds."""
    if not param(case, "training") or case.params.get("state") is None:
        return None
    first = case.params["state"].num_batches_tracked == 0
    if which in ("mean", "var"):
        return reference_value(case, which, {"momentum": 1.0}) if first else None
    if first:
        return None
    if which in ("x", "scale", "offset"):
        return _ema_normalized_vjp(case, which)
    updated = R.batch_norm(case.x, **case.params).state
    return reference_value(case, "y", {"training": False, "state": updated})


def _ema_normalized_vjp(case: Case, which: str, flushed: bool = False):
    """BN.D10's gradient: y = w (x - m) / sqrt(v + eps) + b with m = c mean_B + (1 - c) m0 and
    v = c var_B + (1 - c) v0 (canonical momentum c, biased batch variance), the running averages not
    stopped: dx = w/s [g - c/n sum g] - c/n (x - mean_B) K / s with K = sum (g w / s^2) (x - m).
    `flushed`: instead, the most dx can move as float32's flush to zero drops the terms g w / s^2 of K
    below its smallest normal, or the variance's whole term where its cotangent is (_flushed_terms)."""
    params, g = case.params, case.cotangent
    axis, c, state = param(case, "channel_axis") % case.x.ndim, param(case, "momentum"), params["state"]
    x, g = np.moveaxis(case.x, axis, -1), np.moveaxis(np.asarray(g, dtype=np.float64), axis, -1)
    rows, grads = x.reshape(-1, x.shape[-1]), g.reshape(-1, x.shape[-1])
    n, batch_mean = rows.shape[0], rows.mean(axis=0)
    batch_var = ((rows - batch_mean) ** 2).mean(axis=0)
    m, v = c * batch_mean + (1 - c) * state.mean, c * batch_var + (1 - c) * state.var
    w = params["scale"] if params.get("scale") is not None else np.ones(x.shape[-1])
    with np.errstate(all="ignore"):
        s = np.sqrt(v + param(case, "eps"))
        if which == "offset":
            return grads.sum(axis=0)
        if which == "scale":
            return (grads * (rows - m)).sum(axis=0) / s
        terms = grads * w / s**2
        k = (terms * (rows - m)).sum(axis=0)
        if flushed:
            lost = np.where(np.abs(terms) < tiny("float32"), np.abs(terms * (rows - m)), 0.0).sum(axis=0)
            # the variance's cotangent per value, c K / (2 s n): flushed whole below float32's normals
            dropped = np.where(c * np.abs(k) / (2 * s * n) < 2 * tiny("float32"), np.abs(k), 0.0)
            dx = c / n * np.abs(rows - batch_mean) * (lost + dropped) / s
        else:
            dx = w / s * (grads - c / n * grads.sum(axis=0)) - c / n * (rows - batch_mean) * k / s
    return np.moveaxis(dx.reshape(x.shape), -1, axis)


def _flushed_terms(case: Case, dtype: str, which: str):
    """BN.D10's dx in float32 (bfloat16 too: XLA's CPU computes it in float32): equinox divides by
    sqrt(v + eps), but JAX's chain rule forms g w s^-2 elementwise and then the variance's cotangent per
    value, c K / (2 s n); for values ~1e18 either can fall below float32's smallest normal, and XLA's CPU
    flushes subnormals to zero - a term of K, or the variance's whole term of its channel, drops out or
    not as the compiled program orders the products (measured, default profile seed 1: one cotangent of
    0.0045 left every dx of its channel ~1e-3 off; another draw lost a channel's variance term, 2.5%)."""
    if which != "x" or dtype not in ("float32", "bfloat16") or not _ema_step(case):
        return None
    return _ema_normalized_vjp(case, "x", flushed=True)


def _ema_step(case: Case) -> bool:
    return case.norm == "batch_norm" and case.params["state"].num_batches_tracked != 0


# BN.D10: 'ema' mode normalizes training batches with its running averages
BN_D10: list[Divergence] = [
    Divergence(
        adapters="equinox",
        norm="batch_norm",
        clause="BN.D10",
        reason="equinox BatchNorm ('ema' mode) normalizes training batches with its running averages",
        applies=lambda case, dtype: param(case, "training") and case.params.get("state") is not None,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.1, 2.0], [0.7, -1.0], [1.3, 0.5]]),
                {
                    "channel_axis": -1,
                    "momentum": 0.01,
                    "running_var": "biased",
                    "training": True,
                    "state": RunningStats(np.array([5.0, -3.0]), np.array([4.0, 0.25]), 3),
                },
                "standard",
            ),
            "float64",
        ),
        model=Computes(ema_normalized, kind="semantic", conditioned=True, absolute=_flushed_terms),
    ),
]

# LN.D10: rsqrt's derivative out of float32's (float16's) range
LN_D10: list[Divergence] = [
    Divergence(
        adapters="equinox*",
        norm="batch_norm",
        clause="LN.D10",
        reason="JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
        applies=rsqrt_jvp_underflows,
        example=lambda: (
            Case(
                "batch_norm",
                _EQX_HUGE,
                {"channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=_EQX_HUGE_COTANGENT,
            ),
            "float32",
        ),
        shows_in="gradient",
        model=RSQRT_HELD,
    ),
    Divergence(
        adapters="equinox*",
        norm="batch_norm",
        clause="LN.D10",
        reason=(
            "equinox's BatchNorm differentiates rsqrt in the input dtype: in float16 -rsqrt(v)/(2v) "
            "overflows for v < ~6.1e-4"
        ),
        applies=half_rsqrt_jvp_overflows,
        example=lambda: (
            Case(
                "batch_norm",
                np.full((3, 1), 1e4),
                {"eps": 2.0**-20, "channel_axis": 1, "training": True},
                "constant_channel",
                cotangent=np.array([0.125, -0.132, 0.64]).reshape(3, 1),
            ),
            "float16",
        ),
        shows_in="gradient",
        cpu=XLA_PROMOTED_HALF,
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
    Divergence(
        adapters="equinox",
        norm="group_norm",
        clause="LN.D10",
        reason="JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
        applies=rsqrt_jvp_underflows,
        example=lambda: (
            Case(
                "group_norm",
                HUGE_ROW.reshape(1, 1, 3),
                {"groups": 1, "channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=np.array([[[0.7, 0.3, 0.3]]]),
            ),
            "float32",
        ),
        shows_in="gradient",
        model=RSQRT_HELD,
    ),
]

# LN.D10 in float16 for equinox's BatchNorm: unlike its LayerNorm and GroupNorm it does not upcast, so
# the derivative of (y - m) / sqrt(v + eps) runs in float16 (equinox v0.13.8 nn/_batch_norm.py, _norm):
# Σ g (x - m) / (v + eps) times 1 / (2 sqrt(v + eps)) overflows where the group's spread is small and
# long (the quick gate once seeded by identity: 2 x 10^4 values of spread 0.03)
_SMALL_SPREAD = np.random.default_rng(5).normal(size=(64, 1)) * 0.005
LN_D10_SMALL_SPREAD: list[Divergence] = [
    Divergence(
        adapters="equinox",
        norm="batch_norm",
        clause="LN.D10",
        reason="equinox's BatchNorm differentiates 1/sqrt(v) in float16: with the cotangent reaching it, "
        "Σ g (x - m) v^-1.5 / 2 overflows for small v",
        applies=half_rsqrt_jvp_overflows,
        example=lambda: (
            Case(
                "batch_norm",
                rounded(_SMALL_SPREAD, "float16"),
                {"channel_axis": -1, "eps": 2.0**-20, "training": True, "running_var": "biased"},
                "tiny_spread",
                cotangent=rounded(np.random.default_rng(6).normal(size=(64, 1)), "float16"),
            ),
            "float16",
        ),
        shows_in="gradient",
        model=Envelope(groups_where(half_rsqrt_jvp_groups)),
    ),
]


# MP.D50: under the mixed policy (dtype=float32 layers on half activations) the 'ema' BatchNorm's
# training step selects between its half batch statistics and its float32 running averages with
# lax.select, which takes no mixed dtypes (equinox v0.13.8 nn/_batch_norm.py, L233-L239)
MP_D50: list[Divergence] = [
    Divergence(
        adapters="equinox@mixed",
        norm="batch_norm",
        clause="MP.D50",
        reason="equinox's BatchNorm(dtype=float32) raises on a half training batch: lax.select(first_time, "
        "batch_mean, mean) meets the half batch statistics and the float32 running averages",
        applies=lambda case, dtype: dtype in HALVES and batch_stats(case),
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5, 2.0], [0.75, -1.0], [1.25, 0.5]]),
                {"channel_axis": 1, "eps": 1e-5, "training": True, "momentum": 1.0, "running_var": "biased"},
                "standard",
            ),
            "float16",
        ),
        model=Raises("lax.select requires arguments to have the same dtypes"),
    ),
]
