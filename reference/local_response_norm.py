"""LocalResponseNorm (spec/local_response_norm.md): divide by a power of the sum of squares in a
window of neighbouring channels.

    y_c = x_c * (k + a * sum_{j in W(c)} x_j^2) ^ -beta,   a = alpha / size  or  alpha  (LRN.N2)

W(c) holds `size` channels around c; channels past either end count as zeros (LRN.N4).
"""

from __future__ import annotations

import numpy as np

from . import _common as c

# LRN.N3: for an even size the window cannot be centred; `extra` says on which side of c the
# one extra channel lies. Odd sizes are centred whatever `extra` says.
EXTRA_SIDES = ("before", "after")


def window(size: int, extra: str) -> tuple[int, int]:
    """(channels before c, channels after c) in W(c)."""
    longer, shorter = size // 2, (size - 1) // 2
    return (longer, shorter) if extra == "before" else (shorter, longer)


def checked(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra):
    x = c.as_input(x, "LRN.C1", min_rank=2)
    axis = c.as_axis(channel_axis, x.ndim, "LRN.C2", "channel_axis")
    size = c.as_count(size, "LRN.C3", "size")
    alpha = c.as_real(alpha, "LRN.C4", "alpha", low=0.0)
    beta = c.as_real(beta, "LRN.C4", "beta")
    k = c.as_real(k, "LRN.C4", "k", low=0.0, low_open=True)
    if not isinstance(alpha_over_size, bool):
        raise c.ClauseError("LRN.C5", "alpha_over_size", f"must be True or False, got {alpha_over_size!r}")
    c.as_choice(extra, EXTRA_SIDES, "LRN.C5", "extra")
    a = alpha / size if alpha_over_size else alpha
    return x, axis, window(size, extra), a, beta, k


def window_sum(v: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    """s_c = sum of v_j for j in [c - before, c + after] along `axis`, zeros past the ends."""
    moved = np.moveaxis(v, axis, 0)
    width = before + after + 1
    padded = np.concatenate(
        [np.zeros((before,) + moved.shape[1:]), moved, np.zeros((after,) + moved.shape[1:])]
    )
    if width > LONG_WINDOW:
        return np.moveaxis(_blocked_window_sum(padded, width, moved.shape[0]), 0, axis)
    total = np.zeros_like(moved)
    for shift in range(width):
        total += padded[shift : shift + moved.shape[0]]
    return np.moveaxis(total, 0, axis)


LONG_WINDOW = 64  # past this width a window's sums are formed from block sums (O(n), not O(n * width))


def _blocked_window_sum(padded: np.ndarray, width: int, count: int) -> np.ndarray:
    """The `count` sums of `width` consecutive rows of `padded`, each formed without subtraction
    (van Herk / Gil-Werman): cut the rows into blocks of `width`; a window starting at row i of a block
    is the block's suffix from i plus the next block's prefix before i. Every sum adds only the rows it
    covers, in order, so its rounding is bounded as a running sum's (no cancellation of prefix sums)."""
    blocks = -(-padded.shape[0] // width) + 1
    rows = np.zeros((blocks * width,) + padded.shape[1:])
    rows[: padded.shape[0]] = padded
    shaped = rows.reshape((blocks, width) + padded.shape[1:])
    prefix = np.cumsum(shaped, axis=1).reshape(rows.shape)
    suffix = np.flip(np.cumsum(np.flip(shaped, axis=1), axis=1), axis=1).reshape(rows.shape)
    start = np.arange(count)
    tail = np.where(
        (start % width != 0).reshape((-1,) + (1,) * (padded.ndim - 1)), prefix[start + width - 1], 0.0
    )
    return suffix[start] + tail


def window_base(x, axis, win, a, k):
    return k + a * window_sum(x * x, axis, *win)


@c.ieee
def local_response_norm(
    x,
    *,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    channel_axis: int = 1,
    alpha_over_size: bool = True,
    extra: str = "before",
) -> np.ndarray:
    x, axis, win, a, beta, k = checked(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra)
    return x * window_base(x, axis, win, a, k) ** -beta


@c.ieee
def local_response_norm_vjp(
    g,
    x,
    *,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    channel_axis: int = 1,
    alpha_over_size: bool = True,
    extra: str = "before",
) -> c.Grads:
    x, axis, win, a, beta, k = checked(x, size, alpha, beta, k, channel_axis, alpha_over_size, extra)
    g = c.as_cotangent(g, x, "LRN.C1")
    base = window_base(x, axis, win, a, k)
    # x_j feeds base_c for every c whose window holds j, i.e. c in [j - after, j + before]:
    # the transposed window.
    through_base = window_sum(g * x * -beta * base ** (-beta - 1.0), axis, win[1], win[0])
    return c.Grads(g * base**-beta + 2.0 * a * x * through_base)
