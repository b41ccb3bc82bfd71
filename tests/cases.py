"""Per-norm descriptions shared by the meta-tests: how to call the reference and the oracle, which
axes each reduction spans, which parameters are learnable, and what values make inputs nasty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import oracle

from normconf import reference as R

# Value distributions that matter numerically (shared design notes, "Property suite").
VALUE_KINDS = {
    "standard": lambda rng, shape: rng.normal(size=shape),
    "offset_1e8": lambda rng, shape: 1e8 + rng.normal(size=shape),
    "tiny_spread": lambda rng, shape: 1.0 + 1e-9 * rng.normal(size=shape),
    "large_magnitude": lambda rng, shape: 1e100 * rng.normal(size=shape),
    "small_magnitude": lambda rng, shape: 1e-100 * rng.normal(size=shape),
    "mixed_sign_integers": lambda rng, shape: rng.integers(-3, 4, size=shape).astype(float),
}


def constant_channel(x: np.ndarray, axis: int) -> np.ndarray:
    """x with channel 0 along `axis` set to one value: zero variance there."""
    x = x.copy()
    index = [slice(None)] * x.ndim
    index[axis] = 0
    x[tuple(index)] = 2.5
    return x


@dataclass(frozen=True)
class Case:
    name: str
    forward: Callable
    vjp: Callable
    oracle: Callable
    shape: tuple[int, ...]
    params: dict
    param_shape: tuple[int, ...] | None  # shape of scale/offset, None when the norm has none
    channel_axis: int  # where a constant channel is planted
    reduction_length: int
    returns_state: bool = False

    @property
    def forward_clause(self) -> str:
        """The clause stating the forward equation this case exercises (its norm's record)."""
        clauses = R.NORMS[self.forward.__name__].clauses
        return clauses.equal_weighting if self.params.get("weighting") == "equal" else clauses.forward

    @property
    def vjp_clause(self) -> str:
        return R.NORMS[self.forward.__name__].clauses.vjp


CASES = [
    Case(
        "sync_batch_norm_unequal_count",
        R.sync_batch_norm,
        R.sync_batch_norm_vjp,
        oracle.sync_batch_norm,
        (5, 3, 2),
        {"eps": 1e-5, "replica_sizes": (2, 3)},
        (3,),
        1,
        10,
        returns_state=True,
    ),
    Case(
        "sync_batch_norm_unequal_equal_weights",
        R.sync_batch_norm,
        R.sync_batch_norm_vjp,
        oracle.sync_batch_norm,
        (4, 2, 3),
        {
            "eps": 1e-3,
            "channel_axis": -1,
            "replica_sizes": (1, 3),
            "weighting": "equal",
            "momentum": 0.2,
            "running_var": "biased",
        },
        (3,),
        2,
        8,
        returns_state=True,
    ),
    Case(
        "batch_norm",
        R.batch_norm,
        R.batch_norm_vjp,
        oracle.batch_norm,
        (3, 4, 5),
        {"eps": 1e-5},
        (4,),
        1,
        15,
        returns_state=True,
    ),
    Case(
        "batch_norm_channels_last",
        R.batch_norm,
        R.batch_norm_vjp,
        oracle.batch_norm,
        (2, 3, 5),
        {"eps": 1e-3, "channel_axis": -1, "momentum": 0.01, "running_var": "biased"},
        (5,),
        2,
        6,
        returns_state=True,
    ),
    Case(
        "batch_norm_cumulative",
        R.batch_norm,
        R.batch_norm_vjp,
        oracle.batch_norm,
        (5, 2),
        {"eps": 1e-5, "momentum": None},
        (2,),
        1,
        5,
        returns_state=True,
    ),
    Case(
        "batch_norm_unbiased_eps_outside",
        R.batch_norm,
        R.batch_norm_vjp,
        oracle.batch_norm,
        (3, 2, 2),
        {"eps": 1e-3, "normalize_var": "unbiased", "eps_placement": "outside_sqrt"},
        (2,),
        1,
        6,
        returns_state=True,
    ),
    Case(
        "instance_norm_eps_outside",
        R.instance_norm,
        R.instance_norm_vjp,
        oracle.instance_norm,
        (2, 3, 5),
        {"eps": 1e-2, "eps_placement": "outside_sqrt"},
        (3,),
        1,
        5,
        returns_state=True,
    ),
    Case(
        "instance_norm",
        R.instance_norm,
        R.instance_norm_vjp,
        oracle.instance_norm,
        (2, 3, 7),
        {"eps": 1e-5},
        (3,),
        1,
        7,
        returns_state=True,
    ),
    Case(
        "instance_norm_3d_channels_last",
        R.instance_norm,
        R.instance_norm_vjp,
        oracle.instance_norm,
        (2, 3, 2, 2, 3),
        {"eps": 1e-3, "channel_axis": -1},
        (3,),
        4,
        12,
        returns_state=True,
    ),
    Case(
        "layer_norm",
        R.layer_norm,
        R.layer_norm_vjp,
        oracle.layer_norm,
        (3, 2, 5),
        {"axes": (-1,), "eps": 1e-5},
        (5,),
        0,
        5,
    ),
    Case(
        "layer_norm_two_axes",
        R.layer_norm,
        R.layer_norm_vjp,
        oracle.layer_norm,
        (3, 4, 2),
        {"axes": (0, 2), "eps": 1e-6},
        (3, 2),
        1,
        6,
    ),
    Case(
        "layer_norm_unbiased_eps_outside",
        R.layer_norm,
        R.layer_norm_vjp,
        oracle.layer_norm,
        (3, 5),
        {"axes": (-1,), "eps": 1e-6, "normalize_var": "unbiased", "eps_placement": "outside_sqrt"},
        (5,),
        0,
        5,
    ),
    Case(
        "layer_norm_unbiased",
        R.layer_norm,
        R.layer_norm_vjp,
        oracle.layer_norm,
        (2, 3, 2),
        {"axes": (1, 2), "eps": 1e-5, "normalize_var": "unbiased"},
        (3, 2),
        0,
        6,
    ),
    Case(
        "group_norm_eps_outside",
        R.group_norm,
        R.group_norm_vjp,
        oracle.group_norm,
        (2, 4, 3),
        {"groups": 2, "eps": 1e-3, "eps_placement": "outside_sqrt"},
        (4,),
        1,
        6,
    ),
    Case(
        "group_norm",
        R.group_norm,
        R.group_norm_vjp,
        oracle.group_norm,
        (2, 6, 3),
        {"groups": 3, "eps": 1e-5},
        (6,),
        1,
        6,
    ),
    Case(
        "group_norm_interleaved",
        R.group_norm,
        R.group_norm_vjp,
        oracle.group_norm,
        (3, 4, 3),
        {"groups": 2, "eps": 1e-5, "assignment": "interleaved"},
        (4,),
        1,
        6,
    ),
    Case(
        "group_norm_channels_last",
        R.group_norm,
        R.group_norm_vjp,
        oracle.group_norm,
        (2, 3, 4),
        {"groups": 2, "eps": 1e-5, "channel_axis": 2},
        (4,),
        2,
        6,
    ),
    Case(
        "rms_norm",
        R.rms_norm,
        R.rms_norm_vjp,
        oracle.rms_norm,
        (3, 2, 5),
        {"axes": (-1,), "eps": 1e-6},
        (5,),
        0,
        5,
    ),
    Case(
        "rms_norm_two_axes",
        R.rms_norm,
        R.rms_norm_vjp,
        oracle.rms_norm,
        (2, 3, 4),
        {"axes": (1, 2), "eps": 1e-5},
        (3, 4),
        0,
        12,
    ),
    Case(
        "rms_norm_eps_outside",
        R.rms_norm,
        R.rms_norm_vjp,
        oracle.rms_norm,
        (3, 4),
        {"axes": (-1,), "eps": 1e-3, "eps_placement": "outside_sqrt"},
        (4,),
        0,
        4,
    ),
    Case(
        "local_response_norm_odd",
        R.local_response_norm,
        R.local_response_norm_vjp,
        oracle.local_response_norm,
        (2, 7, 3),
        {"size": 3, "alpha": 0.3, "beta": 0.75, "k": 2.0},
        None,
        1,
        3,
    ),
    Case(
        "local_response_norm_even_before",
        R.local_response_norm,
        R.local_response_norm_vjp,
        oracle.local_response_norm,
        (2, 6, 3),
        {"size": 4, "alpha": 0.5, "beta": 0.6, "k": 1.0},
        None,
        1,
        4,
    ),
    Case(
        "local_response_norm_even_after_raw_alpha",
        R.local_response_norm,
        R.local_response_norm_vjp,
        oracle.local_response_norm,
        (3, 2, 5),
        {
            "size": 4,
            "alpha": 0.2,
            "beta": 0.5,
            "k": 1.0,
            "alpha_over_size": False,
            "extra": "after",
            "channel_axis": -1,
        },
        None,
        2,
        4,
    ),
    Case(
        "lp_normalize",
        R.lp_normalize,
        R.lp_normalize_vjp,
        oracle.lp_normalize,
        (3, 5, 2),
        {"p": 2.0, "axes": (1,)},
        None,
        1,
        5,
    ),
    Case(
        "lp_normalize_p3_two_axes",
        R.lp_normalize,
        R.lp_normalize_vjp,
        oracle.lp_normalize,
        (3, 4, 2),
        {"p": 3.0, "axes": (0, 2), "eps_placement": "add_norm", "eps": 1e-6},
        None,
        1,
        6,
    ),
    Case(
        "lp_normalize_onnx",
        R.lp_normalize,
        R.lp_normalize_vjp,
        oracle.lp_normalize,
        (2, 3),
        {"p": 1.0, "axes": (-1,), "eps_placement": "none_or_zero", "eps": 0.0},
        None,
        0,
        3,
    ),
    Case(
        "lp_normalize_power_sum",
        R.lp_normalize,
        R.lp_normalize_vjp,
        oracle.lp_normalize,
        (4, 3),
        {"p": 2.0, "axes": (-1,), "eps_placement": "max_power_sum", "eps": 1e-12},
        None,
        0,
        3,
    ),
    Case(
        "channel_normalize",
        R.channel_normalize,
        R.channel_normalize_vjp,
        oracle.channel_normalize,
        (2, 3, 2, 2),
        {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        None,
        1,
        1,
    ),
    Case(
        "channel_normalize_floor",
        R.channel_normalize,
        R.channel_normalize_vjp,
        oracle.channel_normalize,
        (4, 3),
        {"mean": [1.0, -2.0, 0.5], "std": [2.0, 1e-9, 0.0], "channel_axis": -1, "std_floor": 1e-7},
        None,
        1,
        1,
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}


def affine_params(case: Case, rng) -> dict:
    if case.param_shape is None:
        return {}
    return {"scale": rng.normal(size=case.param_shape) + 1.0, "offset": rng.normal(size=case.param_shape)}


def initial_state(case: Case, rng):
    """A non-trivial running state, as the reference and as the oracle take it."""
    if not case.returns_state:
        return None, None
    channels = case.param_shape[0]
    mean, var = rng.normal(size=channels), rng.uniform(0.5, 2.0, size=channels)
    return R.RunningStats(mean, var, 3), (mean, var, 3)
