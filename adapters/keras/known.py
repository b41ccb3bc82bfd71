"""Keras 3's known divergences (keras[tensorflow], keras[jax], keras[torch], keras[numpy]), sorted by clause:
each a model of what a backend does instead, checked by conformance/meta/test_divergences.py.

This module holds the statistics and state (BN.D4, BN.D15, SBN.*, NUM.*, BN.D25) and lists every
entry in the family's order (`KNOWN`); the rest stand by subject in `known_axes.py` (non-trailing
axes: LN.D8, RMS.D5, RMS.D6), `known_rsqrt.py` (rsqrt's derivative: LN.D10) and `known_unit.py`
(UnitNormalization: LP.D4-D6), `known_mixed.py` the mixed policy's (MP.D10, NUM.D1)."""

from __future__ import annotations

import dataclasses

import numpy as np

from normconf.reference import RunningStats
from normconf.vocabulary import (
    MODERATE_ROWS,
    Case,
    Computes,
    Divergence,
    Simulated,
    float64_state_read,
    half,
    one_pass_exceeds_budget,
    one_pass_gradient_amplified,
    one_pass_model,
    param,
    reference_value,
    rounded,
    sequential_sums,
    squares_overflow,
    state_held_in,
    state_in_float32,
    state_past_half_example,
)

from . import known_axes, known_mixed, known_rsqrt, known_unit
from .known_axes import contiguous_non_trailing, non_trailing


def _one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=False, acc="float32")


def _sync_one_pass(case: Case, dtype: str) -> bool:
    return one_pass_exceeds_budget(case, dtype, clip=True, acc="float32")


def _torch_manual_layer_norm(case: Case, dtype: str) -> bool:
    """BN.D4 for Keras' torch LayerNorm over non-contiguous axes: there it takes ops.moments (one pass,
    in float32, float64 inputs too) instead of F.layer_norm."""
    return (
        non_trailing(case)
        and not contiguous_non_trailing(case)
        and _one_pass(case, "float32" if dtype == "float64" else dtype)
    )


# 16 values offset by 100 from a unit spread, exact in float32: one-pass float32 variance misses the
# budget here by ~10x, yet keeps all but ~1e-3 of y - a 1 % error elsewhere still shows
_ROWS = MODERATE_ROWS
# two replicas of 8 values 1 ± 3.5e-3 (float32-exact): the one-pass variance's error is ~2x the gradient
# budget, and still 2 % of dx
_rng = np.random.default_rng(3)
_SYNC_NEAR_ONE = (
    (1.0 + 3.5e-3 * _rng.normal(size=(16, 1))).astype(np.float32).astype(np.float64),
    {
        "channel_axis": -1,
        "eps": 1e-6,
        "training": True,
        "replica_sizes": (8, 8),
        "weighting": "count",
        "running_var": "biased",
    },
)
_SYNC_NEAR_ONE_COTANGENT = _rng.normal(size=(16, 1)).astype(np.float32).astype(np.float64)
# a nearly constant batch: the running variance is almost all blend, whose float32 rounding shows
_NEARLY_CONSTANT_BATCH = np.array(
    [
        [1.0001257302210933, 0.9998678951367087, 1.0006404226504433],
        [1.0001049001171531, 0.9994643306268389, 1.0003615950549094],
    ]
)


# The models: what each backend computes where a divergence holds (vocabulary/models.py).
def replica_gradients_in_dtype(case: Case, dtype: str, which: str):
    """SBN.D4: each replica's tape returns its parameter gradients in the variable's dtype - its own rows'
    sum of g x̂ (dscale) or g (doffset) rounded to the layer's dtype (a float16 partial past 65504 is
    inf) - and the replicas' partials are then summed; dx and y are the reference's."""
    if which not in ("scale", "offset") or case.params.get(which) is None or case.cotangent is None:
        return None
    axis = param(case, "channel_axis") % case.x.ndim
    plain = dataclasses.replace(
        case, params={k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    )
    xhat = np.asarray(reference_value(plain, "y"), dtype=np.float64)
    terms = case.cotangent * xhat if which == "scale" else np.broadcast_to(case.cotangent, case.x.shape)
    others = tuple(i for i in range(case.x.ndim) if i != axis)
    rows = np.cumsum(param(case, "replica_sizes"))[:-1]
    return np.sum([rounded(np.sum(part, axis=others), dtype) for part in np.split(terms, rows)], axis=0)


_ONE_PASS_FLOAT32 = one_pass_model("float32", clip=False, float64_too=True)  # float64 in float32 (LN.D10)


KNOWN: list[Divergence] = [
    *(
        Divergence(
            adapters=name,
            norm=norm,
            clause="BN.D4",
            reason="Keras' torch and numpy backends compute the variance in one pass, unclipped",
            applies=_one_pass,
            example=lambda norm=norm, shape=shape, extra=extra: (
                Case(norm, _ROWS.reshape(shape), {"eps": 2.0**-20, **extra}, "offset"),
                "float32",
            ),
            model=_ONE_PASS_FLOAT32,
        )
        for name in ("keras[torch]", "keras[numpy]")
        for norm, shape, extra in (
            ("batch_norm", (16, 1), {"channel_axis": -1, "training": True, "running_var": "biased"}),
            ("layer_norm", (1, 16), {"axes": (-1,)}),
            ("group_norm", (1, 16), {"groups": 1, "channel_axis": -1}),
        )
        if not (name == "keras[torch]" and norm == "layer_norm")  # F.layer_norm there: two-pass (LN.D8)
    ),
    Divergence(
        adapters="keras[torch]",
        norm="layer_norm",
        clause="BN.D4",
        reason="Keras' torch backend takes one-pass moments for non-contiguous LayerNorm axes",
        applies=_torch_manual_layer_norm,
        example=lambda: (
            Case("layer_norm", _ROWS.reshape(2, 1, 8), {"axes": (0, 2), "eps": 2.0**-20}, "offset"),
            "float32",
        ),
        model=one_pass_model("float32", clip=False, float64_too=True),
    ),
    *(
        Divergence(
            adapters=name,
            norm="batch_norm",
            clause="BN.D15",
            reason="Keras keeps its moving statistics in float32 variables, float64 inputs too",
            applies=float64_state_read,
            example=lambda: (
                Case(
                    "batch_norm",
                    _NEARLY_CONSTANT_BATCH,
                    {
                        "channel_axis": 1,
                        "eps": 1e-12,
                        "running_var": "biased",
                        "momentum": 0.01,
                        "training": True,
                        "state": RunningStats.initial(3),
                    },
                    "tiny_spread",
                ),
                "float64",
            ),
            shows_in="state",
            model=Simulated(state_in_float32),
        )
        for name in ("keras[jax]", "keras[torch]", "keras[numpy]")
    ),
    *known_axes.LN_D8,
    *known_rsqrt.LN_D10,
    *known_unit.LP_D4_D6,
    *known_axes.RMS_D5_D6,
    Divergence(
        adapters="keras[tensorflow]",
        norm="sync_batch_norm",
        clause="SBN.D4",
        reason="Keras' replicas return their parameter gradients in the layer's half dtype before they are "
        "summed: a replica's float16 partial past 65504 is inf",
        applies=lambda case, dtype: half(dtype) and case.cotangent is not None,
        example=lambda: (
            Case(
                "sync_batch_norm",
                np.array([[-28608.0, -24176.0, 37696.0], [-48960.0, 12016.0, 27424.0]]),
                {
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "running_var": "biased",
                    "momentum": 0.0,
                    "training": False,
                    "state": RunningStats.initial(3),
                    "scale": np.array([1.1259765625, 0.86767578125, 1.640625]),
                    "offset": np.zeros(3),
                    "replica_sizes": (1, 1),
                    "weighting": "count",
                },
                "overflow",
                cotangent=np.array([[0.5, 1.0, -2.5], [0.25, -1.0, 1.3]]),
            ),
            "float16",
        ),
        shows_in="gradient",
        model=Computes(replica_gradients_in_dtype),
    ),
    Divergence(
        adapters="keras[tensorflow]",
        norm="sync_batch_norm",
        clause="SBN.D2",
        reason="Keras' synchronized BatchNorm pools E[x^2] - mean^2 (one pass, clipped at 0; SBN.N2)",
        applies=_sync_one_pass,
        example=lambda: (
            Case(
                "sync_batch_norm",
                _ROWS.reshape(16, 1),
                {
                    "channel_axis": -1,
                    "eps": 2.0**-20,
                    "training": True,
                    "replica_sizes": (8, 8),
                    "weighting": "count",
                    "running_var": "biased",
                },
                "offset",
            ),
            "float32",
        ),
        model=one_pass_model("float32", clip=True),
    ),
    Divergence(
        adapters="keras[tensorflow]",
        norm="sync_batch_norm",
        clause="SBN.D2",
        reason="Keras' synchronized BatchNorm's one-pass pooled variance carries its error into the gradient",
        applies=one_pass_gradient_amplified,
        example=lambda: (
            Case("sync_batch_norm", *_SYNC_NEAR_ONE, "tiny_spread", cotangent=_SYNC_NEAR_ONE_COTANGENT),
            "float32",
        ),
        shows_in="gradient",
        model=one_pass_model("float32", clip=True),
    ),
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("keras*", ("batch_norm",), running_var="biased"),
    *squares_overflow("keras*", ("layer_norm", "group_norm", "rms_norm", "lp_normalize")),
]

# NUM.D3: Keras' TF backend takes BatchNormalization's moments with tf.nn.moments, half inputs cast to
# float32 first (keras/src/backend/tensorflow/nn.py, moments), measured with Keras 3.15.1 on TF 2.21
KNOWN += [
    sequential_sums(
        "keras[tensorflow]",
        "Keras' TF backend sums the batch axes as one running float32 (float64) sum: its error grows as n u",
        acc_of=lambda dtype: "float64" if dtype == "float64" else "float32",
        dtypes=("float16", "bfloat16", "float32", "float64"),
    ),
]

# BN.D25: a half-precision layer's moving statistics are variables of its dtype (add_weight with
# autocast=False takes the layer's variable dtype: keras/src/layers/normalization/batch_normalization.py);
# named per plain adapter: under the mixed policy (keras[...]@mixed) the variable dtype is float32
KNOWN += [
    Divergence(
        adapters=f"keras[{backend}]",
        norm=norm,
        clause="BN.D25",
        reason="Keras keeps a float16 (bfloat16) layer's moving statistics in float16 (bfloat16) variables: "
        "a variance past 65504 is held as inf, and momentum 0 (canonical 1) turns it into 0 * inf = NaN",
        applies=lambda case, dtype: half(dtype) and case.params.get("state") is not None,
        example=state_past_half_example(norm, **extra),
        shows_in="state",
        model=Simulated(state_held_in(lambda dtype: dtype)),
    )
    for backend in ("tensorflow", "jax", "torch", "numpy")
    for norm, extra in (
        ("batch_norm", {}),
        ("sync_batch_norm", {"replica_sizes": (2, 2), "weighting": "count"}),
    )
    if norm == "batch_norm" or backend == "tensorflow"
]

# Under the mixed policy (keras[...]@mixed, spec MP): MP.D10, and NUM.D1 with the offset cast to the half
# output (known_mixed.py)
KNOWN += known_mixed.MIXED
