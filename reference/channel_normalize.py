"""Per-channel input Normalize (spec/channel_normalize.md): (x - mean_c) / max(std_c, std_floor).

torchvision's Normalize is std_floor = 0 with given std; Keras' Normalization layer keeps a
variance and is std = sqrt(variance), std_floor = 1e-7 (CN.D2).
"""

from __future__ import annotations

import numpy as np

from . import _common as c


def _check(x, mean, std, channel_axis, std_floor):
    x = c.as_input(x, "CN.C1", min_rank=1)
    axis = c.as_axis(channel_axis, x.ndim, "CN.C2", "channel_axis")
    channels = x.shape[axis]
    stats = []
    for name, value in (("mean", mean), ("std", std)):
        arr = c.as_input(value, "CN.C3", min_rank=0, name=name).reshape(-1)
        if arr.shape[0] not in (1, channels):
            raise c.ClauseError(
                "CN.C3", name, f"needs 1 or {channels} values (one per channel), got {arr.shape[0]}"
            )
        stats.append(np.broadcast_to(arr, (channels,)))
    mean, std = stats
    std_floor = c.as_real(std_floor, "CN.C4", "std_floor", low=0.0)
    if np.any(std < 0) or not np.all(np.isfinite(std)):
        raise c.ClauseError("CN.C4", "std", f"must be finite and >= 0, got {std}")
    divisor = np.maximum(std, std_floor)
    if np.any(divisor == 0):
        raise c.ClauseError(
            "CN.C4", "std", f"evaluates to zero after the floor {std_floor} (division by zero): {std}"
        )
    return x, axis, mean, divisor


@c.ieee
def channel_normalize(x, *, mean, std, channel_axis: int = -3, std_floor: float = 0.0) -> np.ndarray:
    x, axis, mean, divisor = _check(x, mean, std, channel_axis, std_floor)
    return (x - c.along(mean, x.ndim, axis)) / c.along(divisor, x.ndim, axis)


@c.ieee
def channel_normalize_vjp(g, x, *, mean, std, channel_axis: int = -3, std_floor: float = 0.0) -> c.Grads:
    x, axis, mean, divisor = _check(x, mean, std, channel_axis, std_floor)
    g = c.as_cotangent(g, x, "CN.C1")
    return c.Grads(g / c.along(divisor, x.ndim, axis))
