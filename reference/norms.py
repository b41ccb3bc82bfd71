"""The norms, one record each (in the spirit of PyTorch's OpInfo).

A record is everything the suite, the reports and the benchmarks know about a norm: its reference
and VJP, its title and clause prefix, the clause each property cites, which canonical parameters a
framework default can set, whether it keeps running statistics, how its cases are drawn, which values
one statistic spans, which identities hold for it, and what a call needs that has no default. Every
list and map of norms in normconf reads `NORMS`; adding a norm is its spec page, its reference module
and its record here.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._common import Standardized, standardized
from .batch_norm import RunningStats, batch_norm, batch_norm_vjp
from .channel_normalize import channel_normalize, channel_normalize_vjp
from .group_norm import group_norm, group_norm_vjp, grouped, ungrouped
from .instance_norm import instance_norm, instance_norm_vjp
from .layer_norm import layer_norm, layer_norm_vjp
from .local_response_norm import local_response_norm, local_response_norm_vjp
from .lp_normalize import lp_normalize, lp_normalize_vjp
from .rms_norm import rms_norm, rms_norm_vjp
from .sync_batch_norm import element_weights, pooled, sync_batch_norm, sync_batch_norm_vjp


@dataclass(frozen=True)
class Clauses:
    """The spec clause each property of a norm cites."""

    forward: str  # S: the output in training mode (or the only mode)
    vjp: str  # S: the gradients of x, scale and offset
    defaults: str | None  # D: the frameworks' defaults for it (None: another norm's, `Norm.defaults_of`)
    state: str | None = None  # S: the running statistics after a step (stateful norms)
    eval: str | None = None  # S: eval mode with running statistics (stateful norms)
    scale_invariance: str | None = None  # N: x -> c x leaves the output unchanged (eps = 0)
    equal_weighting: str | None = None  # S: the replicas' statistics pooled per replica (SBN)

    def cited(self) -> tuple[str, ...]:
        return tuple(c for c in vars(self).values() if c)


# The metamorphic identities of conformance/test_identities.py a norm may satisfy
IDENTITIES = ("independent_samples", "batch_permutation", "shift", "scale")


@dataclass(frozen=True, kw_only=True)
class Norm:
    """One norm, as every part of normconf sees it."""

    name: str  # the reference function's name: "batch_norm"
    title: str  # "BatchNorm", as its spec page is headed
    prefix: str  # the spec page's clause prefix: "BN"
    forward: Callable
    vjp: Callable
    clauses: Clauses
    strategy: str  # which builder of conformance/case_builders.py draws its cases
    statistics: str  # which values one statistic spans: see `statistic_view`
    defaultable: tuple[str, ...]  # canonical parameters a framework's default can set
    affine: tuple[str, ...] = ()  # the learnable parameters the strategies draw ("scale", "offset")
    gradient_terms: str = "linear"  # how its VJP sums terms (NUM.N8; conformance.checks.TERMS)
    identities: frozenset[str] = frozenset()  # the IDENTITIES that hold for it
    standardizing: bool = False  # subtracts a mean: NUM.N5's conditioning applies
    stateful: bool = False  # keeps running statistics (a step returns the new state)
    divisor: bool = False  # has the divisor conventions normalize_var / eps_placement (BN.P8)
    empty_batch: bool = (
        False  # an empty batch leaves every statistic defined (NUM.N9's empty-output property)
    )
    defaults_of: str | None = None  # takes another norm's framework defaults (nothing of its own to compare)
    needs: dict = field(default_factory=dict)  # a value for each required parameter with no canonical default
    # what a typical call sets that no default does, on the porting hazards' (4, 6, 3, 5) input and the
    # benchmarks' (a value, or a function of x); its per-statistic arrays come from `typical_params`
    typical: dict = field(default_factory=dict)
    typical_arrays: tuple[str, ...] | None = None  # per-statistic arrays a typical call passes (None: affine)

    def parameters(self) -> dict[str, Any]:
        """The reference's keyword parameters and their canonical defaults (inspect.Parameter.empty when
        required). Read on every adapter call (adapters.base.Params): inspected once per function."""
        return dict(_keyword_defaults(self.forward))

    def statistic_view(self, x: np.ndarray, params: dict):
        """(view of x, the axes each statistic spans, a function mapping a keepdims statistic back to x's
        shape): the values one statistic is computed from, for budgets and divergence models."""
        return statistic_view(self.statistics, x, params)

    def typical_params(self, x: np.ndarray, params: dict) -> dict:
        """`params` (a framework's defaults) completed as a typical call on x completes them, the same for
        every framework: `needs` and `typical`, trained-looking per-statistic arrays (a scale near 1, an
        offset near 0) shaped for x, the initial running state."""
        typical = {k: v(x) if callable(v) else v for k, v in self.typical.items()}
        params = {**self.needs, **typical, **params}
        if params.get("axes", ()) is None:
            params["axes"] = tuple(range(x.ndim))
        shape = self.parameter_shape(x, params)
        k = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
        trained = {"scale": 1.0 + 0.25 * np.cos(k), "std": 1.0 + 0.25 * np.cos(k), "offset": 0.1 * np.sin(k)}
        trained["mean"] = trained["offset"]
        arrays = self.affine if self.typical_arrays is None else self.typical_arrays
        params.update({name: trained[name] for name in arrays})
        if self.stateful:
            params["state"] = RunningStats.initial(shape[0])
        return params

    def parameter_shape(self, x: np.ndarray, params: dict) -> tuple[int, ...]:
        """The shape of its per-statistic parameters (scale, offset, mean, std) for x: the channels, or
        the normalized axes' sizes."""
        if self.statistics == "axes":
            return tuple(x.shape[a] for a in _axes(params, x.ndim))
        return (x.shape[params.get("channel_axis", self.parameters().get("channel_axis", 1)) % x.ndim],)

    def mean_weights(self, view: np.ndarray, axes: tuple[int, ...], params: dict) -> np.ndarray:
        """Each value's weight in its statistic's mean on a statistic view, broadcastable to it: 1/n, or
        pooled over replicas as the declared weighting does (SBN.P2: 1/(R·n_r) for equal weighting)."""
        if "replica_sizes" in params:
            axis = params.get("channel_axis", 1) % view.ndim
            sizes, weighting = tuple(params["replica_sizes"]), params.get("weighting", "count")
            return element_weights(view.shape, axis, sizes, weighting)
        return np.full((1,) * view.ndim, 1.0 / max(1, math.prod(view.shape[a] for a in axes)))

    def standardized(self, view: np.ndarray, axes: tuple[int, ...], params: dict) -> Standardized:
        """The reference's x̂ and divisor on a statistic view (`statistic_view`) under the params' divisor
        conventions (BN.P8), or pooled over replicas as the declared weighting does (SBN.P2): what the
        budgets' conditioning is relative to."""
        eps = params.get("eps", self.parameters().get("eps", 1e-5))
        if "replica_sizes" in params:
            return pooled(view, axes, self.mean_weights(view, axes, params), eps)
        divisor = params.get("normalize_var", "biased"), params.get("eps_placement", "inside_sqrt")
        return standardized(view, axes, eps, *divisor)

    def reduction_length(self, x: np.ndarray, params: dict) -> int:
        """Values per statistic (NUM.N2's n): the window for LRN, 1 for an elementwise map."""
        if self.statistics == "window":
            return int(params["size"])
        if self.statistics == "none":
            return 1
        view, axes, _ = self.statistic_view(x, params)
        return max(1, math.prod(view.shape[a] for a in axes))


@functools.lru_cache(maxsize=None)
def _keyword_defaults(fn: Callable) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (name, p.default)
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def _axes(params: dict, ndim: int) -> tuple[int, ...]:
    axes = params.get("axes", (-1,))
    return tuple(sorted(a % ndim for a in ((axes,) if isinstance(axes, int) else axes)))


def statistic_view(statistics: str, x: np.ndarray, params: dict):
    """See `Norm.statistic_view`. `statistics`: "channel" (every axis but the channel axis),
    "sample_channel" (every axis but batch and channel), "group" (a sample's channels of one group),
    "axes" (the normalized axes); "window" and "none" have no view of their own (the axes are empty)."""
    ndim = x.ndim
    same_shape = lambda s: np.broadcast_to(s, x.shape)  # noqa: E731
    if statistics in ("channel", "sample_channel"):
        axis = params.get("channel_axis", 1) % ndim
        keep = (0, axis) if statistics == "sample_channel" else (axis,)
        return x, tuple(i for i in range(ndim) if i not in keep), same_shape
    if statistics == "group":
        axis = params.get("channel_axis", 1) % ndim
        view, axes = grouped(x, params["groups"], axis, params.get("assignment", "contiguous"))
        moved = np.moveaxis(x, axis, 1).shape
        return view, axes, lambda s: ungrouped(np.broadcast_to(s, view.shape), moved, axis)
    return x, _axes(params, ndim), same_shape


_RUNNING = ("channel_axis", "eps", "momentum", "running_var", "normalize_var", "eps_placement")
_STANDARDIZING_IDENTITIES = frozenset({"batch_permutation", "shift", "scale"})

NORMS: dict[str, Norm] = {
    n.name: n
    for n in (
        Norm(
            name="batch_norm",
            title="BatchNorm",
            prefix="BN",
            forward=batch_norm,
            vjp=batch_norm_vjp,
            clauses=Clauses("BN.S1", "BN.S6", "BN.D3", state="BN.S2", eval="BN.S3", scale_invariance="BN.N1"),
            affine=("scale", "offset"),
            gradient_terms="standardizing",
            strategy="running",
            statistics="channel",
            defaultable=_RUNNING,
            identities=_STANDARDIZING_IDENTITIES,
            standardizing=True,
            stateful=True,
            divisor=True,
        ),
        Norm(
            name="layer_norm",
            title="LayerNorm",
            prefix="LN",
            forward=layer_norm,
            vjp=layer_norm_vjp,
            clauses=Clauses("LN.S1", "LN.S2", "LN.D1", scale_invariance="LN.N1"),
            affine=("scale", "offset"),
            gradient_terms="standardizing",
            strategy="axes",
            statistics="axes",
            defaultable=("axes", "eps", "normalize_var", "eps_placement"),
            identities=_STANDARDIZING_IDENTITIES | {"independent_samples"},
            standardizing=True,
            divisor=True,
            empty_batch=True,
        ),
        Norm(
            name="instance_norm",
            title="InstanceNorm",
            prefix="IN",
            forward=instance_norm,
            vjp=instance_norm_vjp,
            clauses=Clauses("IN.S1", "IN.S4", "IN.D1", state="IN.S3", eval="IN.S2", scale_invariance="IN.N1"),
            affine=("scale", "offset"),
            gradient_terms="standardizing",
            strategy="running",
            statistics="sample_channel",
            defaultable=_RUNNING,
            identities=_STANDARDIZING_IDENTITIES | {"independent_samples"},
            standardizing=True,
            stateful=True,
            divisor=True,
        ),
        Norm(
            name="group_norm",
            title="GroupNorm",
            prefix="GN",
            forward=group_norm,
            vjp=group_norm_vjp,
            clauses=Clauses("GN.S1", "GN.S2", "GN.D2", scale_invariance="GN.N1"),
            affine=("scale", "offset"),
            gradient_terms="standardizing",
            strategy="groups",
            statistics="group",
            defaultable=("groups", "channel_axis", "eps", "assignment", "normalize_var", "eps_placement"),
            identities=_STANDARDIZING_IDENTITIES | {"independent_samples"},
            standardizing=True,
            divisor=True,
            needs={"groups": 2},
            typical={"groups": 3},  # 32 groups by default need 32 channels: every framework gets 3
        ),
        Norm(
            name="rms_norm",
            title="RMSNorm",
            prefix="RMS",
            forward=rms_norm,
            vjp=rms_norm_vjp,
            clauses=Clauses("RMS.S1", "RMS.S2", "RMS.D2", scale_invariance="RMS.N1"),
            affine=("scale",),
            gradient_terms="rms",
            strategy="axes",
            statistics="axes",
            defaultable=("axes", "eps", "eps_placement"),
            identities=frozenset({"independent_samples", "batch_permutation", "scale"}),
            divisor=True,
            empty_batch=True,
            typical={"eps": 1e-6},  # no canonical default (RMS.P3)
        ),
        Norm(
            name="local_response_norm",
            title="LocalResponseNorm",
            prefix="LRN",
            forward=local_response_norm,
            vjp=local_response_norm_vjp,
            clauses=Clauses("LRN.S1", "LRN.S2", "LRN.D1"),
            gradient_terms="window",
            strategy="window",
            statistics="window",
            defaultable=("size", "alpha", "beta", "k", "channel_axis", "alpha_over_size", "extra"),
            identities=frozenset({"independent_samples", "batch_permutation"}),
            empty_batch=True,
            needs={"size": 3},
            typical={"size": 3},
        ),
        Norm(
            name="lp_normalize",
            title="Lp-normalize",
            prefix="LP",
            forward=lp_normalize,
            vjp=lp_normalize_vjp,
            clauses=Clauses("LP.S1", "LP.S2", "LP.D1", scale_invariance="LP.N1"),
            gradient_terms="lp",
            strategy="lp",
            statistics="axes",
            defaultable=("p", "axes", "eps", "eps_placement"),
            identities=frozenset({"independent_samples", "batch_permutation", "scale"}),
            empty_batch=True,
        ),
        Norm(
            name="channel_normalize",
            title="Per-channel input Normalize",
            prefix="CN",
            forward=channel_normalize,
            vjp=channel_normalize_vjp,
            clauses=Clauses("CN.S1", "CN.S2", "CN.D1"),
            gradient_terms="linear",
            strategy="channel_map",
            statistics="none",
            defaultable=("channel_axis", "std_floor"),
            identities=frozenset({"independent_samples", "batch_permutation"}),
            empty_batch=True,
            typical_arrays=("mean", "std"),
        ),
        Norm(
            name="sync_batch_norm",
            title="Synchronized BatchNorm",
            prefix="SBN",
            forward=sync_batch_norm,
            vjp=sync_batch_norm_vjp,
            clauses=Clauses(
                "SBN.S1", "SBN.S4", None, state="SBN.S3", eval="SBN.S3", equal_weighting="SBN.S2"
            ),
            affine=("scale", "offset"),
            gradient_terms="standardizing",
            strategy="running",
            statistics="channel",
            defaultable=("weighting", "channel_axis", "eps", "momentum", "running_var"),
            # moving rows between replicas changes equal-weighted statistics: not batch-permutable
            identities=frozenset(),
            standardizing=True,
            stateful=True,
            defaults_of="batch_norm",
            typical={"replica_sizes": lambda x: (x.shape[0] - x.shape[0] // 2, x.shape[0] // 2)},
        ),
    )
}


def get(name: str) -> Norm:
    """The record of `name`; an unknown name is a ValueError naming the known ones."""
    try:
        return NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; one of {', '.join(NORMS)}") from None
