"""The JAX family's known divergences (flax.linen, flax.nnx, haiku, equinox and its batch mode), sorted by
model of what the library does instead, checked by conformance/meta/test_divergences.py.

One module per library - `known_flax.py` (linen and nnx), `known_haiku.py`, `known_equinox.py` - holds
its own entries, by clause; this module keeps the entries several libraries share (BN.D14, LN.D10's
float32 rsqrt derivative, NUM.D1) and lists them all in the family's order (`KNOWN`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from normconf.vocabulary import (
    RSQRT_EXAMPLES,
    RSQRT_HELD,
    Case,
    Computes,
    Divergence,
    Envelope,
    OneOf,
    Reference,
    eps_in,
    eps_underflows,
    groups_where_var_below,
    parameter_sums_in_float16,
    rsqrt_jvp_underflows,
    squares_overflow,
)

from . import known_equinox, known_flax, known_haiku
from .known_common import range_under_policy

KNOWN: list[Divergence] = [
    *known_flax.BN_D8,
    *known_haiku.BN_D8,
    *known_equinox.BN_D10,
    *(
        Divergence(
            adapters=name,
            norm=norm,
            clause="BN.D14",
            reason="float16 statistics: eps below ~3e-8 rounds to 0 and a zero variance gives 0/0",
            applies=eps_underflows,
            example=lambda norm=norm, x=x, extra=extra: (
                Case(norm, x, {"eps": 1e-12, **extra}, "constant_channel"),
                "float16",
            ),
            # eps rounded to 0; the gradient of a zero variance is then non-finite
            model=OneOf(
                (
                    Reference(eps_in(), kind="special"),
                    Envelope(groups_where_var_below(lambda dtype: 2.0**-24)),
                )
            ),
        )
        for name, norms in (
            ("haiku", ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")),
            ("equinox*", ("batch_norm",)),  # both modes: the same statistics and normalization
        )
        for norm, x, extra in (
            ("batch_norm", np.array([[0.5, 0.5]]), {"channel_axis": -1, "training": True}),
            ("layer_norm", np.array([[0.5, 0.5]]), {"axes": (-1,)}),
            ("instance_norm", np.array([[[0.5], [0.5]]]), {"channel_axis": -1}),
            ("group_norm", np.array([[0.5, 0.5]]), {"groups": 1, "channel_axis": -1}),
            ("rms_norm", np.zeros((1, 2)), {"axes": (-1,)}),
        )
        if norm in norms
    ),
    *known_flax.BN_D15,
    *known_flax.LN_D4_D5,
    *(
        Divergence(
            adapters=name,
            norm=norm,
            clause="LN.D10",
            reason="JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
            applies=rsqrt_jvp_underflows,
            example=lambda norm=norm: (
                Case(
                    norm,
                    *RSQRT_EXAMPLES[norm],
                    "large",
                    cotangent=np.array([0.7, 0.3, 0.3]).reshape(RSQRT_EXAMPLES[norm][0].shape),
                ),
                "float32",
            ),
            shows_in="gradient",
            model=RSQRT_HELD,
        )
        for name, norms in (
            ("flax.*", ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")),
            ("haiku", ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")),
            ("equinox", ("layer_norm", "rms_norm")),
        )
        for norm in norms
    ),
    *known_haiku.LN_D10,
    *known_flax.LN_D10,
    *known_equinox.LN_D10,
    *known_haiku.RMS_D4,
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("flax.*", ("batch_norm", "instance_norm", "group_norm"), channel_axis=-1),
    *squares_overflow("flax.*", ("layer_norm", "rms_norm")),
    *squares_overflow(
        "haiku", ("batch_norm", "instance_norm", "group_norm"), half_in_half=True, channel_axis=-1
    ),
    *squares_overflow("haiku", ("layer_norm", "rms_norm"), half_in_half=True),
    # both modes; 'ema' (BN.D10) replaces the state by the batch's on the first step, and its own
    # statistics hold where none overflows
    *squares_overflow(
        "equinox", ("batch_norm",), half_in_half=True, base=Computes(known_equinox.ema_normalized)
    ),
    *squares_overflow("equinox[batch]", ("batch_norm",), half_in_half=True),
    *parameter_sums_in_float16("haiku", ("batch_norm", "instance_norm", "group_norm"), channel_axis=-1),
    *parameter_sums_in_float16("haiku", ("layer_norm",)),
    *parameter_sums_in_float16("haiku", ("rms_norm",), offset=None),
    *parameter_sums_in_float16("equinox*", ("batch_norm",)),
    *squares_overflow("equinox", ("layer_norm", "group_norm", "rms_norm")),
]

# NUM.D2: a constant group at eps = 0, as measured (flax 0.12.7)
KNOWN += known_flax.NUM_D2

# LN.D10 in float16 for equinox's BatchNorm (known_equinox.py)
KNOWN += known_equinox.LN_D10_SMALL_SPREAD

# "equinox*" reads both BatchNorm modes: equinox and equinox[batch] - not equinox@mixed, whose BatchNorm
# cannot train on half activations (MP.D50) and takes them as candidates only (Divergence.names)
KNOWN = [
    split
    for entry in KNOWN
    for split in (
        [replace(entry, adapters=name) for name in ("equinox", "equinox[batch]")]
        if entry.adapters == "equinox*"
        else [entry]
    )
]

# Under the mixed policy (spec MP): NUM.D1's groups settle to the offset as each policy holds or returns
# it, rounded to the half type; then each library's own policy divergences
KNOWN += [
    *range_under_policy(KNOWN, "flax.linen", "flax.linen@mixed", ("offset",)),
    *range_under_policy(KNOWN, "flax.nnx", "flax.nnx@mixed", ("scale", "offset")),
    *range_under_policy(KNOWN, "haiku", "haiku@mixed", ("scale", "offset", "state")),
    *range_under_policy(
        KNOWN, "equinox", "equinox@mixed", ("offset",), norms=("layer_norm", "group_norm", "rms_norm")
    ),
    *known_flax.MP_D30_D31,
    *known_haiku.mp_d40(KNOWN),
    *known_equinox.MP_D50,
]
