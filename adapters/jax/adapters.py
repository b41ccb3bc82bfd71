"""JAX family: flax.linen, flax.nnx, dm-haiku and equinox normalization layers.

Conventions are declared per norm with the source line each fact was read from (flax v0.12.7,
dm-haiku main @ f4d858a, equinox main @ 9336d82 = v0.13.8 for these files). JAX is imported only
when a layer runs. float64 needs JAX's 64-bit mode: the adapters switch `jax_enable_x64` on before
creating any array (a process-wide flag, recorded by `environment()`); lower dtypes are always
requested explicitly, so the flag changes nothing for them.

Each run builds the layer fresh, loads the canonical scale, offset and running statistics into the
framework's own variables, and calls it the way a user would; gradients come from `jax.vjp` w.r.t.
x and the parameters as loaded.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _devices, _isolated, _replicas, _repro
from ..base import Adapter, Convention, NormDeclaration, Outcome, channel_axis_of, require, trailing

LINEN = "https://github.com/google/flax/blob/v0.12.7/flax/linen/normalization.py"
SRC_LINEN_STATS = LINEN + "#L107-L150"  # _compute_stats: float32 promotion, fast (one-pass) variance
SRC_LINEN_FAST_VAR = LINEN + "#L137-L142"
SRC_LINEN_NORMALIZE = LINEN + "#L203-L226"  # _normalize: (x - mean) * (rsqrt(var + eps) * scale) + bias
SRC_LINEN_BN = LINEN + "#L308-L321"
SRC_LINEN_SYNC = LINEN + "#L119-L142"  # maybe_distributed_mean: one lax.pmean of the stacked means
SRC_JAX_DEVICES = "https://github.com/jax-ml/jax/blob/jax-v0.10.2/jax/_src/xla_bridge.py#L1212-L1229"
SRC_LINEN_BN_AXIS = LINEN + "#L354-L356"
SRC_LINEN_BN_STATE = LINEN + "#L358-L375"
SRC_LINEN_BN_UPDATE = LINEN + "#L389-L404"
SRC_LINEN_LN = LINEN + "#L486-L498"
SRC_LINEN_RMS = LINEN + "#L588-L598"
SRC_LINEN_RMS_CALL = LINEN + "#L612-L639"
SRC_LINEN_GN = LINEN + "#L711-L724"
SRC_LINEN_GN_AXES = LINEN + "#L743-L755"
SRC_LINEN_GN_GROUPS = LINEN + "#L785-L819"
SRC_LINEN_IN = LINEN + "#L887-L898"
SRC_LINEN_IN_AXES = LINEN + "#L912-L927"

NNX = "https://github.com/google/flax/blob/v0.12.7/flax/nnx/nn/normalization.py"
SRC_NNX_STATS = NNX + "#L50-L131"
SRC_NNX_PROMOTE = NNX + "#L93-L98"
SRC_NNX_NORMALIZE = NNX + "#L134-L183"
SRC_NNX_BN = NNX + "#L289-L310"
SRC_NNX_BN_STATE = NNX + "#L312-L313"
SRC_NNX_BN_PROMOTE = NNX + "#L382-L387"
SRC_NNX_BN_UPDATE = NNX + "#L388-L409"
SRC_NNX_LN = NNX + "#L500-L519"
SRC_NNX_RMS = NNX + "#L645-L661"
SRC_NNX_RMS_CALL = NNX + "#L693-L719"
SRC_NNX_GN = NNX + "#L802-L853"
SRC_NNX_GN_REPEAT = NNX + "#L922-L923"
SRC_NNX_IN = NNX + "#L1158-L1176"
SRC_NNX_IN_AXES = NNX + "#L1216-L1248"

HAIKU = (
    "https://github.com/google-deepmind/dm-haiku/blob/f4d858a5cbb29140855d68f81f5fd625e078a5ae/haiku/_src/"
)
SRC_HK_BN = HAIKU + "batch_norm.py#L64-L125"
SRC_HK_BN_CALL = HAIKU + "batch_norm.py#L127-L167"
SRC_HK_BN_STATS = HAIKU + "batch_norm.py#L169-L181"
SRC_HK_BN_EVAL = HAIKU + "batch_norm.py#L182-L188"
SRC_HK_BN_AFFINE = HAIKU + "batch_norm.py#L190-L205"
SRC_HK_EMA = HAIKU + "moving_averages.py#L113-L134"
SRC_HK_EMA_DEFAULTS = HAIKU + "moving_averages.py#L47-L52"
SRC_HK_SET_STATE = HAIKU + "base.py#L1397-L1401"
SRC_HK_LN = HAIKU + "layer_norm.py#L78-L128"
SRC_HK_LN_CALL = HAIKU + "layer_norm.py#L160-L208"
SRC_HK_IN = HAIKU + "layer_norm.py#L211-L261"
SRC_HK_GN = HAIKU + "group_norm.py#L72-L141"
SRC_HK_GN_STATS = HAIKU + "group_norm.py#L189-L217"
SRC_HK_GN_GROUPS = HAIKU + "group_norm.py#L219-L238"
SRC_HK_RMS = HAIKU + "rms_norm.py#L54-L98"
SRC_HK_RMS_CALL = HAIKU + "rms_norm.py#L109-L133"

EQX = "https://github.com/patrick-kidger/equinox/blob/9336d820b2ef66b360fc6cb3611b3da5cefbb14d/equinox/nn/"
SRC_EQX_LN = EQX + "_normalisation.py#L61-L99"
SRC_EQX_LN_CALL = EQX + "_normalisation.py#L133-L161"
SRC_EQX_GN = EQX + "_normalisation.py#L200-L232"
SRC_EQX_GN_CALL = EQX + "_normalisation.py#L263-L283"
SRC_EQX_RMS = EQX + "_normalisation.py#L321-L350"
SRC_EQX_RMS_CALL = EQX + "_normalisation.py#L384-L407"
SRC_EQX_BN = EQX + "_batch_norm.py#L97-L171"
SRC_EQX_BN_VMAP = EQX + "_batch_norm.py#L35-L44"
SRC_EQX_BN_STATS = EQX + "_batch_norm.py#L210-L222"
SRC_EQX_BN_EMA = EQX + "_batch_norm.py#L224-L240"

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
# flax (force_float32_reductions=True; nnx always) and equinox's LayerNorm/GroupNorm/RMSNorm reduce in
# promote_types(dtype, float32): half precision in float32, float64 kept.
AT_LEAST_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
# haiku (and equinox's BatchNorm) keep the statistics in the input dtype.
INPUT_DTYPE = {d: d for d in ALL_DTYPES}

FAST_VARIANCE = "one-pass E[x²]-E[x]², clipped at 0"
TWO_PASS = "two-pass mean((x - mean)²)"


# ------------------------------------------------------------------------------------------------
# Declarations. flax.linen and flax.nnx share every fact; only the source lines differ.


def _flax_bn(defaults, update, stats, normalize, state_dtype: Convention):
    return (
        Convention(
            "channel_axis", "axis", -1, defaults, note="the feature axis; every other axis is reduced"
        ),
        Convention("eps", "epsilon", 1e-5, defaults),
        Convention(
            "momentum",
            "momentum",
            0.01,
            update,
            clause="BN.D2",
            note="canonical = 1 - flax momentum (0.99): flax weights the old value",
        ),
        Convention(
            "running_var",
            "— (fixed)",
            "biased",
            update,
            clause="BN.D1",
            note="the biased batch variance that normalizes also updates the running variance",
        ),
        Convention("variance", "use_fast_variance", FAST_VARIANCE, stats, clause="BN.D8"),
        Convention("eps_placement", "—", "inside_sqrt", normalize),
        Convention("training", "use_running_average", "training = not use_running_average", defaults),
        state_dtype,
    )


def _sync(source: str, how: str) -> tuple[Convention, ...]:
    """The conventions a synchronized BatchNorm adds (SBN.P2) for a library that averages the replicas."""
    return (
        Convention("weighting", "— (fixed)", "equal", source, clause="SBN.D1", note=how),
        Convention(
            "replicas",
            "— (devices)",
            _replicas.JAX_DEVICES,
            SRC_JAX_DEVICES,
            note="the step runs under jax.pmap over this many CPU devices "
            "(XLA_FLAGS=--xla_force_host_platform_device_count), in a child process",
        ),
    )


def _flax_ln(defaults, stats):
    return (
        Convention(
            "axes",
            "reduction_axes",
            (-1,),
            defaults,
            note="the adapter sets feature_axes to the same axes, so the scale has shape x.shape[axes]",
        ),
        Convention("eps", "epsilon", 1e-6, defaults, clause="LN.D1"),
        Convention("variance", "use_fast_variance", FAST_VARIANCE, stats, clause="LN.D4"),
    )


def _flax_gn(defaults, axes, groups, stats):
    return (
        Convention(
            "groups", "num_groups", 32, defaults, clause="GN.D2", note="or group_size; exactly one is set"
        ),
        Convention("channel_axis", "— (last axis)", -1, axes, note="channels last only"),
        Convention("eps", "epsilon", 1e-6, defaults, clause="GN.D2"),
        Convention("assignment", "— (reshape to (..., G, C/G))", "contiguous", groups),
        Convention(
            "variance",
            "use_fast_variance",
            FAST_VARIANCE,
            stats,
            clause="NUM.N6",
            note="the same _compute_stats as LayerNorm (LN.D4)",
        ),
    )


def _flax_in(defaults, axes, stats):
    return (
        Convention(
            "channel_axis",
            "feature_axes",
            -1,
            defaults,
            note="reduces every axis but 0 (batch) and the feature axes",
        ),
        Convention("eps", "epsilon", 1e-6, defaults),
        Convention("affine", "use_scale, use_bias", True, defaults, clause="IN.D1"),
        Convention(
            "track_running_stats",
            "— (none)",
            False,
            axes,
            note="no running statistics: a canonical state is unsupported",
        ),
        Convention(
            "variance",
            "use_fast_variance",
            FAST_VARIANCE,
            stats,
            clause="NUM.N6",
            note="the same _compute_stats as LayerNorm (LN.D4)",
        ),
    )


def _flax_rms(defaults, call):
    return (
        Convention(
            "axes",
            "reduction_axes",
            (-1,),
            defaults,
            note="the adapter sets feature_axes to the same axes, so the scale has shape x.shape[axes]",
        ),
        Convention("eps", "epsilon", 1e-6, defaults, clause="RMS.D2"),
        Convention(
            "offset",
            "— (no bias)",
            "absent",
            call,
            note="use_mean=False and no bias: a canonical offset is unsupported",
        ),
    )


LINEN_BN_CONVENTIONS = _flax_bn(
    SRC_LINEN_BN,
    SRC_LINEN_BN_UPDATE,
    SRC_LINEN_FAST_VAR,
    SRC_LINEN_NORMALIZE,
    Convention(
        "running_stats_dtype",
        "— (batch_stats)",
        "float32 at init, then the statistics' dtype",
        SRC_LINEN_BN_STATE,
        note="force_float32_reductions=True creates them float32; an update "
        "assigns the promoted result (float64 for float64 inputs)",
    ),
)
LINEN_LN_CONVENTIONS = _flax_ln(SRC_LINEN_LN, SRC_LINEN_FAST_VAR)
LINEN_GN_CONVENTIONS = _flax_gn(SRC_LINEN_GN, SRC_LINEN_GN_AXES, SRC_LINEN_GN_GROUPS, SRC_LINEN_FAST_VAR)
LINEN_IN_CONVENTIONS = _flax_in(SRC_LINEN_IN, SRC_LINEN_IN_AXES, SRC_LINEN_FAST_VAR)
LINEN_RMS_CONVENTIONS = _flax_rms(SRC_LINEN_RMS, SRC_LINEN_RMS_CALL)

NNX_BN_CONVENTIONS = _flax_bn(
    SRC_NNX_BN,
    SRC_NNX_BN_UPDATE,
    SRC_NNX_STATS,
    SRC_NNX_NORMALIZE,
    Convention(
        "running_stats_dtype",
        "— (nnx.BatchStat)",
        "float32",
        SRC_NNX_BN_STATE,
        note="created float32 and updated in place (`self.mean[...] = ...`), which casts back: "
        "float64 models keep float32 running statistics",
    ),
)
NNX_LN_CONVENTIONS = _flax_ln(SRC_NNX_LN, SRC_NNX_STATS)
NNX_GN_CONVENTIONS = _flax_gn(SRC_NNX_GN, SRC_NNX_GN, SRC_NNX_GN_REPEAT, SRC_NNX_STATS)
NNX_IN_CONVENTIONS = _flax_in(SRC_NNX_IN, SRC_NNX_IN_AXES, SRC_NNX_STATS)
NNX_RMS_CONVENTIONS = _flax_rms(SRC_NNX_RMS, SRC_NNX_RMS_CALL)

HK_BN_CONVENTIONS = (
    Convention(
        "channel_axis",
        "data_format",
        -1,
        SRC_HK_BN,
        note="'channels_last' (-1, default) or 'channels_first' (1)",
    ),
    Convention("eps", "eps", 1e-5, SRC_HK_BN),
    Convention("running_var", "— (fixed)", "biased", SRC_HK_BN_STATS, clause="BN.D1"),
    Convention(
        "momentum_schedule",
        "decay_rate (required); ExponentialMovingAverage(zero_debias=True)",
        "w_t = (1 - d) / (1 - d^t)",
        SRC_HK_EMA,
        clause="BN.D9",
        note="a constant canonical momentum w is expressible only as w = 1 (decay_rate = 0); "
        "every other training step with running statistics is unsupported",
    ),
    Convention(
        "variance",
        "— (fixed)",
        "one-pass E[x²]-E[x]², unclipped, in the input dtype",
        SRC_HK_BN_STATS,
        clause="BN.D8",
    ),
    Convention(
        "initial_state",
        "— (set_state at init)",
        "the init batch's statistics, counter 0",
        SRC_HK_SET_STATE,
        note="not mean 0, variance 1 (BN.P7)",
    ),
    Convention("eps_placement", "—", "inside_sqrt", SRC_HK_BN_AFFINE),
    Convention(
        "training",
        "is_training, test_local_stats",
        "training = is_training",
        SRC_HK_BN_CALL,
        note="test_local_stats=True normalizes eval batches by their own statistics (BN.S4)",
    ),
)
HK_LN_CONVENTIONS = (
    Convention(
        "axes",
        "axis (required)",
        (-1,),
        SRC_HK_LN,
        note="no default; param_axis is set to the same axes so the scale has shape x.shape[axes]",
    ),
    Convention("eps", "eps", 1e-5, SRC_HK_LN),
    Convention(
        "variance",
        "use_fast_variance",
        TWO_PASS + ", in the input dtype",
        SRC_HK_LN_CALL,
        note="use_fast_variance=True would be one-pass and unclipped",
    ),
    Convention("affine", "create_scale, create_offset (required)", "no default", SRC_HK_LN),
)
HK_IN_CONVENTIONS = (
    Convention(
        "channel_axis",
        "data_format",
        -1,
        SRC_HK_IN,
        note="'channels_last' (-1, default) or 'channels_first' (1)",
    ),
    Convention("eps", "eps", 1e-5, SRC_HK_IN),
    Convention("affine", "create_scale, create_offset (required)", "no default", SRC_HK_IN),
    Convention(
        "track_running_stats",
        "— (none)",
        False,
        SRC_HK_IN,
        note="a LayerNorm over the spatial axes: a canonical state is unsupported",
    ),
    Convention("variance", "— (LayerNorm)", TWO_PASS + ", in the input dtype", SRC_HK_LN_CALL),
)
HK_GN_CONVENTIONS = (
    Convention(
        "channel_axis",
        "data_format",
        -1,
        SRC_HK_GN,
        note="'channels_last' (-1, default) or 'channels_first' (1)",
    ),
    Convention("eps", "eps", 1e-5, SRC_HK_GN),
    Convention("assignment", "— (reshape to (groups, C // groups))", "contiguous", SRC_HK_GN_GROUPS),
    Convention("variance", "— (jnp.var)", TWO_PASS + ", in the input dtype", SRC_HK_GN_STATS),
)
HK_RMS_CONVENTIONS = (
    Convention(
        "axes",
        "axis (required)",
        (-1,),
        SRC_HK_RMS,
        note="no default; param_axis is set to the same axes so the scale has shape x.shape[axes]",
    ),
    Convention("eps", "eps", 1e-5, SRC_HK_RMS, clause="RMS.D2"),
    Convention(
        "offset",
        "— (no create_offset)",
        "absent",
        SRC_HK_RMS,
        note="hk.RMSNorm has create_scale only: a canonical offset is unsupported",
    ),
)

EQX_BN_CONVENTIONS = (
    Convention(
        "channel_axis",
        "— (axis 0 of each vmapped sample)",
        1,
        SRC_EQX_BN_VMAP,
        note="runs per sample under jax.vmap(axis_name=...); statistics are pmean-ed over that axis",
    ),
    Convention("eps", "eps", 1e-5, SRC_EQX_BN),
    Convention(
        "momentum",
        "momentum",
        0.01,
        SRC_EQX_BN_EMA,
        clause="BN.D2",
        note="canonical = 1 - equinox momentum (0.99): equinox weights the old value",
    ),
    Convention("running_var", "— (fixed)", "biased", SRC_EQX_BN_STATS, clause="BN.D1"),
    Convention(
        "mode",
        "mode",
        "ema",
        SRC_EQX_BN,
        clause="BN.D10",
        note="the default 'legacy' means 'ema': after the first step, training batches are normalized "
        "by the updated running averages, not by their own statistics; the first step "
        "(first_time, canonical num_batches_tracked = 0) replaces the running state",
    ),
    Convention("variance", "— (fixed)", TWO_PASS + ", clipped at 0, in the input dtype", SRC_EQX_BN_STATS),
    Convention(
        "initial_state",
        "— (jnp.empty buffers, first_time=True)",
        "zeros, unused until the first step",
        SRC_EQX_BN,
        note="not mean 0, variance 1 (BN.P7)",
    ),
)
EQX_LN_CONVENTIONS = (
    Convention(
        "axes",
        "shape (required)",
        (-1,),
        SRC_EQX_LN,
        note="the trailing axes: shape = x.shape[axes], vmapped over the leading axes",
    ),
    Convention("eps", "eps", 1e-5, SRC_EQX_LN),
    Convention("variance", "— (jnp.var)", TWO_PASS + ", clipped at 0", SRC_EQX_LN_CALL),
)
EQX_GN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 0 of each vmapped sample)", 1, SRC_EQX_GN_CALL),
    Convention("eps", "eps", 1e-5, SRC_EQX_GN),
    Convention("assignment", "— (reshape to (groups, C // groups, ...))", "contiguous", SRC_EQX_GN_CALL),
    Convention("variance", "— (jnp.var)", TWO_PASS + ", clipped at 0", SRC_EQX_GN_CALL),
)
EQX_RMS_CONVENTIONS = (
    Convention(
        "axes",
        "shape (required)",
        (-1,),
        SRC_EQX_RMS,
        note="the trailing axes: shape = x.shape[axes], vmapped over the leading axes",
    ),
    Convention("eps", "eps", 1e-5, SRC_EQX_RMS, clause="RMS.D2"),
    Convention(
        "offset",
        "use_bias",
        "zeros (use_bias=True)",
        SRC_EQX_RMS,
        note="equinox's RMSNorm adds a bias by default; absent canonical offset = use_bias=False",
    ),
)


# ------------------------------------------------------------------------------------------------
# JAX plumbing.


def _jax():
    import jax

    if not jax.config.jax_enable_x64:  # float64 arrays need it; set before any array is created
        jax.config.update("jax_enable_x64", True)
        _devices.jax_configure(jax)
        # Compiled programs can persist across runs (the suite compiles one per layer configuration and
        # shape) when NORMCONF_JAX_CACHE names a folder. Off by default: jaxlib 0.10.2's
        # executable.serialize() once segfaulted writing an entry (a default-profile run, flax.nnx
        # instance_norm gradients), which would be reported as a crash of the layer under test.
        cache = os.environ.get("NORMCONF_JAX_CACHE", "")
        if cache:
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax


def _jnp():
    _jax()
    import jax.numpy as jnp

    return jnp


def _array(value, dtype):
    """A JAX array of `dtype` from float64 values, rounded once, on the host: a cast on the device
    would compile a conversion for every new shape."""
    return _jax().device_put(np.asarray(value, dtype=np.float64).astype(_jnp().dtype(dtype)))


def _numpy(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def _affine(params, dtype) -> dict:
    """The canonical scale and offset present in `params`, as arrays of `dtype` (canonical shapes)."""
    return {k: _array(params[k], dtype) for k in ("scale", "offset") if params.get(k) is not None}


def _vjp(fn, x, affine: dict, cotangent):
    """(y, aux, grads) of `fn(x, affine) -> (y, aux)`; grads via jax.vjp when a cotangent is given.

    `fn` reshapes the canonical affine arrays into the framework's own parameter shapes itself, so the
    cotangents come back in canonical shapes.
    """
    if cotangent is None:
        y, aux = fn(x, affine)
        return y, aux, None
    y, pullback, aux = _jax().vjp(fn, x, affine, has_aux=True)
    dx, daffine = pullback(_array(cotangent, y.dtype))
    return (
        y,
        aux,
        Grads(_numpy(dx), *(_numpy(daffine[k]) if k in daffine else None for k in ("scale", "offset"))),
    )


_COMPILED: dict = {}


def _compiled_vjp(key, fn, x, affine, extra, cotangent):
    """`_vjp` of `fn(x, affine, extra) -> (y, aux)` under one `jax.jit` per `key`, which must name
    everything `fn` closes over (its module's configuration): each new shape then costs one compilation
    instead of one per primitive, and a repeated shape none. `extra` holds the arrays fn reads."""
    jax = _jax()
    step = _COMPILED.get((key, cotangent is None))
    if step is None:
        if cotangent is None:
            step = jax.jit(lambda xj, aff, ext: fn(xj, aff, ext))
        else:

            def forward_and_back(xj, aff, ext, g):
                y, pullback, aux = jax.vjp(lambda a, b: fn(a, b, ext), xj, aff, has_aux=True)
                return y, aux, pullback(g.astype(y.dtype))

            step = jax.jit(forward_and_back)
        _COMPILED[(key, cotangent is None)] = step
    if cotangent is None:
        y, aux = step(x, affine, extra)
        return y, aux, None
    y, aux, (dx, daffine) = step(x, affine, extra, _array(cotangent, x.dtype))
    return (
        y,
        aux,
        Grads(_numpy(dx), *(_numpy(daffine[k]) if k in daffine else None for k in ("scale", "offset"))),
    )


def _sync_run(fn, x, sizes, dtype, affine, extra, cotangent, masked: bool):
    """A synchronized step (SBN) over len(sizes) CPU devices under `jax.pmap(axis_name="r")`: replica r
    gets rows of x (padded to the largest batch and, when `masked`, a mask of its real rows), and
    `fn(x_r, affine, extra, mask) -> (y_r, aux_r)` pools through its layer's axis name. Returns
    (y, aux, grads) with the replicas' outputs concatenated, the aux every replica must hold alike, and
    the parameter gradients summed over replicas (each replica's vjp holds its share)."""
    jax = _jax()
    count, rows = len(sizes), max(sizes)
    blocks = np.zeros((count, rows) + x.shape[1:])
    mask = np.zeros((count, rows) + (1,) * (x.ndim - 1), dtype=bool)
    for r, part in enumerate(_replicas.split(x, sizes)):
        blocks[r, : len(part)], mask[r, : len(part)] = part, True
    mask = jax.device_put(mask) if masked else None

    def forward(xr, mr, aff, ext):
        return fn(xr, aff, ext, mr)

    def forward_and_back(xr, mr, aff, ext, g):
        y, pullback, aux = jax.vjp(lambda a, p: fn(a, p, ext, mr), xr, aff, has_aux=True)
        return y, aux, pullback(g.astype(y.dtype))

    devices = jax.devices("cpu")[:count]
    require(
        len(devices) == count,
        f"a synchronized step over {count} replicas needs {count} devices, this process has {len(devices)}",
    )
    mask_axis = 0 if masked else None
    if cotangent is None:
        step = jax.pmap(forward, axis_name="r", in_axes=(0, mask_axis, None, None), devices=devices)
        y, aux = step(_array(blocks, dtype), mask, affine, extra)
        grads = None
    else:
        g = np.zeros_like(blocks)
        for r, part in enumerate(_replicas.split(np.asarray(cotangent, dtype=np.float64), sizes)):
            g[r, : len(part)] = part
        step = jax.pmap(
            forward_and_back, axis_name="r", in_axes=(0, mask_axis, None, None, 0), devices=devices
        )
        y, aux, (dx, daffine) = step(_array(blocks, dtype), mask, affine, extra, _array(g, dtype))
        dx = np.concatenate([_numpy(dx[r, :n]) for r, n in enumerate(sizes)])
        grads = Grads(
            dx, *(_numpy(daffine[k]).sum(axis=0) if k in daffine else None for k in ("scale", "offset"))
        )
    y = np.concatenate([_numpy(y[r, :n]) for r, n in enumerate(sizes)])
    held = jax.tree.map(_numpy, aux)
    for leaf in jax.tree.leaves(held):  # SBN.S3: every replica ends the step with the same state
        if not np.array_equal(leaf, np.broadcast_to(leaf[:1], leaf.shape), equal_nan=True):
            raise RuntimeError(
                f"the replicas hold different running statistics after the step: {leaf.tolist()}"
            )
    return y, jax.tree.map(lambda leaf: leaf[0], held), grads


def _axes(x, params) -> tuple[int, ...]:
    axes = params["axes"]
    return tuple(sorted({a % x.ndim for a in ((axes,) if isinstance(axes, int) else axes)}))


def _decay(momentum: float | None) -> float:
    """The layer's momentum (the old value's weight) for canonical `momentum` (the new value's): 1 - momentum.
    None (a cumulative average) is refused by `_running` wherever an update happens; elsewhere the
    layer's own default (0.99) stands, unused."""
    return 0.99 if momentum is None else 1.0 - momentum


def _running(api: str, params) -> tuple[RunningStats | None, bool]:
    """(state, training); checks what a running-statistics update needs when one happens."""
    state, training = params.get("state"), params["training"]
    if training and state is not None:
        require(
            params["momentum"] is not None,
            f"{api} has no cumulative average: momentum=None is unsupported (BN.D7)",
        )
        require(
            params["running_var"] == "biased",
            f"{api} updates the running variance with the biased batch variance: "
            "running_var='biased' only (BN.D1)",
        )
    return state, training


def _no_state(api: str, params) -> None:
    require(params.get("state") is None, f"{api} keeps no running statistics: state must be None (IN.P4)")


def _rms_eps(api: str, params) -> float:
    """RMSNorm's eps has no canonical default (RMS.P3); None (PyTorch's dtype epsilon) has no counterpart."""
    eps = params.get("eps")
    require(eps is not None, f"{api} needs an explicit eps (RMS.P3)")
    return eps


class JaxBase(Adapter):
    family = "jax"
    framework = ""  # the importable module whose version environment() reports

    def environment(self):
        jax = _jax()
        import importlib

        import jaxlib

        module = importlib.import_module(self.framework)
        return {
            "adapter": self.name,
            "framework": self.framework,
            "version": getattr(module, "__version__", "unknown"),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            **_devices.jax_environment(jax),
            "x64": bool(jax.config.jax_enable_x64),
            "compiled": "jax.jit",  # each layer call runs jitted, as in a user's training step
        }

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        """Below float64 as a user who never turned on 64-bit mode: layers that take their dtype from
        JAX's default float (equinox's) would otherwise build float64 parameters and state."""
        with _jax().enable_x64(dtype == "float64"):
            return super().run_framework_defaults(norm, x, hints, dtype=dtype)

    # framework-alone repros: the layer classes a run constructs, the helper that receives the
    # built layer, and how the script builds the layer and its `forward(x, params, extra)`
    repro_import = ""
    repro_classes: tuple = ()
    repro_helper = ""

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        """The layer this adapter built (its constructor call) and a `forward(x, params, extra)` doing
        what the adapter's compiled call does, jitted the same way (vjp inside the jit when there
        are gradients); params = the canonical scale/offset, extra = the state the adapter passed."""
        if norm == "sync_batch_norm":
            return self._sync_repro(x, params, dtype, cotangent)
        module = sys.modules[__name__]
        namespace = self._repro_namespace()
        helper_name = self._repro_helper(norm)
        calls = _repro.recorded_calls(
            [*((namespace, c) for c in self.repro_classes), (module, helper_name), (module, "_compiled_vjp")],
            lambda: self.run(norm, x, params, dtype=dtype, cotangent=cotangent),
        )
        built = [c for c in calls if c.name in self.repro_classes][:1]  # traced more than once: the first
        helper, compiled = _repro.only(calls, helper_name), _repro.only(calls, "_compiled_vjp")
        if not built or helper is None or compiled is None:
            return None
        affine, extra = compiled.args[3], compiled.args[4]
        kwargs = {k: _repro.Source("nnx.Rngs(0)") if k == "rngs" else v for k, v in built[0].kwargs.items()}
        constructor = f"{built[0].name}({_repro.arguments(built[0].args, kwargs)})"
        lines = [
            *JAX_HEADER,
            self.repro_import,
            f"x = array({_repro.values(x)}, {dtype!r})",
            "params = {"
            + ", ".join(f"{k!r}: array({_repro.values(v)}, {dtype!r})" for k, v in affine.items())
            + "}",
            *self._repro_body(constructor, helper, extra),
        ]
        if cotangent is None:
            lines += ["y, aux = jax.jit(forward)(x, params, extra)"]
        else:
            lines += [
                f"g = array({_repro.values(cotangent)}, {dtype!r})",
                "@jax.jit",
                "def forward_and_back(x, params, extra, g):",
                "    y, pullback, aux = jax.vjp(lambda a, b: forward(a, b, extra), x, params, has_aux=True)",
                "    return y, aux, pullback(g.astype(y.dtype))",
                "y, aux, (dx, dparams) = forward_and_back(x, params, extra, g)",
                "grads = {'x': dx, **dparams}",
            ]
        lines += [
            "show('y', y)",
            "show('state after', aux)",
            *(["show('grad', grads)"] if cotangent is not None else []),
        ]
        return _repro.script(lines)

    def _repro_helper(self, norm: str) -> str:
        """The module-level helper that receives the built layer for `norm` (recorded for the script)."""
        return self.repro_helper

    sync_axis_keyword = ""  # the layer's replica-axis argument (flax axis_name, haiku cross_replica_axis)

    def _sync_repro(self, x, params, dtype, cotangent):
        """A synchronized step alone: the CPU devices made first (XLA_FLAGS), the layer with its replica
        axis, and the same `jax.pmap` over the replicas' padded batches that `_sync_run` made."""
        if not _replicas.here():
            return _isolated.isolated(self.name, _replicas.jax_env()).call(
                "framework_repro", "sync_batch_norm", x, params, dtype=dtype, cotangent=cotangent
            )
        module = sys.modules[__name__]
        calls = _repro.recorded_calls(
            [*((self._repro_namespace(), c) for c in self.repro_classes), (module, "_sync_run")],
            lambda: self.run("sync_batch_norm", x, params, dtype=dtype, cotangent=cotangent),
        )
        built = [c for c in calls if c.name in self.repro_classes and c.kwargs.get(self.sync_axis_keyword)][
            :1
        ]
        run = _repro.only(calls, "_sync_run")
        if not built or run is None:
            return None
        sizes, affine, extra = run.args[2], run.args[4], run.args[5]
        masked = run.kwargs["masked"]
        lines = [
            "import os",
            f"os.environ['XLA_FLAGS'] = {_replicas.jax_env()['XLA_FLAGS']!r}  # before JAX starts",
            *JAX_HEADER,
            self.repro_import,
            f"sizes = {tuple(sizes)!r}",
            f"x = np.array({_repro.values(x)})  # every replica's rows, in order",
            "params = {"
            + ", ".join(f"{k!r}: array({_repro.values(v)}, {dtype!r})" for k, v in affine.items())
            + "}",
            *self._sync_repro_body(
                f"{built[0].name}({_repro.arguments(built[0].args, built[0].kwargs)})", extra, params
            ),
            "def padded(rows):  # replica r's rows, padded to the largest batch",
            "    out = np.zeros((len(sizes), max(sizes)) + rows.shape[1:])",
            "    for r, part in enumerate(np.split(rows, np.cumsum(sizes)[:-1])):",
            "        out[r, :len(part)] = part",
            f"    return array(out.tolist(), {dtype!r})",
            "mask = np.zeros((len(sizes), max(sizes)) + (1,) * (x.ndim - 1), dtype=bool)",
            "for r, n in enumerate(sizes):",
            "    mask[r, :n] = True",
            f"mask = mask if {masked!r} else None  # flax's mask only where the batches differ",
            "devices = jax.devices('cpu')[:len(sizes)]",
            "rows = lambda a: np.concatenate([np.asarray(a[r, :n]) for r, n in enumerate(sizes)])",
        ]
        axes = f"(0, {0 if masked else None}, None, None"
        if cotangent is None:
            lines += [
                "step = jax.pmap(lambda xr, mr, aff, ext: fn(xr, aff, ext, mr), axis_name='r', "
                f"in_axes={axes}), "
                "devices=devices)",
                "y, aux = step(padded(x), mask, params, extra)",
                "y = rows(y)",
            ]
        else:
            lines += [
                f"g = np.array({_repro.values(cotangent)})",
                "def forward_and_back(xr, mr, aff, ext, gr):",
                "    y, pullback, aux = jax.vjp(lambda a, p: fn(a, p, ext, mr), xr, aff, has_aux=True)",
                "    return y, aux, pullback(gr.astype(y.dtype))",
                f"step = jax.pmap(forward_and_back, axis_name='r', in_axes={axes}, 0), devices=devices)",
                "y, aux, (dx, dparams) = step(padded(x), mask, params, extra, padded(g))",
                "y = rows(y)",
                "grads = {'x': rows(dx), **{k: np.asarray(v).sum(axis=0) for k, v in dparams.items()}}",
            ]
        lines += [
            "show('y', y)",
            "show('state after (replica 0)', jax.tree.map(lambda a: a[0], aux))",
            *(["show('grad', grads)"] if cotangent is not None else []),
        ]
        return _repro.script(lines)

    def _sync_repro_body(self, constructor: str, extra, params: dict) -> list[str]:
        """Lines defining `extra` and `fn(xr, aff, extra, mask) -> (y, new state)` as the adapter's own."""
        raise NotImplementedError

    def _repro_namespace(self):
        raise NotImplementedError

    def _repro_body(self, constructor: str, helper, extra) -> list[str]:
        raise NotImplementedError


JAX_HEADER = (
    *_repro.HEADER,
    "import jax",
    "import jax.numpy as jnp",
    "jax.config.update('jax_enable_x64', True)",
    "array = lambda values, dtype: jnp.asarray(np.array(values)).astype(dtype)",
    *_repro.show_function("v"),
)


def _keywords(kwargs) -> str:
    return "".join(f", {k}={_repro.plain(v)}" for k, v in (kwargs or {}).items())


def _tree_literal(tree) -> str:
    """Source for a dict tree of arrays (haiku state, flax batch_stats), each rounded to its dtype."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {_tree_literal(v)}" for k, v in tree.items()) + "}"
    return f"array({_repro.values(tree)}, {str(np.asarray(tree).dtype)!r})"


# ------------------------------------------------------------------------------------------------
# flax.linen


def _linen():
    _jax()
    import flax.linen as nn

    return nn


def _linen_run(module, x, affine, cotangent, init_kwargs=None, call_kwargs=None, batch_stats=None):
    """Init `module` on x, load the canonical affine (and batch_stats), apply; aux = new batch_stats."""
    jax = _jax()
    # Only the variables' structure matters (their values are replaced below): tracing init abstractly
    # spares compiling the random initializers for every new shape.
    abstract = jax.eval_shape(lambda xj: module.init(jax.random.key(0), xj, **(init_kwargs or {})), x)
    variables = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), abstract)
    if batch_stats is not None:
        variables = {**variables, "batch_stats": batch_stats}

    def fn(xj, aff, variables):
        shapes = {name: v.shape for name, v in variables.get("params", {}).items()}
        params = {
            name: aff[key].reshape(shapes[name])
            for key, name in (("scale", "scale"), ("offset", "bias"))
            if key in aff
        }
        full = {**variables, "params": params}
        if "batch_stats" in variables:
            y, updates = module.apply(full, xj, mutable=["batch_stats"], **(call_kwargs or {}))
            return y, updates["batch_stats"]
        return module.apply(full, xj, **(call_kwargs or {})), None

    key = ("flax.linen", repr(module), tuple(sorted((call_kwargs or {}).items())))
    return _compiled_vjp(key, fn, x, affine, variables, cotangent)


def _linen_default(build, stateful=False):
    """A no-argument call: `build(nn, x, hints)` initialized and applied as a user would; BatchNorm
    (whose `use_running_average` has no default) in training mode, its batch_stats coming back."""

    def call(x, hints, dtype):
        jax = _jax()
        module, xj = build(_linen(), x, hints), _array(x, dtype)
        kwargs = {"use_running_average": False} if stateful else {}
        variables = module.init(jax.random.key(0), xj, **kwargs)
        if not stateful:
            return Outcome(_numpy(module.apply(variables, xj))), {}
        y, updates = module.apply(variables, xj, mutable=["batch_stats"], **kwargs)
        stats = updates["batch_stats"]
        state = RunningStats(_numpy(stats["mean"]), _numpy(stats["var"]), 1)
        return Outcome(_numpy(y), state), {"state": RunningStats.initial(x.shape[-1]), "training": True}

    return call


LINEN_DEFAULT_CALLS = {
    "batch_norm": _linen_default(lambda nn, x, h: nn.BatchNorm(), stateful=True),
    "layer_norm": _linen_default(lambda nn, x, h: nn.LayerNorm()),
    "group_norm": _linen_default(lambda nn, x, h: nn.GroupNorm()),
    "instance_norm": _linen_default(lambda nn, x, h: nn.InstanceNorm()),
    "rms_norm": _linen_default(lambda nn, x, h: nn.RMSNorm()),
}


class FlaxLinen(JaxBase):
    """`flax.linen` modules, initialized and applied functionally (`init` / `apply`)."""

    name = "flax.linen"
    cost = 22.2  # see Adapter.cost
    framework = "flax"
    requires = ("jax", "flax")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "flax.linen.BatchNorm",
            ALL_DTYPES,
            LINEN_BN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "flax.linen.LayerNorm",
            ALL_DTYPES,
            LINEN_LN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "flax.linen.GroupNorm",
            ALL_DTYPES,
            LINEN_GN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "flax.linen.InstanceNorm",
            ALL_DTYPES,
            LINEN_IN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm",
            "flax.linen.RMSNorm",
            ALL_DTYPES,
            LINEN_RMS_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "sync_batch_norm": NormDeclaration(
            "sync_batch_norm",
            "flax.linen.BatchNorm(axis_name=...) under jax.pmap",
            ALL_DTYPES,
            LINEN_BN_CONVENTIONS
            + _sync(
                SRC_LINEN_SYNC,
                "lax.pmean of the replicas' means of x and |x|^2; unequal batches through `mask`",
            ),
            AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
    }

    def no_argument_calls(self):
        return LINEN_DEFAULT_CALLS

    repro_import, repro_classes, repro_helper = (
        "import flax.linen as nn",
        ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm"),
        "_linen_run",
    )

    def _repro_namespace(self):
        return _linen()

    sync_axis_keyword = "axis_name"

    def _sync_repro_body(self, constructor, extra, params):
        running_average = not params["training"] and params.get("state") is not None
        return [
            f"module = nn.{constructor}",
            f"extra = {_tree_literal(extra)}",
            "def fn(xr, aff, extra, mask):",
            "    full = {**extra, 'params': "
            "{{'scale': 'scale', 'offset': 'bias'}[k]: v for k, v in aff.items()}}",
            f"    kwargs = dict(use_running_average={running_average!r}, mask=mask)",
            "    if 'batch_stats' in extra:",
            "        y, updates = module.apply(full, xr, mutable=['batch_stats'], **kwargs)",
            "        return y, updates['batch_stats']",
            "    return module.apply(full, xr, **kwargs), None",
        ]

    def _repro_body(self, constructor, helper, extra):
        module, x, affine, cotangent, init_kwargs, call_kwargs, batch_stats = (*helper.args, *[None] * 7)[:7]
        init_kwargs, call_kwargs = (
            helper.kwargs.get("init_kwargs", init_kwargs),
            helper.kwargs.get("call_kwargs", call_kwargs),
        )
        stateful = "batch_stats" in extra
        lines = [
            f"module = nn.{constructor}",
            f"extra = module.init(jax.random.key(0), x{_keywords(init_kwargs)})",
        ]
        if stateful:
            lines.append(f"extra['batch_stats'] = {_tree_literal(extra['batch_stats'])}")
        lines += [
            "def forward(x, params, extra):",
            "    shapes = {name: v.shape for name, v in extra.get('params', {}).items()}",
            "    loaded = {name: params[key].reshape(shapes[name]) "
            "for key, name in (('scale', 'scale'), ('offset', 'bias')) if key in params}",
            "    full = {**extra, 'params': loaded}",
        ]
        if stateful:
            lines += [
                f"    y, updates = module.apply(full, x, mutable=['batch_stats']{_keywords(call_kwargs)})",
                "    return y, updates['batch_stats']",
            ]
        else:
            lines += [f"    return module.apply(full, x{_keywords(call_kwargs)}), None"]
        return lines

    def _run_batch_norm(self, x, params, dtype, cotangent):
        state, training = _running("flax BatchNorm", params)
        affine = _affine(params, dtype)
        axis = channel_axis_of(x, params)
        momentum = params["momentum"]
        module = _linen().BatchNorm(
            axis=axis,
            momentum=_decay(momentum),
            epsilon=params["eps"],
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
        )
        stats = None
        if state is not None:
            # flax holds the statistics' dtype after any update (float32 for half, float64 for float64).
            acc = AT_LEAST_FLOAT32[dtype]
            stats = {"mean": _array(state.mean, acc), "var": _array(state.var, acc)}
        # Without running statistics the batch statistics normalize in eval too (BN.S4).
        use_running_average = not training and state is not None
        y, new, grads = _linen_run(
            module,
            _array(x, dtype),
            affine,
            cotangent,
            {"use_running_average": False},
            {"use_running_average": use_running_average},
            stats,
        )
        new_state = None
        if state is not None:
            new_state = RunningStats(
                _numpy(new["mean"]), _numpy(new["var"]), state.num_batches_tracked + int(training)
            )
        return Outcome(_numpy(y), new_state, grads)

    def _run_sync_batch_norm(self, x, params, dtype, cotangent):
        """BatchNorm(axis_name="r") under pmap; unequal batches through its `mask` (SBN.D1)."""
        if not _replicas.here():
            return _replicas.run_in_child(self, _replicas.jax_env(), x, params, dtype, cotangent)
        require(
            params["weighting"] == "equal",
            "flax averages the replicas' statistics: weighting='equal' only (SBN.D1)",
        )
        state, training = _running("flax BatchNorm", params)
        affine = _affine(params, dtype)
        axis = channel_axis_of(x, params)
        sizes = tuple(params["replica_sizes"])
        nn = _linen()
        module = nn.BatchNorm(
            axis=axis,
            momentum=_decay(params["momentum"]),
            epsilon=params["eps"],
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
            axis_name="r",
        )
        use_running_average = not training and state is not None
        shape = (max(sizes),) + x.shape[1:]
        abstract = _jax().eval_shape(
            lambda: module.init(
                _jax().random.key(0), np.zeros(shape, dtype=np.float32), use_running_average=False
            )
        )
        variables = _jax().tree.map(lambda s: _jax().device_put(np.zeros(s.shape, s.dtype)), abstract)
        if state is not None:
            acc = AT_LEAST_FLOAT32[dtype]
            variables["batch_stats"] = {"mean": _array(state.mean, acc), "var": _array(state.var, acc)}

        def fn(xr, aff, variables, mask):
            names = {"scale": "scale", "offset": "bias"}
            full = {**variables, "params": {names[k]: v for k, v in aff.items()}}
            kwargs = {"use_running_average": use_running_average, "mask": mask}
            if "batch_stats" in variables:
                y, updates = module.apply(full, xr, mutable=["batch_stats"], **kwargs)
                return y, updates["batch_stats"]
            return module.apply(full, xr, **kwargs), None

        y, new, grads = _sync_run(
            fn, x, sizes, dtype, affine, variables, cotangent, masked=len(set(sizes)) > 1
        )
        new_state = None
        if state is not None:
            new_state = RunningStats(new["mean"], new["var"], state.num_batches_tracked + int(training))
        return Outcome(y, new_state, grads)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        affine = _affine(params, dtype)
        axes = _axes(x, params)
        module = _linen().LayerNorm(
            epsilon=params["eps"],
            reduction_axes=axes,
            feature_axes=axes,
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
        )
        y, _, grads = _linen_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_group_norm(self, x, params, dtype, cotangent):
        require(channel_axis_of(x, params) == x.ndim - 1, "flax GroupNorm takes channels last only (GN.P2)")
        require(
            params["assignment"] == "contiguous",
            "flax GroupNorm groups contiguous channels (GN.D1)",
        )
        affine = _affine(params, dtype)
        module = _linen().GroupNorm(
            num_groups=params["groups"],
            group_size=None,
            epsilon=params["eps"],
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
        )
        y, _, grads = _linen_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        _no_state("flax InstanceNorm", params)
        affine = _affine(params, dtype)
        module = _linen().InstanceNorm(
            epsilon=params["eps"],
            feature_axes=channel_axis_of(x, params),
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
        )
        y, _, grads = _linen_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        require(params.get("offset") is None, "flax RMSNorm has no bias (RMS.P2)")
        affine = _affine(params, dtype)
        axes = _axes(x, params)
        module = _linen().RMSNorm(
            epsilon=_rms_eps("flax RMSNorm", params),
            reduction_axes=axes,
            feature_axes=axes,
            use_scale="scale" in affine,
            param_dtype=dtype,
        )
        y, _, grads = _linen_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)


# ------------------------------------------------------------------------------------------------
# flax.nnx


def _nnx():
    _jax()
    from flax import nnx

    return nnx


def _nnx_run(module, x, affine, cotangent, use_running_average=None):
    """Split `module`, then per call merge a copy, load the canonical affine into it and call it;
    aux = the running statistics (BatchNorm) after the call."""
    nnx = _nnx()
    graphdef, state = nnx.split(module)
    kwargs = {} if use_running_average is None else {"use_running_average": use_running_average}

    def fn(xj, aff, state):
        m = nnx.merge(graphdef, state, copy=True)
        for key, attr in (("scale", "scale"), ("offset", "bias")):
            if key in aff:
                variable = getattr(m, attr)
                variable.set_value(aff[key].reshape(variable.get_value().shape))
        y = m(xj, **kwargs)
        return y, ((m.mean.get_value(), m.var.get_value()) if kwargs else None)

    return _compiled_vjp(("flax.nnx", graphdef, use_running_average), fn, x, affine, state, cotangent)


def _nnx_default(build, stateful=False):
    """A no-argument call: the nnx module `build(nnx, x, hints)` (features from x, rngs) called on x;
    BatchNorm in its default mode (batch statistics, running averages updated)."""

    def call(x, hints, dtype):
        nnx = _nnx()
        module = build(nnx, x, hints)
        y = module(_array(x, dtype))
        if not stateful:
            return Outcome(_numpy(y)), {}
        state = RunningStats(_numpy(module.mean.get_value()), _numpy(module.var.get_value()), 1)
        return Outcome(_numpy(y), state), {"state": RunningStats.initial(x.shape[-1]), "training": True}

    return call


NNX_DEFAULT_CALLS = {
    "batch_norm": _nnx_default(lambda nnx, x, h: nnx.BatchNorm(x.shape[-1], rngs=nnx.Rngs(0)), stateful=True),
    "layer_norm": _nnx_default(lambda nnx, x, h: nnx.LayerNorm(x.shape[-1], rngs=nnx.Rngs(0))),
    "group_norm": _nnx_default(
        lambda nnx, x, h: nnx.GroupNorm(x.shape[-1], num_groups=h["groups"], rngs=nnx.Rngs(0))
    ),
    "instance_norm": _nnx_default(lambda nnx, x, h: nnx.InstanceNorm(x.shape[-1], rngs=nnx.Rngs(0))),
    "rms_norm": _nnx_default(lambda nnx, x, h: nnx.RMSNorm(x.shape[-1], rngs=nnx.Rngs(0))),
}


class FlaxNnx(JaxBase):
    """`flax.nnx` modules (stateful objects; running statistics are `nnx.BatchStat` variables)."""

    name = "flax.nnx"
    cost = 13.6  # see Adapter.cost
    framework = "flax"
    requires = ("jax", "flax")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "flax.nnx.BatchNorm",
            ALL_DTYPES,
            NNX_BN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "flax.nnx.LayerNorm",
            ALL_DTYPES,
            NNX_LN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "flax.nnx.GroupNorm",
            ALL_DTYPES,
            NNX_GN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "instance_norm": NormDeclaration(
            "instance_norm",
            "flax.nnx.InstanceNorm",
            ALL_DTYPES,
            NNX_IN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm", "flax.nnx.RMSNorm", ALL_DTYPES, NNX_RMS_CONVENTIONS, AT_LEAST_FLOAT32, gradients=True
        ),
    }

    def no_argument_calls(self):
        return NNX_DEFAULT_CALLS

    repro_import, repro_classes, repro_helper = (
        "from flax import nnx",
        ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm"),
        "_nnx_run",
    )

    def _repro_namespace(self):
        return _nnx()

    def _repro_body(self, constructor, helper, extra):
        module, *rest = helper.args
        use_running_average = helper.kwargs.get("use_running_average", rest[3] if len(rest) > 3 else None)
        lines = [f"module = nnx.{constructor}"]
        if use_running_average is not None:  # BatchNorm: the running statistics as loaded
            lines += [
                f"module.{name}.set_value(array({_repro.values(getattr(module, name).get_value())}, "
                f"{str(getattr(module, name).get_value().dtype)!r}))"
                for name in ("mean", "var")
            ]
        call = "" if use_running_average is None else f", use_running_average={use_running_average!r}"
        return [
            *lines,
            "graphdef, extra = nnx.split(module)",
            "def forward(x, params, extra):",
            "    m = nnx.merge(graphdef, extra, copy=True)",
            "    for key, attr in (('scale', 'scale'), ('offset', 'bias')):",
            "        if key in params:",
            "            variable = getattr(m, attr)",
            "            variable.set_value(params[key].reshape(variable.get_value().shape))",
            f"    y = m(x{call})",
            "    return y, "
            + ("None" if use_running_average is None else "(m.mean.get_value(), m.var.get_value())"),
        ]

    def _run_batch_norm(self, x, params, dtype, cotangent):
        nnx = _nnx()
        state, training = _running("nnx BatchNorm", params)
        affine = _affine(params, dtype)
        axis = channel_axis_of(x, params)
        momentum = params["momentum"]
        module = nnx.BatchNorm(
            x.shape[axis],
            axis=axis,
            momentum=_decay(momentum),
            epsilon=params["eps"],
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
        if state is not None:
            # Loaded in the BatchStat's own dtype (float32, fixed by nnx), as the layer stores them.
            for variable, value in ((module.mean, state.mean), (module.var, state.var)):
                variable.set_value(_array(value, variable.get_value().dtype))
        # Without running statistics the batch statistics normalize in eval too (BN.S4).
        use_running_average = not training and state is not None
        y, new, grads = _nnx_run(module, _array(x, dtype), affine, cotangent, use_running_average)
        new_state = None
        if state is not None:
            new_state = RunningStats(
                _numpy(new[0]), _numpy(new[1]), state.num_batches_tracked + int(training)
            )
        return Outcome(_numpy(y), new_state, grads)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        nnx = _nnx()
        affine = _affine(params, dtype)
        axes = _axes(x, params)
        module = nnx.LayerNorm(
            math.prod(x.shape[a] for a in axes),
            epsilon=params["eps"],
            reduction_axes=axes,
            feature_axes=axes,
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
        y, _, grads = _nnx_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_group_norm(self, x, params, dtype, cotangent):
        nnx = _nnx()
        require(channel_axis_of(x, params) == x.ndim - 1, "nnx GroupNorm takes channels last only (GN.P2)")
        require(
            params["assignment"] == "contiguous",
            "nnx GroupNorm groups contiguous channels (GN.D1)",
        )
        affine = _affine(params, dtype)
        module = nnx.GroupNorm(
            x.shape[-1],
            num_groups=params["groups"],
            group_size=None,
            epsilon=params["eps"],
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
        y, _, grads = _nnx_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        nnx = _nnx()
        _no_state("nnx InstanceNorm", params)
        affine = _affine(params, dtype)
        axis = channel_axis_of(x, params)
        module = nnx.InstanceNorm(
            x.shape[axis],
            epsilon=params["eps"],
            feature_axes=axis,
            use_scale="scale" in affine,
            use_bias="offset" in affine,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
        y, _, grads = _nnx_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        nnx = _nnx()
        require(params.get("offset") is None, "nnx RMSNorm has no bias (RMS.P2)")
        affine = _affine(params, dtype)
        axes = _axes(x, params)
        module = nnx.RMSNorm(
            math.prod(x.shape[a] for a in axes),
            epsilon=_rms_eps("nnx RMSNorm", params),
            reduction_axes=axes,
            feature_axes=axes,
            use_scale="scale" in affine,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
        y, _, grads = _nnx_run(module, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)


# ------------------------------------------------------------------------------------------------
# dm-haiku


def _haiku():
    _jax()
    import haiku as hk

    return hk


def _haiku_run(key, make, x, affine, cotangent, init_args=(), call_args=(), load_state=None):
    """transform_with_state(make()(x, *args)): init on x, load the canonical affine (reshaped to the
    parameters' shapes) and, via `load_state(state)`, the running statistics; apply. aux = new state.
    `key` names the module's configuration (what `make` closes over) for the compiled-function cache."""
    hk = _haiku()
    jax = _jax()
    f = hk.transform_with_state(lambda xj, *args: make()(xj, *args))
    # Shapes only, traced abstractly: parameters are replaced by the canonical affine and haiku's
    # initial state is all zeros (EMA counters, hidden values, averages), so nothing is run eagerly.
    params, state = jax.eval_shape(lambda xj: f.init(None, xj, *init_args), x)
    state = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), state)
    if load_state is not None:
        state = load_state(state)
    (module_name,) = params.keys() if params else ("",)
    shapes = {name: v.shape for name, v in params.get(module_name, {}).items()}

    def fn(xj, aff, state):
        loaded = {
            module_name: {key: aff[key].reshape(shapes[key]) for key in ("scale", "offset") if key in aff}
        }
        return f.apply(loaded if aff else {}, state, None, xj, *call_args)

    key = ("haiku", key, module_name, tuple(sorted(shapes.items())), call_args)
    return _compiled_vjp(key, fn, x, affine, state, cotangent)


def _haiku_format(api: str, x, params, norm_clause: str) -> str:
    axis = channel_axis_of(x, params)
    require(
        axis in (1, x.ndim - 1),
        f"{api} takes channels_first (axis 1) or channels_last (axis -1) only ({norm_clause})",
    )
    return "channels_last" if axis == x.ndim - 1 else "channels_first"


def _haiku_default(build, stateful=False):
    """A no-argument call: `build(hk, x, hints)` under transform_with_state, init and applied on x; what
    haiku requires is passed (create_scale/create_offset=True, whose initial 1 and 0 are the canonical
    absent affine; axis=-1). BatchNorm in training: its first zero-debiased EMA update weights the batch
    by 1, whatever the required decay_rate."""

    def call(x, hints, dtype):
        hk, jax = _haiku(), _jax()
        args = (True,) if stateful else ()
        f = hk.transform_with_state(lambda xj: build(hk, x, hints)(xj, *args))
        xj = _array(x, dtype)
        params, state = f.init(jax.random.key(0), xj)
        y, new = f.apply(params, state, None, xj)
        if not stateful:
            return Outcome(_numpy(y)), {}
        mean, var = (
            [v for k, v in new.items() if k.endswith(ema)][0]["average"] for ema in ("mean_ema", "var_ema")
        )
        channels = x.shape[-1]
        return (
            Outcome(_numpy(y), RunningStats(_numpy(mean).reshape(-1), _numpy(var).reshape(-1), 1)),
            {"state": RunningStats.initial(channels), "training": True, "momentum": 1.0},
        )

    return call


HAIKU_DEFAULT_CALLS = {
    "batch_norm": _haiku_default(lambda hk, x, h: hk.BatchNorm(True, True, decay_rate=0.9), stateful=True),
    "layer_norm": _haiku_default(
        lambda hk, x, h: hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)
    ),
    "instance_norm": _haiku_default(lambda hk, x, h: hk.InstanceNorm(create_scale=True, create_offset=True)),
    "group_norm": _haiku_default(lambda hk, x, h: hk.GroupNorm(h["groups"])),
    "rms_norm": _haiku_default(lambda hk, x, h: hk.RMSNorm(axis=-1)),
}


class Haiku(JaxBase):
    """dm-haiku modules under `hk.transform_with_state`."""

    name = "haiku"
    cost = 22.6  # see Adapter.cost
    framework = "haiku"
    requires = ("jax", "haiku")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "haiku.BatchNorm",
            ALL_DTYPES,
            HK_BN_CONVENTIONS,
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "sync_batch_norm": NormDeclaration(
            "sync_batch_norm",
            "haiku.BatchNorm(cross_replica_axis=...) under jax.pmap",
            ALL_DTYPES,
            HK_BN_CONVENTIONS
            + _sync(
                SRC_HK_BN_STATS,
                "lax.pmean of the replicas' mean and mean of squares; no mask: equal batches only",
            ),
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm", "haiku.LayerNorm", ALL_DTYPES, HK_LN_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
        "instance_norm": NormDeclaration(
            "instance_norm", "haiku.InstanceNorm", ALL_DTYPES, HK_IN_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
        "group_norm": NormDeclaration(
            "group_norm", "haiku.GroupNorm", ALL_DTYPES, HK_GN_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
        "rms_norm": NormDeclaration(
            "rms_norm", "haiku.RMSNorm", ALL_DTYPES, HK_RMS_CONVENTIONS, INPUT_DTYPE, gradients=True
        ),
    }

    def no_argument_calls(self):
        return HAIKU_DEFAULT_CALLS

    repro_import, repro_classes, repro_helper = (
        "import haiku as hk",
        ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "RMSNorm"),
        "_haiku_run",
    )

    def _repro_namespace(self):
        return _haiku()

    sync_axis_keyword = "cross_replica_axis"

    def _sync_repro_body(self, constructor, extra, params):
        training = params["training"]
        call_args = (training, not training and params.get("state") is None)
        (ema,) = [name for name in extra if name.endswith("mean_ema")]
        return [
            f"f = hk.transform_with_state(lambda x, *args: hk.{constructor}(x, *args))",
            f"extra = {_tree_literal(extra)}",
            f"module_name, shape = {ema.split('/')[0]!r}, {tuple(np.shape(extra[ema]['average']))!r}",
            "def fn(xr, aff, extra, mask):  # haiku has no mask: every replica holds an equal batch",
            "    loaded = {module_name: {k: v.reshape(shape) for k, v in aff.items()}}",
            f"    return f.apply(loaded if aff else {{}}, extra, None, xr, *{call_args!r})",
        ]

    def _repro_body(self, constructor, helper, extra):
        key, make, x, affine, cotangent, init_args, call_args, load_state = (*helper.args, (), (), None)[:8]
        init_args, call_args = (
            helper.kwargs.get("init_args", init_args),
            helper.kwargs.get("call_args", call_args),
        )
        return [
            f"f = hk.transform_with_state(lambda x, *args: hk.{constructor}(x, *args))",
            f"init_params, extra = f.init(None, x, *{_repro.plain(tuple(init_args))})",
            f"extra = {_tree_literal(extra)}",
            "(module_name,) = init_params.keys() if init_params else ('',)",
            "def forward(x, params, extra):",
            "    loaded = {module_name: {k: params[k].reshape(init_params[module_name][k].shape) "
            "for k in ('scale', 'offset') if k in params}}",
            f"    return f.apply(loaded if params else {{}}, extra, None, x, "
            f"*{_repro.plain(tuple(call_args))})",
        ]

    def _batch_norm_parts(self, x, params, dtype, cross_replica_axis=None):
        """(make, load_state, call_args, affine, state, training, key) of an hk.BatchNorm call.

        hk.BatchNorm's EMAs are zero-debiased (BN.D9): with decay_rate d the update at haiku step t
        weights the new batch by w_t = (1 - d) / (1 - d^t). The canonical update has one constant
        momentum w; with the direct mapping d = 1 - w, w_t = w exactly only when w = 1 (d = 0; at
        t = 1 every d gives w_1 = 1). Any other momentum in a training step with running statistics
        is unsupported: choosing d per call to hit w would model a user who changes decay_rate every
        step, which hides the divergence instead of reporting it.
        """
        hk = _haiku()
        jax = _jax()
        data_format = _haiku_format("haiku BatchNorm", x, params, "BN.P1")
        state, training = _running("haiku BatchNorm", params)
        decay = 0.0  # unused unless running statistics are updated
        if training and state is not None:
            momentum = params["momentum"]
            decay = 1.0 - momentum
            step = state.num_batches_tracked + 1
            weight = (1.0 - decay) / (1.0 - decay**step) if decay < 1.0 else math.nan
            require(
                weight == momentum,
                f"haiku BatchNorm zero-debiases its running averages (BN.D9): with decay_rate {decay:g} its "
                f"step {step} weights the new batch by (1 - d)/(1 - d^t) = {weight:.6g}, not the constant "
                f"momentum {momentum:g}; only momentum=1 (decay_rate=0) is expressible",
            )
        affine = _affine(params, dtype)
        channel = channel_axis_of(x, params)
        stat_shape = tuple(x.shape[i] if i == channel else 1 for i in range(x.ndim))

        def load_state(hk_state):
            if state is None:
                return hk_state
            k = state.num_batches_tracked
            loaded = dict(hk_state)
            for ema, value in (("mean_ema", state.mean), ("var_ema", state.var)):
                (key,) = [name for name in hk_state if name.endswith(ema)]
                average = np.asarray(value, dtype=np.float64).reshape(stat_shape)
                counter = hk_state[key]["counter"]
                # haiku's invariant: average = hidden / (1 - d^counter); hidden = 0 before any update.
                # (Built on the host: device arithmetic would compile for every new shape.)
                hidden = average * (1.0 - decay**k) if k else np.zeros_like(average)
                loaded[key] = {
                    "counter": jax.device_put(np.asarray(k, counter.dtype)),
                    "hidden": _array(hidden, dtype),
                    "average": _array(average, dtype),
                }
            return loaded

        def make():
            return hk.BatchNorm(
                create_scale="scale" in affine,
                create_offset="offset" in affine,
                decay_rate=decay,
                eps=params["eps"],
                data_format=data_format,
                cross_replica_axis=cross_replica_axis,
            )

        # training: is_training; eval with state: the EMAs; eval without state: the batch's own
        # statistics, not updating anything (test_local_stats, BN.S4).
        call_args = (training, not training and state is None)
        key = ("BatchNorm", tuple(affine), decay, params["eps"], data_format)
        return make, load_state, call_args, affine, state, training, key

    @staticmethod
    def _ema_state(new, state) -> RunningStats | None:
        if state is None:
            return None
        mean_key, var_key = (
            [name for name in new if name.endswith(ema)][0] for ema in ("mean_ema", "var_ema")
        )
        return RunningStats(
            _numpy(new[mean_key]["average"]).reshape(-1),
            _numpy(new[var_key]["average"]).reshape(-1),
            int(new[mean_key]["counter"]),
        )

    def _run_batch_norm(self, x, params, dtype, cotangent):
        make, load_state, call_args, affine, state, _, key = self._batch_norm_parts(x, params, dtype)
        y, new, grads = _haiku_run(
            key, make, _array(x, dtype), affine, cotangent, (True, False), call_args, load_state
        )
        return Outcome(_numpy(y), self._ema_state(new, state), grads)

    def _run_sync_batch_norm(self, x, params, dtype, cotangent):
        """BatchNorm(cross_replica_axis="r") under pmap; replicas hold equal shards (no mask: SBN.D1)."""
        if not _replicas.here():
            return _replicas.run_in_child(self, _replicas.jax_env(), x, params, dtype, cotangent)
        require(
            params["weighting"] == "equal",
            "haiku averages the replicas' statistics: weighting='equal' only (SBN.D1)",
        )
        sizes = tuple(params["replica_sizes"])
        require(
            len(set(sizes)) == 1, "haiku BatchNorm has no mask: every replica holds an equal batch under pmap"
        )
        jax, hk = _jax(), _haiku()
        make, load_state, call_args, affine, state, _, _ = self._batch_norm_parts(x, params, dtype)
        synced, _, _, _, _, _, _ = self._batch_norm_parts(x, params, dtype, cross_replica_axis="r")
        shard = np.zeros((sizes[0],) + x.shape[1:], dtype=np.float32)
        # shapes from the unsynchronized layer (the same variables): init would need the replica axis
        local = hk.transform_with_state(lambda xj, *args: make()(xj, *args))
        abstract_params, abstract_state = jax.eval_shape(lambda xj: local.init(None, xj, True, False), shard)
        hk_state = load_state(
            jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), abstract_state)
        )
        (module_name,) = abstract_params.keys() if abstract_params else ("",)
        f = hk.transform_with_state(lambda xj, *args: synced()(xj, *args))

        def fn(xr, aff, hk_state, mask):
            loaded = {module_name: {k: aff[k].reshape(abstract_params[module_name][k].shape) for k in aff}}
            return f.apply(loaded if aff else {}, hk_state, None, xr, *call_args)

        y, new, grads = _sync_run(fn, x, sizes, dtype, affine, hk_state, cotangent, masked=False)
        return Outcome(y, self._ema_state(new, state), grads)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        hk = _haiku()
        affine = _affine(params, dtype)
        axes = _axes(x, params)

        def make():
            return hk.LayerNorm(
                axis=axes,
                create_scale="scale" in affine,
                create_offset="offset" in affine,
                eps=params["eps"],
                param_axis=axes,
            )

        key = ("LayerNorm", axes, tuple(affine), params["eps"])
        y, _, grads = _haiku_run(key, make, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_instance_norm(self, x, params, dtype, cotangent):
        hk = _haiku()
        _no_state("haiku InstanceNorm", params)
        data_format = _haiku_format("haiku InstanceNorm", x, params, "IN.P1")
        affine = _affine(params, dtype)

        def make():
            return hk.InstanceNorm(
                create_scale="scale" in affine,
                create_offset="offset" in affine,
                eps=params["eps"],
                data_format=data_format,
            )

        key = ("InstanceNorm", tuple(affine), params["eps"], data_format)
        y, _, grads = _haiku_run(key, make, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_group_norm(self, x, params, dtype, cotangent):
        hk = _haiku()
        data_format = _haiku_format("haiku GroupNorm", x, params, "GN.P2")
        require(
            params["assignment"] == "contiguous",
            "haiku GroupNorm groups contiguous channels (GN.D1)",
        )
        affine = _affine(params, dtype)

        def make():
            return hk.GroupNorm(
                params["groups"],
                create_scale="scale" in affine,
                create_offset="offset" in affine,
                eps=params["eps"],
                data_format=data_format,
            )

        key = ("GroupNorm", params["groups"], tuple(affine), params["eps"], data_format)
        y, _, grads = _haiku_run(key, make, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_rms_norm(self, x, params, dtype, cotangent):
        hk = _haiku()
        require(params.get("offset") is None, "haiku RMSNorm has no offset (create_scale only; RMS.P2)")
        eps = _rms_eps("haiku RMSNorm", params)
        affine = _affine(params, dtype)
        axes = _axes(x, params)

        def make():
            return hk.RMSNorm(axis=axes, eps=eps, create_scale="scale" in affine, param_axis=axes)

        key = ("RMSNorm", axes, tuple(affine), eps)
        y, _, grads = _haiku_run(key, make, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)


# ------------------------------------------------------------------------------------------------
# equinox


def _eqx():
    _jax()
    import equinox as eqx

    return eqx


def _with_affine(model, aff):
    """`model` with its weight / bias replaced by the canonical scale / offset (absent ones keep 1 / 0)."""
    eqx = _eqx()
    for key, attr in (("scale", "weight"), ("offset", "bias")):
        if key in aff:
            model = eqx.tree_at(lambda m, attr=attr: getattr(m, attr), model, aff[key])
    return model


def _per_sample(model, xj, lead: int):
    """Apply a per-sample equinox layer over the `lead` leading axes of xj (flattened, then vmapped)."""
    if lead == 0:
        return model(xj)
    rows = xj.reshape((-1,) + xj.shape[lead:])
    return _jax().vmap(model)(rows).reshape(xj.shape)


def _equinox_vjp(model, lead: int, x, affine, cotangent):
    """A per-sample layer over the `lead` leading axes, compiled per (static structure, lead)."""
    eqx = _eqx()
    arrays, static = eqx.partition(model, eqx.is_array)

    def fn(xj, aff, arrays):
        return _per_sample(_with_affine(eqx.combine(arrays, static), aff), xj, lead), None

    return _compiled_vjp(("equinox", static, lead), fn, x, affine, arrays, cotangent)


def _equinox_batch_vjp(model, eqx_state, inference: bool, x, affine, cotangent):
    """BatchNorm over the batch axis named "batch" of a vmap; aux = the running (mean, var) after."""
    eqx, jax = _eqx(), _jax()
    arrays, static = eqx.partition(model, eqx.is_array)

    def fn(xj, aff, extra):
        m = _with_affine(eqx.combine(extra[0], static), aff)
        y, new = jax.vmap(
            lambda xi, s: m(xi, s, inference=inference),
            axis_name="batch",
            in_axes=(0, None),
            out_axes=(0, None),
        )(xj, extra[1])
        return y, new.get(model.ema_state_index)

    return _compiled_vjp(("equinox", static, inference), fn, x, affine, (arrays, eqx_state), cotangent)


def _equinox_default(build, lead):
    """A no-argument call: the per-sample layer `build(eqx, x, hints)` (its required shape / channels
    from x) vmapped over the `lead(x)` leading axes."""

    def call(x, hints, dtype):
        return Outcome(_numpy(_per_sample(build(_eqx(), x, hints), _array(x, dtype), lead(x)))), {}

    return call


def _equinox_batch_default(x, hints, dtype):
    """BatchNorm(channels, axis_name) with its own state, in its default mode (training) under the
    named vmap: the first step replaces the running state by the batch's statistics."""
    eqx, jax = _eqx(), _jax()
    model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(x.shape[1], axis_name="batch")
    y, new = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(
        _array(x, dtype), state
    )
    mean, var = new.get(model.ema_state_index)
    return (
        Outcome(_numpy(y), RunningStats(_numpy(mean), _numpy(var), 1)),
        {"state": RunningStats.initial(x.shape[1]), "training": True, "momentum": 1.0},
    )


EQUINOX_DEFAULT_CALLS = {
    "batch_norm": _equinox_batch_default,
    "layer_norm": _equinox_default(lambda eqx, x, h: eqx.nn.LayerNorm(x.shape[-1:]), lambda x: x.ndim - 1),
    "group_norm": _equinox_default(lambda eqx, x, h: eqx.nn.GroupNorm(h["groups"], x.shape[1]), lambda x: 1),
    "rms_norm": _equinox_default(lambda eqx, x, h: eqx.nn.RMSNorm(x.shape[-1:]), lambda x: x.ndim - 1),
}


class Equinox(JaxBase):
    """equinox layers, which take one unbatched sample: batches go through `jax.vmap`."""

    name = "equinox"
    cost = 13.1  # see Adapter.cost
    framework = "equinox"
    requires = ("jax", "equinox")
    declarations = {
        "batch_norm": NormDeclaration(
            "batch_norm",
            "equinox.nn.BatchNorm",
            ALL_DTYPES,
            EQX_BN_CONVENTIONS,
            INPUT_DTYPE,
            gradients=True,
            stateful=True,
        ),
        "layer_norm": NormDeclaration(
            "layer_norm",
            "equinox.nn.LayerNorm",
            ALL_DTYPES,
            EQX_LN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "group_norm": NormDeclaration(
            "group_norm",
            "equinox.nn.GroupNorm",
            ALL_DTYPES,
            EQX_GN_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
        "rms_norm": NormDeclaration(
            "rms_norm",
            "equinox.nn.RMSNorm",
            ALL_DTYPES,
            EQX_RMS_CONVENTIONS,
            AT_LEAST_FLOAT32,
            gradients=True,
        ),
    }

    def no_argument_calls(self):
        return EQUINOX_DEFAULT_CALLS

    repro_import, repro_classes = "import equinox as eqx", ("BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm")

    def _repro_namespace(self):
        return _eqx().nn

    def _repro_helper(self, norm):
        return "_equinox_batch_vjp" if norm == "batch_norm" else "_equinox_vjp"

    def _repro_body(self, constructor, helper, extra):
        affine = [
            "    for key, attr in (('scale', 'weight'), ('offset', 'bias')):",
            "        if key in params:",
            "            m = eqx.tree_at(lambda m, attr=attr: getattr(m, attr), m, params[key])",
        ]
        if helper.name == "_equinox_vjp":
            lead = helper.args[1]
            return [
                f"model = eqx.nn.{constructor}",
                "extra = None",
                "def forward(x, params, extra):",
                "    m = model",
                *affine,
                f"    rows = x.reshape((-1,) + x.shape[{lead}:])" if lead else "    rows = x",
                "    return " + ("jax.vmap(m)(rows).reshape(x.shape)" if lead else "m(rows)") + ", None",
            ]
        model, eqx_state, inference = helper.args[:3]
        mean, var = eqx_state.get(model.ema_state_index)
        first = bool(eqx_state.get(model.ema_first_time_index))
        return [
            "model, extra = eqx.nn.make_with_state(eqx.nn.BatchNorm)("
            f"{constructor.removeprefix('BatchNorm(')}",
            f"extra = extra.set(model.ema_state_index, (array({_repro.values(mean)}, {str(mean.dtype)!r}), "
            f"array({_repro.values(var)}, {str(var.dtype)!r})))",
            f"extra = extra.set(model.ema_first_time_index, jnp.array({first!r}))",
            "def forward(x, params, extra):",
            "    m = model",
            *affine,
            f"    y, new = jax.vmap(lambda xi, s: m(xi, s, inference={inference!r}), axis_name='batch', "
            "in_axes=(0, None), out_axes=(0, None))(x, extra)",
            "    return y, new.get(model.ema_state_index)",
        ]

    def _run_batch_norm(self, x, params, dtype, cotangent):
        """mode="ema" (the default): a canonical state maps to the running buffers, and
        num_batches_tracked = 0 to equinox's `first_time` flag. A first training step normalizes by
        the batch statistics and *replaces* the running state by them (canonical momentum 1); later
        steps normalize by (1 - m)·batch + m·running, the updated running averages (BN.D10), which
        is reported as it comes out. Without a canonical state (BN.S4) every call is a first step on
        a fresh state, which normalizes by the batch statistics; its state is dropped.
        """
        eqx = _eqx()
        jnp = _jnp()
        require(
            channel_axis_of(x, params) == 1,
            "equinox BatchNorm normalizes axis 0 of each vmapped sample: channel_axis=1 only (BN.P1)",
        )
        state, training = _running("equinox BatchNorm", params)
        affine = _affine(params, dtype)
        momentum = params["momentum"]
        model, eqx_state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
            x.shape[1],
            axis_name="batch",
            eps=params["eps"],
            channelwise_affine=bool(affine),
            momentum=_decay(momentum),
            mode="ema",
            dtype=dtype,
        )
        if state is not None:
            eqx_state = eqx_state.set(
                model.ema_state_index, (_array(state.mean, dtype), _array(state.var, dtype))
            )
            eqx_state = eqx_state.set(model.ema_first_time_index, jnp.array(state.num_batches_tracked == 0))
        inference = not training and state is not None
        y, new, grads = _equinox_batch_vjp(model, eqx_state, inference, _array(x, dtype), affine, cotangent)
        new_state = None
        if state is not None:
            mean, var = new
            new_state = RunningStats(_numpy(mean), _numpy(var), state.num_batches_tracked + int(training))
        return Outcome(_numpy(y), new_state, grads)

    def _trailing(self, cls, api, x, params, dtype, cotangent, **kwargs):
        """LayerNorm / RMSNorm: shape = the trailing normalized axes, vmapped over the leading ones."""
        count = trailing(params["axes"], x.ndim)
        require(
            count is not None, f"{api} normalizes each whole (vmapped) sample: trailing axes only (LN.D3)"
        )
        affine = _affine(params, dtype)
        lead = x.ndim - count
        model = cls(
            x.shape[lead:], use_weight="scale" in affine, use_bias="offset" in affine, dtype=dtype, **kwargs
        )
        y, _, grads = _equinox_vjp(model, lead, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)

    def _run_layer_norm(self, x, params, dtype, cotangent):
        return self._trailing(
            _eqx().nn.LayerNorm, "equinox LayerNorm", x, params, dtype, cotangent, eps=params["eps"]
        )

    def _run_rms_norm(self, x, params, dtype, cotangent):
        eps = _rms_eps("equinox RMSNorm", params)
        return self._trailing(_eqx().nn.RMSNorm, "equinox RMSNorm", x, params, dtype, cotangent, eps=eps)

    def _run_group_norm(self, x, params, dtype, cotangent):
        eqx = _eqx()
        require(
            channel_axis_of(x, params) == 1,
            "equinox GroupNorm takes channels first per sample: channel_axis=1 only (GN.P2)",
        )
        require(
            params["assignment"] == "contiguous",
            "equinox GroupNorm groups contiguous channels (GN.D1)",
        )
        affine = _affine(params, dtype)
        # channelwise_affine creates both weight and bias; an absent one keeps its 1 or 0, exactly.
        model = eqx.nn.GroupNorm(
            params["groups"],
            x.shape[1],
            eps=params["eps"],
            channelwise_affine=bool(affine),
            dtype=dtype,
        )
        y, _, grads = _equinox_vjp(model, 1, _array(x, dtype), affine, cotangent)
        return Outcome(_numpy(y), grads=grads)


__all__ = ["Equinox", "FlaxLinen", "FlaxNnx", "Haiku"]
