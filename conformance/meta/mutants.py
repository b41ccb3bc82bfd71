"""A mutation corpus: NumPy norms written as a user would, each WRONG one with one deliberate bug, each
CORRECT one right but computed differently from the reference. `test_mutants.py` checks that the quick
profile kills the wrong ones and passes the correct ones; `normconf bench --sections mutants` prints the
kill table for a profile.

    normconf check conformance/meta/mutants.py:ln_eps_outside_sqrt     # one of them

Every implementation computes in float64 and rounds its answer to the input's dtype (what an honest
float32 implementation can match), except where the bug is the precision itself; each name's first
word is its norm, and its docstring says what is wrong (or different) and which regime shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from normconf.adapters.plugin import implementation
from normconf.reference import RunningStats

F64 = np.float64


def _axes(x, axes) -> tuple[int, ...]:
    return tuple(sorted(a % x.ndim for a in np.atleast_1d(axes)))


def _affine(y, scale, offset, shape):
    if scale is not None:
        y = y * np.reshape(scale.astype(F64), shape)
    if offset is not None:
        y = y + np.reshape(offset.astype(F64), shape)
    return y


def _axes_shape(x, axes):
    return [x.shape[a] if a in axes else 1 for a in range(x.ndim)]


def _channel_shape(x, axis):
    """Per-channel parameters' broadcast shape: -1 on the channel axis (a single value broadcasts too)."""
    return [-1 if a == axis % x.ndim else 1 for a in range(x.ndim)]


def _standardize(v, axes, eps, ddof=0, inside=True):
    mean = v.mean(axis=axes, keepdims=True)
    var = v.var(axis=axes, keepdims=True, ddof=ddof) if v.size else np.zeros_like(mean)
    return (v - mean) / (np.sqrt(var + eps) if inside else np.sqrt(var) + eps)


def _layer_norm(x, axes, eps, scale, offset, **standardize):
    axes = _axes(x, axes)
    y = _standardize(x.astype(F64), axes, eps, **standardize)
    return _affine(y, scale, offset, _axes_shape(x, axes)).astype(x.dtype)


def _rms(x, axes, eps, scale, mean_square=None, outside=False):
    axes, v = _axes(x, axes), x.astype(F64)
    ms = np.mean(v * v, axis=axes, keepdims=True) if mean_square is None else mean_square(v, axes)
    y = v / (np.sqrt(ms) + eps if outside else np.sqrt(ms + eps))
    return _affine(y, scale, None, _axes_shape(x, axes)).astype(x.dtype)


def _batch_norm(
    x,
    eps,
    momentum,
    training,
    state,
    scale,
    offset,
    *,
    axes=None,
    ddof_running=1,
    flip=False,
    eval_batch=False,
):
    """Channels on axis 1, the canonical conventions unless a keyword says otherwise."""
    v = x.astype(F64)
    axes = (0, *range(2, x.ndim)) if axes is None else axes
    shape = _channel_shape(x, 1)
    use_batch = training or state is None or eval_batch
    if use_batch:
        mean, var = v.mean(axis=axes), v.var(axis=axes)
    else:
        mean, var = state.mean.astype(F64), state.var.astype(F64)
    y = (v - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = _affine(y, scale, offset, shape).astype(x.dtype)
    if training and state is not None:
        n = v.size // max(x.shape[1], 1)
        w = 1.0 / (state.num_batches_tracked + 1) if momentum is None else momentum
        w = 1.0 - w if flip else w
        unbiased = v.var(axis=axes, ddof=ddof_running) if n > ddof_running else var
        state = RunningStats(
            ((1 - w) * state.mean.astype(F64) + w * mean).astype(x.dtype),
            ((1 - w) * state.var.astype(F64) + w * unbiased).astype(x.dtype),
            state.num_batches_tracked + 1,
        )
    return y, state


def _group_view(x, groups, axis):
    """x with channels moved to axis 1 and split into (N, G, C/G, spatial...), and the way back."""
    moved = np.moveaxis(x, axis % x.ndim, 1)
    view = moved.reshape(moved.shape[0], groups, moved.shape[1] // groups, *moved.shape[2:])
    return view, lambda v: np.moveaxis(v.reshape(moved.shape), 1, axis % x.ndim)


def _group_norm(
    x, groups, eps, scale, offset, channel_axis, *, interleaved=False, per_channel=False, inside=True
):
    v = x.astype(F64)
    if interleaved:  # channel c in group c % G
        moved = np.moveaxis(v, channel_axis % x.ndim, 1)
        order = np.argsort(np.arange(moved.shape[1]) % groups, kind="stable")
        v = np.moveaxis(moved[:, order], 1, channel_axis % x.ndim)
    view, back = _group_view(v, groups, channel_axis)
    axes = tuple(range(3 if per_channel else 2, view.ndim))
    y = back(_standardize(view, axes, eps, inside=inside))
    if interleaved:
        moved = np.moveaxis(y, channel_axis % x.ndim, 1)
        y = np.moveaxis(moved[:, np.argsort(order, kind="stable")], 1, channel_axis % x.ndim)
    return _affine(y, scale, offset, _channel_shape(x, channel_axis)).astype(x.dtype)


def _window_sum(v, axis, before, after):
    """Each channel's window sum, a sliding window view over the zero-padded channels (not cumulative
    sums: their differences lose the window's digits to the whole axis' total)."""
    moved = np.moveaxis(v, axis, -1)
    padded = np.concatenate(
        [
            np.zeros(moved.shape[:-1] + (max(before, 0),)),
            moved,
            np.zeros(moved.shape[:-1] + (max(after, 0),)),
        ],
        axis=-1,
    )
    width = before + after + 1
    if width <= 0:
        return np.zeros_like(v)
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.moveaxis(windows.sum(axis=-1), -1, axis)


def _lrn(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra, *, window=None, axis=None):
    v = x.astype(F64)
    half = (size - 1) // 2
    before, after = (half + (size - 1) % 2, half) if extra == "before" else (half, half + (size - 1) % 2)
    before, after = window(before, after) if window else (before, after)
    a = alpha / size if alpha_over_size else alpha
    summed_axis = channel_axis % x.ndim if axis is None else axis
    base = k + a * _window_sum(v * v, summed_axis, before, after)
    return (v / base**beta).astype(x.dtype)


def _lp(x, axes, p, eps, eps_placement, *, power=None):
    axes, v = _axes(x, axes), x.astype(F64)
    powered = np.abs(v) ** p if power is None else power(v, p)
    power_sum = np.sum(powered, axis=axes, keepdims=True)
    norm = power_sum ** (1.0 / p)
    with np.errstate(divide="ignore", invalid="ignore"):
        divisor = {
            "max_norm": lambda: np.maximum(norm, eps),
            "max_power_sum": lambda: np.maximum(power_sum, eps) ** (1.0 / p),
            "add_norm": lambda: norm + eps,
            "none": lambda: norm,
            "none_or_zero": lambda: np.where(norm == 0, 1.0, norm),
        }[eps_placement]()
        return (v / divisor).astype(x.dtype)


BOTH = ("float32", "float64")

# --- WRONG: one bug each -------------------------------------------------------------------------


@implementation("layer_norm", dtypes=BOTH)
def ln_eps_outside_sqrt(x, *, axes, eps, scale=None, offset=None):
    """(x - mean) / (std + eps): eps outside the root, undeclared (LN.N1; near eps)."""
    return _layer_norm(x, axes, eps, scale, offset, inside=False)


@implementation("layer_norm", dtypes=BOTH)
def ln_unbiased_variance(x, *, axes, eps, scale=None, offset=None):
    """The unbiased variance normalizes (x.var(ddof=1)), undeclared (LN.N1)."""
    return _layer_norm(x, axes, eps, scale, offset, ddof=1)


@implementation("layer_norm", dtypes=BOTH)
def ln_last_axis_only(x, *, axes, eps, scale=None, offset=None):
    """Normalizes the last axis whatever `axes` says (LN.P1)."""
    y = _standardize(x.astype(F64), (x.ndim - 1,), eps)
    return _affine(y, scale, offset, _axes_shape(x, _axes(x, axes))).astype(x.dtype)


@implementation("layer_norm", dtypes=BOTH)
def ln_variance_clamped(x, *, axes, eps, scale=None, offset=None):
    """sqrt(max(var, eps)) instead of sqrt(var + eps) (LN.N1; variance near eps)."""
    axes_, v = _axes(x, axes), x.astype(F64)
    y = (v - v.mean(axis=axes_, keepdims=True)) / np.sqrt(np.maximum(v.var(axis=axes_, keepdims=True), eps))
    return _affine(y, scale, offset, _axes_shape(x, axes_)).astype(x.dtype)


@implementation("layer_norm", dtypes=BOTH)
def ln_eps_squared(x, *, axes, eps, scale=None, offset=None):
    """sqrt(var + eps²): eps taken as a standard deviation (LN.N1; eps near 1)."""
    return _layer_norm(x, axes, eps**2, scale, offset)


@implementation("layer_norm", dtypes=BOTH)
def ln_one_pass(x, *, axes, eps, scale=None, offset=None):
    """var = E[x²] - E[x]² in the input dtype: cancels on offset inputs (NUM.N6, LN.S1)."""
    axes_ = _axes(x, axes)
    mean = x.mean(axis=axes_, keepdims=True)
    var = np.maximum((x * x).mean(axis=axes_, keepdims=True) - mean * mean, 0)
    y = ((x - mean) / np.sqrt(var + x.dtype.type(eps))).astype(F64)
    return _affine(y, scale, offset, _axes_shape(x, axes_)).astype(x.dtype)


@implementation("layer_norm", dtypes=BOTH)
def ln_scale_offset_swapped(x, *, axes, eps, scale=None, offset=None):
    """y * offset + scale: the affine parameters swapped (LN.S1)."""
    return _layer_norm(x, axes, eps, offset, scale)


@implementation("layer_norm", dtypes=BOTH)
def ln_blocked_mean(x, *, axes, eps, scale=None, offset=None):
    """Rows longer than 4096 averaged as blocks of 4096 whose means are averaged unweighted: a
    reduction kernel's last short block counts as much as a full one (LN.S1; long reductions)."""
    axes_, v = _axes(x, axes), x.astype(F64)
    kept = [a for a in range(x.ndim) if a not in axes_]
    rows = np.moveaxis(v, kept, range(len(kept))).reshape(
        int(np.prod([x.shape[a] for a in kept])), int(np.prod([x.shape[a] for a in axes_]))
    )
    n = rows.shape[1]
    if n > 4096:
        means = np.stack([rows[:, i : i + 4096].mean(axis=1) for i in range(0, n, 4096)], axis=1).mean(axis=1)
    else:
        means = rows.mean(axis=1) if n else np.zeros(rows.shape[0])
    centred = rows - means[:, None]
    y_rows = centred / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + eps) if n else rows
    y = np.moveaxis(
        y_rows.reshape([x.shape[a] for a in kept] + [x.shape[a] for a in axes_]), range(len(kept)), kept
    )
    return _affine(y, scale, offset, _axes_shape(x, axes_)).astype(x.dtype)


@implementation("rms_norm", dtypes=BOTH)
def rms_eps_outside_sqrt(x, *, axes, eps, scale=None):
    """x / (rms + eps), undeclared (RMS.N1; mean square near eps)."""
    return _rms(x, axes, eps, scale, outside=True)


@implementation("rms_norm", dtypes=BOTH)
def rms_centred(x, *, axes, eps, scale=None):
    """Subtracts the mean first: a LayerNorm without offset (RMS.S1)."""
    return _rms(x, axes, eps, scale, mean_square=lambda v, a: v.var(axis=a, keepdims=True)) if x.size else x


@implementation("rms_norm", dtypes=BOTH)
def rms_sum_of_squares(x, *, axes, eps, scale=None):
    """sqrt(sum x²) where the mean of the squares belongs (RMS.S1)."""
    return _rms(x, axes, eps, scale, mean_square=lambda v, a: np.sum(v * v, axis=a, keepdims=True))


@implementation("rms_norm", dtypes=BOTH)
def rms_squares_in_input_dtype(x, *, axes, eps, scale=None):
    """mean(x * x) in the input dtype: float32 squares overflow from |x| ~ 1.8e19 (NUM.D1, RMS.S1)."""
    axes_ = _axes(x, axes)
    with np.errstate(over="ignore"):
        ms = np.mean(x * x, axis=axes_, keepdims=True).astype(F64)
    return _affine(x.astype(F64) / np.sqrt(ms + eps), scale, None, _axes_shape(x, axes_)).astype(x.dtype)


@implementation("rms_norm", dtypes=BOTH)
def rms_first_block_only(x, *, axes, eps, scale=None):
    """The mean square of the first 8192 values of a longer row only: a kernel's block size leaking
    into its result (RMS.S1; long reductions)."""

    def mean_square(v, a):
        moved = np.moveaxis(v, a, tuple(range(v.ndim - len(a), v.ndim)))
        flat = moved.reshape(moved.shape[: v.ndim - len(a)] + (-1,))[..., :8192]
        return np.expand_dims(np.mean(flat * flat, axis=-1), a)

    return _rms(x, axes, eps, scale, mean_square=mean_square) if x.size else x


@implementation("batch_norm", dtypes=BOTH)
def bn_momentum_flipped(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Keras' momentum in PyTorch's place: the old running value weighted by momentum (BN.N3)."""
    return _batch_norm(x, eps, momentum, training, state, scale, offset, flip=True)


@implementation("batch_norm", dtypes=BOTH)
def bn_running_variance_biased(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """The biased batch variance updates the running variance, undeclared (BN.N4)."""
    return _batch_norm(x, eps, momentum, training, state, scale, offset, ddof_running=0)


@implementation("batch_norm", dtypes=BOTH)
def bn_eval_uses_batch_statistics(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Eval mode normalizes with the batch's statistics instead of the running ones (BN.S4)."""
    return _batch_norm(x, eps, momentum, training, state, scale, offset, eval_batch=True)


@implementation("batch_norm", dtypes=BOTH)
def bn_cumulative_as_default(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """momentum=None (the cumulative average, BN.S5) taken as the default 0.1."""
    return _batch_norm(x, eps, 0.1 if momentum is None else momentum, training, state, scale, offset)


@implementation("batch_norm", dtypes=BOTH)
def bn_batch_axis_only(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Statistics over the batch axis alone, per spatial position, where the spatial axes belong too
    (BN.S1; inputs with spatial axes)."""
    y, state = _batch_norm(x, eps, momentum, training, state, scale, offset)
    if training or state is None:
        v, shape = x.astype(F64), _channel_shape(x, 1)
        y = _affine(_standardize(v, (0,), eps), scale, offset, shape).astype(x.dtype)
    return y, state


@implementation("batch_norm", dtypes=BOTH)
def bn_eps_outside_sqrt(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """(x - mean) / (std + eps), undeclared (BN.N1; variance near eps)."""
    y, state = _batch_norm(x, 0.0, momentum, training, state, None, None)
    v, axes, shape = x.astype(F64), (0, *range(2, x.ndim)), _channel_shape(x, 1)
    if training or state is None:
        std = np.sqrt(v.var(axis=axes)).reshape(shape)
        y = (v - v.mean(axis=axes).reshape(shape)) / (std + eps)
    return _affine(np.asarray(y, dtype=F64), scale, offset, shape).astype(x.dtype), state


@implementation("instance_norm", dtypes=BOTH)
def in_includes_batch(x, *, eps, scale=None, offset=None):
    """Statistics over the batch too: a BatchNorm (IN.S1; N > 1)."""
    y = _standardize(x.astype(F64), (0, *range(2, x.ndim)), eps)
    return _affine(y, scale, offset, _channel_shape(x, 1)).astype(x.dtype)


@implementation("instance_norm", dtypes=BOTH)
def in_unbiased_variance(x, *, eps, scale=None, offset=None):
    """The unbiased variance normalizes, undeclared (IN.N1)."""
    y = _standardize(x.astype(F64), tuple(range(2, x.ndim)), eps, ddof=1)
    return _affine(y, scale, offset, _channel_shape(x, 1)).astype(x.dtype)


@implementation("group_norm", dtypes=BOTH)
def gn_interleaved_groups(x, *, groups, eps, channel_axis, scale=None, offset=None):
    """Channel c in group c % G, not c // (C/G), undeclared (GN.P4; several channels per group)."""
    return _group_norm(x, groups, eps, scale, offset, channel_axis, interleaved=True)


@implementation("group_norm", dtypes=BOTH)
def gn_per_channel(x, *, groups, eps, channel_axis, scale=None, offset=None):
    """Statistics per channel, not per group: an InstanceNorm (GN.S1; several channels per group)."""
    return _group_norm(x, groups, eps, scale, offset, channel_axis, per_channel=True)


@implementation("group_norm", dtypes=BOTH)
def gn_eps_outside_sqrt(x, *, groups, eps, channel_axis, scale=None, offset=None):
    """(x - mean) / (std + eps), undeclared (GN.N1; variance near eps)."""
    return _group_norm(x, groups, eps, scale, offset, channel_axis, inside=False)


@implementation("group_norm", dtypes=BOTH)
def gn_affine_per_group(x, *, groups, eps, channel_axis, scale=None, offset=None):
    """scale[g] and offset[g] indexed by the group, not the channel (GN.S1; affine, several channels
    per group)."""
    y = _group_norm(x, groups, eps, None, None, channel_axis).astype(F64)
    channels = x.shape[channel_axis % x.ndim]
    index = np.arange(channels) // max(channels // groups, 1)
    scale, offset = (None if p is None else p[np.minimum(index, len(p) - 1)] for p in (scale, offset))
    return _affine(y, scale, offset, _channel_shape(x, channel_axis)).astype(x.dtype)


@implementation("local_response_norm", dtypes=BOTH)
def lrn_window_one_short(x, *, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    """The window one channel short on its extra side (LRN.N1)."""
    shrink = (lambda b, a: (b - 1, a) if extra == "before" else (b, a - 1)) if size > 1 else None
    return _lrn(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra, window=shrink)


@implementation("local_response_norm", dtypes=BOTH)
def lrn_alpha_not_divided(x, *, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    """alpha not divided by the size where it should be, undeclared (LRN.N2)."""
    return _lrn(x, size, alpha, beta, k, channel_axis, False, extra)


@implementation("local_response_norm", dtypes=BOTH)
def lrn_extra_on_the_other_side(x, *, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    """An even window's extra channel on the other side (LRN.N3; even sizes)."""
    other = "after" if extra == "before" else "before"
    return _lrn(x, size, alpha, beta, k, channel_axis, alpha_over_size, other)


@implementation("local_response_norm", dtypes=BOTH)
def lrn_window_over_batch(x, *, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    """The window slides over the batch axis, not the channels (LRN.S1; N != C)."""
    return _lrn(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra, axis=0)


@implementation("local_response_norm", dtypes=BOTH)
def lrn_squares_in_input_dtype(x, *, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    """x * x in the input dtype: float32 squares overflow (NUM.D1, LRN.S1)."""
    with np.errstate(over="ignore"):
        squares = (x * x).astype(F64)
    a = alpha / size if alpha_over_size else alpha
    half = (size - 1) // 2
    before, after = (half + (size - 1) % 2, half) if extra == "before" else (half, half + (size - 1) % 2)
    base = k + a * _window_sum(squares, channel_axis % x.ndim, before, after)
    return (x.astype(F64) / base**beta).astype(x.dtype)


@implementation("lp_normalize", dtypes=BOTH)
def lp_eps_added(x, *, axes, p, eps, eps_placement):
    """x / (norm + eps) whatever the placement asks (LP.N1; norms near eps)."""
    return _lp(x, axes, p, eps, "add_norm" if eps_placement != "none_or_zero" else eps_placement)


@implementation("lp_normalize", dtypes=BOTH)
def lp_power_sum_clamped(x, *, axes, p, eps, eps_placement):
    """max(sum |x|^p, eps)^(1/p) where max(norm, eps) belongs (LP.N1; norms near eps)."""
    placement = "max_power_sum" if eps_placement == "max_norm" else eps_placement
    return _lp(x, axes, p, eps, placement)


@implementation("lp_normalize", dtypes=BOTH)
def lp_absolute_value_forgotten(x, *, axes, p, eps, eps_placement):
    """sum x^p without the absolute value: odd p goes wrong on negative values (LP.S1)."""
    return _lp(x, axes, p, eps, eps_placement, power=lambda v, q: v**q)


@implementation("lp_normalize", dtypes=BOTH)
def lp_norm_in_input_dtype(x, *, axes, p, eps, eps_placement):
    """sum |x|^p in the input dtype: float32 powers overflow (NUM.D1, LP.S1)."""
    axes_ = _axes(x, axes)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        norm = (
            np.sum(np.abs(x) ** x.dtype.type(p), axis=axes_, keepdims=True) ** x.dtype.type(1 / p)
        ).astype(F64)
        divisor = np.where(norm == 0, 1.0, norm) if eps_placement == "none_or_zero" else np.maximum(norm, eps)
        return (x.astype(F64) / divisor).astype(x.dtype)


@implementation("channel_normalize", dtypes=BOTH)
def cn_times_std(x, *, mean, std, channel_axis, std_floor):
    """(x - mean) * std where / std belongs (CN.S1)."""
    shape = _channel_shape(x, channel_axis)
    return ((x.astype(F64) - mean.astype(F64).reshape(shape)) * std.astype(F64).reshape(shape)).astype(
        x.dtype
    )


@implementation("channel_normalize", dtypes=BOTH)
def cn_channels_on_axis_1(x, *, mean, std, channel_axis, std_floor):
    """Channels taken on axis 1 (NCHW) whatever channel_axis says: a 3-d CHW image goes wrong (CN.P1)."""
    shape = _channel_shape(x, 1)
    return ((x.astype(F64) - mean.astype(F64).reshape(shape)) / std.astype(F64).reshape(shape)).astype(
        x.dtype
    )


# --- CORRECT: right, computed otherwise ------------------------------------------------------------


@implementation("layer_norm", dtypes=BOTH)
def ok_ln_welford(x, *, axes, eps, scale=None, offset=None):
    """Welford's one-pass mean and variance, value by value along the flattened axes (float64)."""
    axes_, v = _axes(x, axes), x.astype(F64)
    kept = [a for a in range(x.ndim) if a not in axes_]
    rows = np.moveaxis(v, kept, range(len(kept))).reshape(
        int(np.prod([x.shape[a] for a in kept])), int(np.prod([x.shape[a] for a in axes_]))
    )
    mean, m2 = np.zeros(rows.shape[0]), np.zeros(rows.shape[0])
    for i in range(rows.shape[1]):
        delta = rows[:, i] - mean
        mean = mean + delta / (i + 1)
        m2 = m2 + delta * (rows[:, i] - mean)
    var = m2 / max(rows.shape[1], 1)
    y_rows = (rows - mean[:, None]) / np.sqrt(var + eps)[:, None]
    y = np.moveaxis(
        y_rows.reshape([x.shape[a] for a in kept] + [x.shape[a] for a in axes_]), range(len(kept)), kept
    )
    return _affine(y, scale, offset, _axes_shape(x, axes_)).astype(x.dtype)


@implementation("layer_norm", dtypes=BOTH, conventions={"normalize_var": "unbiased"})
def ok_ln_declared_unbiased(x, *, axes, eps, scale=None, offset=None):
    """The unbiased variance, declared as such (normalize_var, LN.P4)."""
    return _layer_norm(x, axes, eps, scale, offset, ddof=1)


@implementation("rms_norm", dtypes=BOTH)
def ok_rms_blocked_pairwise(x, *, axes, eps, scale=None):
    """The mean square as a sum of 128-value blocks, the block sums added pairwise (float64)."""

    def mean_square(v, a):
        moved = np.moveaxis(v, a, tuple(range(v.ndim - len(a), v.ndim)))
        flat = moved.reshape(moved.shape[: v.ndim - len(a)] + (-1,))
        n = flat.shape[-1]
        pad = (-n) % 128
        blocks = np.concatenate([flat * flat, np.zeros(flat.shape[:-1] + (pad,))], axis=-1)
        sums = blocks.reshape(flat.shape[:-1] + (-1, 128)).sum(axis=-1)
        while sums.shape[-1] > 1:
            if sums.shape[-1] % 2:
                sums = np.concatenate([sums, np.zeros(sums.shape[:-1] + (1,))], axis=-1)
            sums = sums[..., 0::2] + sums[..., 1::2]
        return np.expand_dims(sums[..., 0] / max(n, 1), a)

    return _rms(x, axes, eps, scale, mean_square=mean_square) if x.size else x


@implementation("rms_norm", dtypes=("float32",), accumulation={"float32": "float32"})
def ok_rms_scaled_float32(x, *, axes, eps, scale=None):
    """float32 statistics (declared), overflow-safe: each row scaled by its largest |x| first (as BLAS
    nrm2 does), eps scaled with it."""
    axes_ = _axes(x, axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.max(np.abs(x), axis=axes_, keepdims=True, initial=np.float32(0))
        top = np.where((top == 0) | ~np.isfinite(top), np.float32(1), top)  # nothing to scale, or inf/NaN
        scaled = x / top
        ms = np.mean(scaled * scaled, axis=axes_, keepdims=True, dtype=np.float32)
        y = scaled.astype(F64) / np.sqrt(ms.astype(F64) + eps / top.astype(F64) ** 2)
    return _affine(y, scale, None, _axes_shape(x, axes_)).astype(x.dtype)


@implementation("group_norm", dtypes=BOTH)
def ok_gn_loop_over_groups(x, *, groups, eps, channel_axis, scale=None, offset=None):
    """A loop over the groups, each a slice of channels normalized on its own (float64)."""
    v = np.moveaxis(x.astype(F64), channel_axis % x.ndim, 1)
    size = v.shape[1] // groups
    y = np.empty_like(v)
    for g in range(groups):
        part = v[:, g * size : (g + 1) * size]
        y[:, g * size : (g + 1) * size] = _standardize(part, tuple(range(1, v.ndim)), eps)
    y = np.moveaxis(y, 1, channel_axis % x.ndim)
    return _affine(y, scale, offset, _channel_shape(x, channel_axis)).astype(x.dtype)


@implementation("instance_norm", dtypes=BOTH)
def ok_in_as_batch_norm(x, *, eps, scale=None, offset=None):
    """An InstanceNorm as a BatchNorm over (1, N*C, spatial...): the classic reshape."""
    n, c = x.shape[:2]
    folded = x.astype(F64).reshape((1, n * c) + x.shape[2:])
    y = _standardize(folded, (0, *range(2, folded.ndim)), eps).reshape(x.shape)
    return _affine(y, scale, offset, _channel_shape(x, 1)).astype(x.dtype)


@implementation("batch_norm", dtypes=BOTH)
def ok_bn_running_sums(x, *, eps, momentum, training, state=None, scale=None, offset=None):
    """Batch statistics from sums and sums of squared deviations, the running update written as an
    exponential average with the unbiased variance; momentum=None the cumulative average."""
    return _batch_norm(x, eps, momentum, training, state, scale, offset)


@implementation("local_response_norm", dtypes=BOTH)
def ok_lrn_sliding_windows(x, *, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    """Window sums over a sliding window view of the zero-padded squares (float64)."""
    return _lrn(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra)


@implementation("lp_normalize", dtypes=BOTH)
def ok_lp_scaled(x, *, axes, p, eps, eps_placement):
    """The norm of x / max|x|, times max|x|: no overflow or underflow in the powers (float64)."""
    axes_, v = _axes(x, axes), x.astype(F64)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.max(np.abs(v), axis=axes_, keepdims=True, initial=0.0)
        safe = np.where((top == 0) | ~np.isfinite(top), 1.0, top)
        norm = safe * np.sum(np.abs(v / safe) ** p, axis=axes_, keepdims=True) ** (1.0 / p)
        divisor = {
            "max_norm": lambda: np.maximum(norm, eps),
            "max_power_sum": lambda: np.maximum(norm**p, eps) ** (1.0 / p),
            "add_norm": lambda: norm + eps,
            "none": lambda: norm,
            "none_or_zero": lambda: np.where(norm == 0, 1.0, norm),
        }[eps_placement]()
        return (v / divisor).astype(x.dtype)


@implementation("channel_normalize", dtypes=BOTH)
def ok_cn_reciprocal(x, *, mean, std, channel_axis, std_floor):
    """x * (1 / std) - mean / std: the reciprocal and the shifted mean precomputed per channel (float64)."""
    shape = _channel_shape(x, channel_axis)
    inverse = 1.0 / np.maximum(std.astype(F64), std_floor)
    return (x.astype(F64) * inverse.reshape(shape) - (mean.astype(F64) * inverse).reshape(shape)).astype(
        x.dtype
    )


def corpus() -> tuple[list[str], list[str]]:
    """(wrong, correct): the implementations' names, in file order."""
    names = [n for n, v in globals().items() if hasattr(v, "norm") and hasattr(v, "fn")]
    return [n for n in names if not n.startswith("ok_")], [n for n in names if n.startswith("ok_")]


# --- the kill table --------------------------------------------------------------------------------

KILL_TARGETS = {"quick": 0.85, "default": 0.95}  # the share of WRONG a profile must kill (issue of record)


def kill_table(profile: str, out: Path, jobs: int = 2) -> list[dict]:
    """Run the corpus through `profile` (its implementations split over `jobs` workers) and return one
    row per implementation: name, wrong or correct, killed (some check failed), and the most telling
    failure's property, clause and message (normconf check's order)."""
    from normconf.check import telling
    from normconf.conformance import workers
    from normconf.reports import results

    wrong, correct = corpus()
    specs = {f"{Path(__file__)}:{name}": name for name in wrong + correct}
    order = list(specs)
    workers.run(order, jobs, ["--profile", profile], out, quiet=True)
    records = [r for run in results.load(sorted(out.glob("worker-*.jsonl"))) for r in run.results]
    rows = []
    for spec, name in specs.items():
        failing = sorted(
            (r for r in records if r["adapter"] == spec and r["verdict"] in results.PROBLEMS), key=telling
        )
        ran = any(r["adapter"] == spec for r in records)
        first = failing[0] if failing else {}
        rows.append(
            {
                "name": name,
                "wrong": name in wrong,
                "killed": bool(failing),
                "ran": ran,
                "property": first.get("property", ""),
                "clause": first.get("clause") or first.get("verdict", ""),
                "message": (first.get("message") or "").split("\n")[0][:160],
            }
        )
    return rows


def kill_rate(rows: list[dict]) -> float:
    wrong = [r for r in rows if r["wrong"]]
    return sum(r["killed"] for r in wrong) / len(wrong)
