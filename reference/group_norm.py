"""GroupNorm (spec/group_norm.md): per-sample statistics over groups of channels and the spatial axes."""

from __future__ import annotations

import numpy as np

from . import _common as c

BATCH_AXIS = 0
# GN.P4: which group channel c (of C, in G groups) belongs to. Both are views of the channel axis
# as a (groups, C/G) or (C/G, groups) grid; the group is the grid axis named here.
ASSIGNMENTS = {
    "contiguous": lambda channels, groups: ((groups, channels // groups), 0),  # c // (C/G)
    "interleaved": lambda channels, groups: ((channels // groups, groups), 1),  # c % G
}


def _check(x, groups, channel_axis, eps, scale, offset, assignment, normalize_var, eps_placement):
    x = c.as_input(x, "GN.C1", min_rank=2)
    axis = c.as_axis(channel_axis, x.ndim, "GN.C2", "channel_axis")
    if axis == BATCH_AXIS:
        raise c.ClauseError("GN.C2", "channel_axis", "must not be the batch axis 0")
    channels = x.shape[axis]
    groups = c.as_count(groups, "GN.C3", "groups")
    if channels % groups:
        raise c.ClauseError("GN.C3", "groups", f"{groups} does not divide the {channels} channels")
    eps = c.as_real(eps, "GN.C4", "eps", low=0.0)
    scale = c.as_param(scale, (channels,), "GN.C5", "scale")
    offset = c.as_param(offset, (channels,), "GN.C5", "offset")
    c.as_choice(assignment, ASSIGNMENTS, "GN.C6", "assignment")
    if (
        x.shape[BATCH_AXIS] == 0
        or channels == 0
        or c.count(x.shape, c.other_axes(x.ndim, (BATCH_AXIS, axis))) == 0
    ):
        raise c.ClauseError("GN.C1", "x", f"has no values per group (shape {x.shape})")
    per_group = c.count(x.shape, c.other_axes(x.ndim, (BATCH_AXIS, axis))) * (channels // groups)
    c.check_divisor(normalize_var, eps_placement, per_group, "GN.C7")
    return x, groups, axis, eps, scale, offset, assignment


def grouped(x, groups, axis, assignment):
    """x as (N, *grid, *spatial) with channels split per ASSIGNMENTS, and the axes each group spans."""
    moved = np.moveaxis(x, axis, 1)
    grid, group_axis = ASSIGNMENTS[assignment](moved.shape[1], groups)
    view = moved.reshape(moved.shape[:1] + grid + moved.shape[2:])
    return view, c.other_axes(view.ndim, (BATCH_AXIS, 1 + group_axis))


def ungrouped(view, like_moved_shape, axis):
    return np.moveaxis(view.reshape(like_moved_shape), 1, axis)


@c.ieee
def group_norm(
    x,
    *,
    groups: int,
    channel_axis: int = 1,
    eps: float = 1e-5,
    scale=None,
    offset=None,
    assignment: str = "contiguous",
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> np.ndarray:
    x, groups, axis, eps, scale, offset, assignment = _check(
        x, groups, channel_axis, eps, scale, offset, assignment, normalize_var, eps_placement
    )
    view, reduced = grouped(x, groups, axis, assignment)
    xhat = ungrouped(
        c.standardized(view, reduced, eps, normalize_var, eps_placement).xhat,
        np.moveaxis(x, axis, 1).shape,
        axis,
    )
    return c.affine(xhat, scale, offset, axis)


@c.ieee
def group_norm_vjp(
    g,
    x,
    *,
    groups: int,
    channel_axis: int = 1,
    eps: float = 1e-5,
    scale=None,
    offset=None,
    assignment: str = "contiguous",
    normalize_var: str = "biased",
    eps_placement: str = "inside_sqrt",
) -> c.Grads:
    x, groups, axis, eps, scale, offset, assignment = _check(
        x, groups, channel_axis, eps, scale, offset, assignment, normalize_var, eps_placement
    )
    g = c.as_cotangent(g, x, "GN.C1")
    moved_shape = np.moveaxis(x, axis, 1).shape
    view, reduced = grouped(x, groups, axis, assignment)
    s = c.standardized(view, reduced, eps, normalize_var, eps_placement)
    xhat = ungrouped(s.xhat, moved_shape, axis)
    g_hat, dscale, doffset = c.affine_vjp(g, xhat, scale, offset, axis)
    g_view, _ = grouped(g_hat, groups, axis, assignment)
    dx = ungrouped(c.standardized_vjp(g_view, s, reduced), moved_shape, axis)
    return c.Grads(dx, dscale, doffset)
