"""JAX family declarations: what flax.linen, flax.nnx, dm-haiku and equinox do, fact by fact, each with
the source line it was read from (flax v0.12.7, dm-haiku main @ f4d858a, equinox main @ 9336d82 =
v0.13.8 for these files). Data only: nothing here imports JAX."""

from __future__ import annotations

from .. import _replicas
from ..base import Convention, Policy

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
SRC_EQX_BN_HIDDEN = EQX + "_batch_norm.py#L157-L165"
SRC_EQX_BN_DEBIAS = EQX + "_batch_norm.py#L241-L263"

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


def sync_conventions(source: str, how: str) -> tuple[Convention, ...]:
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
# mode="batch": what differs from mode="ema" (channel axis, eps, variance as there)
EQX_BN_BATCH_CONVENTIONS = (
    *(
        c
        for c in EQX_BN_CONVENTIONS
        if c.key in {"channel_axis", "eps", "momentum", "running_var", "variance"}
    ),
    Convention(
        "mode",
        "mode",
        "batch",
        SRC_EQX_BN_DEBIAS,
        note="training normalizes by the batch statistics; inference by the zero-debiased averages",
    ),
    Convention(
        "momentum_schedule",
        "momentum (0.99); hidden EMA, inference divides by 1 - momentum^counter (1 at counter 0)",
        "w_t = (1 - m) / (1 - m^t)",
        SRC_EQX_BN_DEBIAS,
        clause="BN.D22",
        note="a constant canonical momentum w is expressible only as w = 1 (momentum = 0); the first "
        "step also divides the initial hidden variance 1 by 1 - m: eval variance 99 + v at m = 0.99",
    ),
    Convention(
        "initial_state",
        "— (hidden zeros and ones, counter 0)",
        "mean 0, variance 1, counter 0",
        SRC_EQX_BN_HIDDEN,
        note="read at counter 0 as they are (BN.P7's initial state)",
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
# The mixed policy (MP.P1) as each library's users turn it on, read from the releases installed (flax
# v0.12.7 = 0.12.8 for these files, dm-haiku v0.0.16 = 0.0.17, jmp v0.0.4, equinox v0.13.8); spec
# mixed_precision.md MP.D30-D59 for what departs from the reference.

HALVES = ("float16", "bfloat16")
HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32"}
HALF_IN_HALF = {"float16": "float16", "bfloat16": "bfloat16"}
HALF_OUT_FLOAT32 = {"float16": "float32", "bfloat16": "float32"}

LINEN_MIXED = "https://github.com/google/flax/blob/v0.12.7/flax/linen/normalization.py"
NNX_MIXED = "https://github.com/google/flax/blob/v0.12.7/flax/nnx/nn/normalization.py"
HAIKU_MIXED = "https://github.com/google-deepmind/dm-haiku/blob/v0.0.16/haiku/_src/"
EQX_MIXED = "https://github.com/patrick-kidger/equinox/blob/v0.13.8/equinox/nn/"
SRC_LINEN_DTYPES = LINEN_MIXED + "#L286-L287"  # dtype: the result's; param_dtype: the parameters'
SRC_NNX_DTYPES = NNX_MIXED + "#L260-L261"
SRC_HK_SET_POLICY = HAIKU_MIXED + "mixed_precision.py#L145-L183"
SRC_EQX_UPCAST = EQX_MIXED + "_normalisation.py#L144-L161"  # result_type(x, float32), out.astype(x.dtype)

LINEN_POLICY = Policy(
    mechanism="flax.linen.<Norm>(..., dtype=jnp.bfloat16, param_dtype=jnp.float32) on bfloat16 activations",
    source=SRC_LINEN_DTYPES,
)
NNX_POLICY = Policy(
    mechanism="flax.nnx.<Norm>(..., dtype=jnp.bfloat16, param_dtype=jnp.float32) on bfloat16 activations",
    source=SRC_NNX_DTYPES,
)
HAIKU_POLICY = Policy(
    mechanism='hk.mixed_precision.set_policy(hk.<Norm>, jmp.get_policy("params=float32,compute=bfloat16,'
    'output=bfloat16"))',
    source=SRC_HK_SET_POLICY,
)
EQUINOX_POLICY = Policy(
    mechanism="equinox.nn.<Norm>(..., dtype=jnp.float32) on bfloat16 activations",
    source=SRC_EQX_UPCAST,
)
