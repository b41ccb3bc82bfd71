"""An independent, slow oracle for the reference: the spec's equations evaluated element by element
in 256-bit arithmetic (mpmath), sharing no code with normconf.reference.

Inputs are float64 arrays (or object arrays of mpf, for finite differences); outputs are object
arrays of mpf. Every sum is over explicitly enumerated index tuples, so axis handling is checked too.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np

PRECISION_BITS = 256
mpmath.mp.prec = PRECISION_BITS
mpf = mpmath.mpf


def exact(a) -> np.ndarray:
    """An object array of mpf holding the exact values of a float64 (or mpf) array."""
    arr = np.asarray(a, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = mpf(arr[idx])
    return out


def to_float(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape)
    for idx in np.ndindex(a.shape):
        out[idx] = float(a[idx])
    return out


def _groups(shape, key):
    """Partition the indices of `shape` by key(index): {key: [indices]}."""
    groups: dict = {}
    for idx in itertools.product(*(range(s) for s in shape)):
        groups.setdefault(key(idx), []).append(idx)
    return groups


def divisor(var, eps, eps_placement):
    """sqrt(var + eps), or sqrt(var) + eps with eps outside the root."""
    return mpmath.sqrt(var + eps) if eps_placement == "inside_sqrt" else mpmath.sqrt(var) + eps


def standardize(
    x, key, eps, scale=None, offset=None, param_key=None, normalize_var="biased", eps_placement="inside_sqrt"
):
    """(x - mean) / sqrt(var + eps) * scale + offset, mean and var over each group of `key` (var biased
    unless `normalize_var="unbiased"`; eps outside the root with `eps_placement="outside_sqrt"`).

    Returns (y, {group: (mean, biased var, n)}).
    """
    x = exact(x)
    y = np.empty(x.shape, dtype=object)
    stats = {}
    for k, members in _groups(x.shape, key).items():
        n = len(members)
        mean = mpmath.fsum(x[i] for i in members) / n
        var = mpmath.fsum((x[i] - mean) ** 2 for i in members) / n
        stats[k] = (mean, var, n)
        d = divisor(var * n / (n - 1) if normalize_var == "unbiased" else var, eps, eps_placement)
        for i in members:
            v = (x[i] - mean) / d
            if scale is not None:
                v *= mpf(scale[param_key(i)])
            if offset is not None:
                v += mpf(offset[param_key(i)])
            y[i] = v
    return y, stats


def _channel(axis):
    return lambda i: i[axis]


# --- one function per norm, keyword names as in the spec -------------------------------------


def batch_norm(
    x,
    *,
    channel_axis=1,
    eps=1e-5,
    scale=None,
    offset=None,
    training=True,
    state=None,
    momentum=0.1,
    running_var="unbiased",
    normalize_var="biased",
    eps_placement="inside_sqrt",
):
    axis = channel_axis % np.ndim(x)
    if training or state is None:
        y, stats = standardize(
            x, _channel(axis), eps, scale, offset, _channel(axis), normalize_var, eps_placement
        )
        if not training or state is None:
            return y, None
        mean0, var0, tracked = state
        weight = mpf(1) / (tracked + 1) if momentum is None else mpf(momentum)
        new_mean, new_var = [], []
        for ch in range(np.shape(x)[axis]):
            mean, var, n = stats[ch]
            batch_var = var * n / (n - 1) if running_var == "unbiased" else var
            new_mean.append((1 - weight) * mpf(mean0[ch]) + weight * mean)
            new_var.append((1 - weight) * mpf(var0[ch]) + weight * batch_var)
        return y, (new_mean, new_var, tracked + 1)
    mean0, var0, _ = state
    x = exact(x)
    y = np.empty(x.shape, dtype=object)
    for i in np.ndindex(x.shape):
        ch = i[axis]
        v = (x[i] - mpf(mean0[ch])) / divisor(mpf(var0[ch]), eps, eps_placement)
        v = v * mpf(scale[ch]) if scale is not None else v
        y[i] = v + mpf(offset[ch]) if offset is not None else v
    return y, state


def sync_batch_norm(
    x,
    *,
    replica_sizes,
    weighting="count",
    channel_axis=1,
    eps=1e-5,
    scale=None,
    offset=None,
    training=True,
    state=None,
    momentum=0.1,
    running_var="unbiased",
):
    """Per channel: each replica's mean of x and of x² (its own rows), pooled with weight n_r/N
    (count) or 1/R (equal); var = E[x²] − mean², exact at 256 bits."""
    axis = channel_axis % np.ndim(x)
    if not training and state is not None:
        return batch_norm(
            x, channel_axis=channel_axis, eps=eps, scale=scale, offset=offset, training=False, state=state
        )
    x = exact(x)
    starts = np.concatenate([[0], np.cumsum(replica_sizes)])
    replica_of = {row: r for r in range(len(replica_sizes)) for row in range(starts[r], starts[r + 1])}
    groups = _groups(x.shape, lambda i: (i[axis], replica_of[i[0]]))
    channels = np.shape(x)[axis]
    total = sum(len(groups[(0, r)]) for r in range(len(replica_sizes)))
    pooled = []
    for ch in range(channels):
        mean = square = mpf(0)
        for r in range(len(replica_sizes)):
            members = groups[(ch, r)]
            weight = mpf(len(members)) / total if weighting == "count" else mpf(1) / len(replica_sizes)
            mean += weight * mpmath.fsum(x[i] for i in members) / len(members)
            square += weight * mpmath.fsum(x[i] * x[i] for i in members) / len(members)
        pooled.append((mean, square - mean * mean))
    y = np.empty(x.shape, dtype=object)
    for i in np.ndindex(x.shape):
        mean, var = pooled[i[axis]]
        v = (x[i] - mean) / mpmath.sqrt(var + mpf(eps))
        v = v * mpf(scale[i[axis]]) if scale is not None else v
        y[i] = v + mpf(offset[i[axis]]) if offset is not None else v
    if state is None:
        return y, None
    mean0, var0, tracked = state
    weight = mpf(1) / (tracked + 1) if momentum is None else mpf(momentum)
    new_mean = [(1 - weight) * mpf(mean0[ch]) + weight * pooled[ch][0] for ch in range(channels)]
    new_var = [
        (1 - weight) * mpf(var0[ch])
        + weight * (pooled[ch][1] * total / (total - 1) if running_var == "unbiased" else pooled[ch][1])
        for ch in range(channels)
    ]
    return y, (new_mean, new_var, tracked + 1)


def instance_norm(
    x,
    *,
    channel_axis=1,
    eps=1e-5,
    scale=None,
    offset=None,
    training=True,
    state=None,
    momentum=0.1,
    running_var="unbiased",
    normalize_var="biased",
    eps_placement="inside_sqrt",
):
    axis = channel_axis % np.ndim(x)
    if not training and state is not None:
        return batch_norm(
            x,
            channel_axis=axis,
            eps=eps,
            scale=scale,
            offset=offset,
            training=False,
            state=state,
            eps_placement=eps_placement,
        )
    y, stats = standardize(
        x, lambda i: (i[0], i[axis]), eps, scale, offset, _channel(axis), normalize_var, eps_placement
    )
    if not training or state is None:
        return y, None
    mean0, var0, tracked = state
    weight = mpf(1) / (tracked + 1) if momentum is None else mpf(momentum)
    batch = np.shape(x)[0]
    new_mean, new_var = [], []
    for ch in range(np.shape(x)[axis]):
        means = [stats[(b, ch)][0] for b in range(batch)]
        variances = [
            stats[(b, ch)][1]
            * (stats[(b, ch)][2] / mpf(stats[(b, ch)][2] - 1) if running_var == "unbiased" else 1)
            for b in range(batch)
        ]
        new_mean.append((1 - weight) * mpf(mean0[ch]) + weight * mpmath.fsum(means) / batch)
        new_var.append((1 - weight) * mpf(var0[ch]) + weight * mpmath.fsum(variances) / batch)
    return y, (new_mean, new_var, tracked + 1)


def layer_norm(
    x, *, axes=(-1,), eps=1e-5, scale=None, offset=None, normalize_var="biased", eps_placement="inside_sqrt"
):
    ndim = np.ndim(x)
    axes = sorted(a % ndim for a in axes)
    key = lambda i: tuple(v for d, v in enumerate(i) if d not in axes)  # noqa: E731
    param_key = lambda i: tuple(i[a] for a in axes)  # noqa: E731
    return standardize(x, key, eps, scale, offset, param_key, normalize_var, eps_placement)[0]


def group_norm(
    x,
    *,
    groups,
    channel_axis=1,
    eps=1e-5,
    scale=None,
    offset=None,
    assignment="contiguous",
    normalize_var="biased",
    eps_placement="inside_sqrt",
):
    axis = channel_axis % np.ndim(x)
    per_group = np.shape(x)[axis] // groups
    group_of = (lambda ch: ch // per_group) if assignment == "contiguous" else (lambda ch: ch % groups)
    return standardize(
        x,
        lambda i: (i[0], group_of(i[axis])),
        eps,
        scale,
        offset,
        _channel(axis),
        normalize_var,
        eps_placement,
    )[0]


def rms_norm(x, *, axes=(-1,), eps, scale=None, offset=None, eps_placement="inside_sqrt"):
    x = exact(x)
    axes = sorted(a % x.ndim for a in axes)
    y = np.empty(x.shape, dtype=object)
    for _, members in _groups(x.shape, lambda i: tuple(v for d, v in enumerate(i) if d not in axes)).items():
        ms = mpmath.fsum(x[i] ** 2 for i in members) / len(members)
        for i in members:
            p = tuple(i[a] for a in axes)
            v = x[i] / divisor(ms, eps, eps_placement)
            v = v * mpf(scale[p]) if scale is not None else v
            y[i] = v + mpf(offset[p]) if offset is not None else v
    return y


def local_response_norm(
    x, *, size, alpha=1e-4, beta=0.75, k=1.0, channel_axis=1, alpha_over_size=True, extra="before"
):
    x = exact(x)
    axis = channel_axis % x.ndim
    channels = x.shape[axis]
    before = size // 2 if extra == "before" else (size - 1) // 2
    a = mpf(alpha) / size if alpha_over_size else mpf(alpha)
    y = np.empty(x.shape, dtype=object)
    for i in np.ndindex(x.shape):
        lo = i[axis] - before
        total = mpmath.fsum(
            x[i[:axis] + (j,) + i[axis + 1 :]] ** 2 for j in range(lo, lo + size) if 0 <= j < channels
        )
        y[i] = x[i] * (k + a * total) ** (-mpf(beta))
    return y


def lp_normalize(x, *, p=2.0, axes=(1,), eps=1e-12, eps_placement="max_norm"):
    x = exact(x)
    axes = sorted(a % x.ndim for a in axes)
    p, eps = mpf(p), mpf(eps)
    y = np.empty(x.shape, dtype=object)
    for _, members in _groups(x.shape, lambda i: tuple(v for d, v in enumerate(i) if d not in axes)).items():
        power_sum = mpmath.fsum(abs(x[i]) ** p for i in members)
        norm = power_sum ** (1 / p)
        divisor = {
            "max_norm": max(norm, eps),
            "max_power_sum": max(power_sum, eps) ** (1 / p),
            "add_norm": norm + eps,
            "none": norm,
            "none_or_zero": norm if norm > 0 else mpmath.inf,
        }[eps_placement]
        for i in members:
            y[i] = x[i] / divisor
    return y


def channel_normalize(x, *, mean, std, channel_axis=-3, std_floor=0.0):
    x = exact(x)
    axis = channel_axis % x.ndim
    mean = np.broadcast_to(np.asarray(mean, dtype=float).reshape(-1), (x.shape[axis],))
    std = np.broadcast_to(np.asarray(std, dtype=float).reshape(-1), (x.shape[axis],))
    y = np.empty(x.shape, dtype=object)
    for i in np.ndindex(x.shape):
        y[i] = (x[i] - mpf(mean[i[axis]])) / max(mpf(std[i[axis]]), mpf(std_floor))
    return y


# --- gradients by central differences at 256 bits ---------------------------------------------

STEP = mpf(2) ** -110  # truncation error ~ STEP^2 (1e-66); cancellation costs ~110 of 256 bits


def numeric_vjp(forward, g, arrays: dict, name: str, **params) -> np.ndarray:
    """d(sum(g * forward(**arrays, **params))) / d arrays[name], one central difference per element.

    `forward` returns an object array (or a tuple whose first item is one).
    """
    base = exact(arrays[name])
    g = exact(g)
    out = np.empty(base.shape, dtype=object)

    def loss(value):
        y = forward(**{**arrays, name: value}, **params)
        y = y[0] if isinstance(y, tuple) else y
        return mpmath.fsum(a * b for a, b in zip(y.ravel(), g.ravel(), strict=True))

    for idx in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[idx] += STEP
        down[idx] -= STEP
        out[idx] = (loss(up) - loss(down)) / (2 * STEP)
    return out
