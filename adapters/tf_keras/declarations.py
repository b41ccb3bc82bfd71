"""Keras 2 (`tf_keras`) declarations: what its normalization layers do, fact by fact, with the source line
each was read from (tf-keras v2.21.0, line numbers checked against the installed wheel). Data only:
nothing here imports TensorFlow."""

from __future__ import annotations

from dataclasses import replace

from ..base import Convention, NormDeclaration, Policy, under_policy
from ..tensorflow.adapters import SRC_FUSED_KERNEL, SRC_L2_FORM, SRC_MOMENTS

K = "https://github.com/keras-team/tf-keras/blob/v2.21.0/tf_keras/src"
SRC_BN = f"{K}/layers/normalization/batch_normalization.py"
SRC_BN_DEFAULTS = f"{SRC_BN}#L1458-L1476"
SRC_BN_FUSED_INIT = f"{SRC_BN}#L230-L242"  # fused=None stays None only where the fused kernel may run
SRC_BN_FUSED_CHECK = f"{SRC_BN}#L257-L301"  # no renorm, one axis in (1, 3, 4, -1, ...), half or float32
SRC_BN_FUSED_BUILD = f"{SRC_BN}#L352-L387"  # fused = rank in (4, 5), axis 1 or last
SRC_BN_FUSED_CALL = f"{SRC_BN}#L932-L976"  # exponential_avg_factor = 1 - momentum, FusedBatchNormV3
SRC_BN_BESSEL = f"{SRC_BN}#L942-L961"  # _bessels_correction_test_only (L243): the kernel's variance kept
SRC_BN_PLAIN = f"{SRC_BN}#L606-L612"  # half inputs cast to float32
SRC_BN_PLAIN_FORM = f"{SRC_BN}#L782-L797"  # tf.nn.batch_normalization
SRC_BN_MOMENTS = f"{SRC_BN}#L1132-L1136"  # tf.nn.moments
SRC_BN_UPDATE = f"{SRC_BN}#L865-L886"  # variable -= (variable - value) * (1 - momentum)
SRC_BN_TRAINING = f"{SRC_BN}#L1310-L1320"
SRC_BN_PARAM_DTYPE = f"{SRC_BN}#L318-L324"
SRC_LN = f"{K}/layers/normalization/layer_normalization.py"
SRC_LN_DEFAULTS = f"{SRC_LN}#L157-L169"
SRC_LN_FUSED_CHECK = f"{SRC_LN}#L198-L217"
SRC_LN_PLAIN = f"{SRC_LN}#L280-L305"
SRC_LN_FUSED = f"{SRC_LN}#L306-L343"
SRC_GN = f"{K}/layers/normalization/group_normalization.py"
SRC_GN_DEFAULTS = f"{SRC_GN}#L86-L100"
SRC_GN_GROUPS = f"{SRC_GN}#L190-L198"
SRC_GN_NORMALIZE = f"{SRC_GN}#L200-L230"
SRC_UNIT = f"{K}/layers/normalization/unit_normalization.py#L48-L68"
SRC_NORMALIZATION = f"{K}/layers/preprocessing/normalization.py"
SRC_NORMALIZATION_ARGS = f"{SRC_NORMALIZATION}#L122-L123"
SRC_NORMALIZATION_CALL = f"{SRC_NORMALIZATION}#L349-L361"
SRC_EPSILON = f"{K}/backend_config.py#L26"

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
# BatchNormalization computes half inputs in float32 on both kernels (its variables are float32)
UPCAST = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
# Layer and Group normalization compute in the layer's dtype: tf.nn.(weighted_)moments sum float16 in
# float32 but return float16 statistics, bfloat16 is not upcast at all (BN.D14)
IN_DTYPE = {d: d for d in ALL_DTYPES}

BN = (
    Convention("channel_axis", "axis", -1, SRC_BN_DEFAULTS),
    Convention("eps", "epsilon", 1e-3, SRC_BN_DEFAULTS, clause="BN.D3"),
    Convention(
        "momentum",
        "momentum",
        0.01,
        SRC_BN_UPDATE,
        clause="BN.D2",
        note="canonical = 1 - keras momentum (0.99); the fused kernel gets exponential_avg_factor = "
        f"1 - momentum ({SRC_BN_FUSED_CALL})",
    ),
    Convention(
        "running_var",
        "fused",
        "unbiased",
        SRC_BN_FUSED_BUILD,
        clause="BN.D23",
        note="fused=None (the default) runs FusedBatchNormV3, whose Bessel-corrected variance is kept "
        f"({SRC_BN_BESSEL}), for rank 4 or 5 with axis 1 or last in float16/bfloat16/float32 "
        f"({SRC_BN_FUSED_CHECK}); every other call takes tf.nn.moments: biased. The adapter passes "
        "fused=True for 'unbiased' (rank 4/5, axis 1 or last, not float64 only), fused=False for 'biased'",
    ),
    Convention(
        "kernel",
        "fused",
        "FusedBatchNormV3 for 4-D/5-D, axis 1 or last, not float64; else tf.nn.moments + "
        "tf.nn.batch_normalization",
        SRC_BN_FUSED_INIT,
        clause="BN.D23",
        note="Keras 3 has no fused path: always ops.moments, biased",
    ),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN_PLAIN_FORM),
    Convention(
        "training",
        "training",
        False,
        SRC_BN_TRAINING,
        note="a call without training= reads the learning phase (0: inference); a non-trainable layer "
        "always infers",
    ),
    Convention(
        "algebraic_form",
        "— (tf.nn.batch_normalization)",
        "x*inv + (offset - mean*inv)",
        SRC_BN_PLAIN_FORM,
        clause="BN.D5",
        note=f"the non-fused path; the fused kernel normalizes in its own kernel ({SRC_FUSED_KERNEL})",
    ),
    Convention("variance", "— (tf.nn.moments / the fused kernel)", "biased, two-pass", SRC_BN_MOMENTS),
    Convention(
        "statistics_dtype",
        "— (_param_dtype)",
        "float32 for half inputs, float64 for float64",
        SRC_BN_PARAM_DTYPE,
        note=f"half inputs are cast to float32 ({SRC_BN_PLAIN}); moving statistics of a float64 layer "
        "stay float64 (Keras 3 on jax/torch/numpy keeps them float32, BN.D15)",
    ),
)

LN = (
    Convention("axes", "axis", (-1,), SRC_LN_DEFAULTS, note="any int or list of axes"),
    Convention("eps", "epsilon", 1e-3, SRC_LN_DEFAULTS, clause="LN.D1"),
    Convention(
        "kernel",
        "— (_fused_can_be_used)",
        "FusedBatchNormV3 on x reshaped to (1, rows, row length, 1), then y*gamma + beta, for trailing "
        "contiguous axes, float32 variables and epsilon >= 1.001e-5; else tf.nn.moments + "
        "tf.nn.batch_normalization",
        SRC_LN_FUSED_CHECK,
        clause="LN.D12",
        note=f"fused path: {SRC_LN_FUSED}; the other: {SRC_LN_PLAIN}",
    ),
    Convention("variance", "— (tf.nn.moments / the fused kernel)", "biased, two-pass", SRC_MOMENTS),
    Convention(
        "statistics_dtype",
        "dtype",
        "the layer's dtype",
        SRC_LN_PLAIN,
        clause="LN.D12",
        note="a float16 or bfloat16 layer computes in float16 or bfloat16; only float32 variables "
        "(the mixed_float16 policy) upcast; Keras 3 always computes in float32",
    ),
)

GN = (
    Convention("groups", "groups", 32, SRC_GN_DEFAULTS, clause="GN.D2", note="-1 = one group per channel"),
    Convention("channel_axis", "axis", -1, SRC_GN_DEFAULTS),
    Convention("eps", "epsilon", 1e-3, SRC_GN_DEFAULTS, clause="GN.D2"),
    Convention(
        "assignment", "— (reshape to (groups, C // groups))", "contiguous", SRC_GN_GROUPS, clause="GN.D1"
    ),
    Convention(
        "variance",
        "— (tf.nn.weighted_moments, unit weights)",
        "biased, two-pass",
        SRC_GN_NORMALIZE,
    ),
    Convention(
        "statistics_dtype",
        "dtype",
        "the layer's dtype",
        SRC_GN_NORMALIZE,
        clause="GN.D11",
        note="no upcast at all, float32-variable policies included; Keras 3 computes in float32",
    ),
)

LP = (
    Convention("p", "— (l2 only)", 2.0, SRC_UNIT),
    Convention("axes", "axis", (-1,), SRC_UNIT),
    Convention("eps", "— (tf.linalg.l2_normalize's epsilon=1e-12)", 1e-12, SRC_UNIT),
    Convention(
        "eps_placement",
        "— (tf.linalg.l2_normalize)",
        "max_power_sum",
        SRC_L2_FORM,
        clause="LP.D8",
        note="rsqrt(max(sum x^2, eps)), in the layer's dtype; Keras 3 bounds the norm (max_norm)",
    ),
)

CN = (
    Convention("channel_axis", "axis", -1, SRC_NORMALIZATION_ARGS),
    Convention(
        "std_floor",
        "— (backend.epsilon())",
        1e-7,
        SRC_EPSILON,
        clause="CN.D2",
        note="tf_keras.backend.epsilon(); set_epsilon changes it",
    ),
    Convention("statistics", "mean, variance", "std = sqrt(variance)", SRC_NORMALIZATION_CALL),
)


def _declare(norm, api, conventions, accumulation, stateful=False):
    return NormDeclaration(
        norm=norm,
        api=api,
        dtypes=ALL_DTYPES,
        conventions=conventions,
        accumulation=accumulation,
        gradients=True,
        stateful=stateful,
    )


DECLARATIONS = {
    "batch_norm": _declare("batch_norm", "tf_keras.layers.BatchNormalization", BN, UPCAST, stateful=True),
    "layer_norm": _declare("layer_norm", "tf_keras.layers.LayerNormalization", LN, IN_DTYPE),
    "group_norm": _declare("group_norm", "tf_keras.layers.GroupNormalization", GN, IN_DTYPE),
    "lp_normalize": _declare("lp_normalize", "tf_keras.layers.UnitNormalization", LP, IN_DTYPE),
    "channel_normalize": _declare("channel_normalize", "tf_keras.layers.Normalization", CN, IN_DTYPE),
}


# -- the mixed policy (MP.P1) as tf_keras users turn it on ----------------------------------------------
# A layer whose dtype is tf_keras.mixed_precision.Policy("mixed_float16") ("mixed_bfloat16") computes in
# the half type with float32 variables; a variable made without experimental_autocast=False is an
# AutoCastVariable, read in the half type inside the layer's call (GroupNormalization's gamma and beta:
# it computes in the half type, as without the policy, GN.D11). BatchNormalization and
# LayerNormalization make theirs with experimental_autocast=False, and LayerNormalization's fused kernel
# casts them to the half type itself (MP.D20). Measured with tf_keras 2.21.0: every layer returns the
# half type, its variables are float32.
SRC_POLICY = f"{K}/mixed_precision/policy.py#L32-L59"
SRC_AUTOCAST_VARIABLE = f"{K}/engine/base_layer.py#L615-L622"
SRC_AUTOCAST_WRAP = f"{K}/engine/base_layer.py#L688-L699"
SRC_GN_WEIGHTS = f"{SRC_GN}#L144-L165"
MIXED = Policy(
    mechanism='tf_keras.layers.<Norm>(..., dtype=tf_keras.mixed_precision.Policy("mixed_float16")) '
    '(or "mixed_bfloat16")',
    source=SRC_POLICY,
)
MIXED_DTYPES = ("float16", "bfloat16")
_POLICY_NOTES = {
    "batch_norm": Convention(
        "policy_dtypes",
        "dtype (Policy)",
        "float32 statistics and affine on both kernels, output in the half type",
        SRC_BN_PARAM_DTYPE,
        note=f"the variables are float32 (experimental_autocast=False); the fused kernel computes half "
        f"inputs in float32 ({SRC_BN_FUSED_CALL}), the other path casts them to float32 ({SRC_BN_PLAIN})",
    ),
    "layer_norm": Convention(
        "policy_dtypes",
        "dtype (Policy)",
        "float32 statistics; fused kernel: x-hat, gamma and beta rounded to the half type, affine there",
        SRC_LN_FUSED,
        note=f"MP.D20: float32 variables make the fused kernel eligible ({SRC_LN_FUSED_CHECK}: trailing "
        "contiguous axes, epsilon >= 1.001e-5): FusedBatchNormV3 normalizes in float32 and returns the "
        "half type, then y*cast(gamma) + cast(beta) in the half type; otherwise the input is cast to float32 "
        f"({SRC_LN_PLAIN}) and everything stays float32 until the output",
    ),
    "group_norm": Convention(
        "policy_dtypes",
        "dtype (Policy)",
        "the half type throughout, gamma and beta read rounded to it",
        SRC_GN_WEIGHTS,
        clause="GN.D11",
        note=f"gamma and beta are AutoCastVariables ({SRC_AUTOCAST_VARIABLE}, {SRC_AUTOCAST_WRAP}), read "
        "in the half type; tf.nn.weighted_moments sums float16 in float32 but returns float16 statistics, "
        "bfloat16 is not upcast; their gradients are formed in the half type",
    ),
}
MIXED_DECLARATIONS = {
    norm: replace(d, conventions=(*d.conventions, _POLICY_NOTES[norm]))
    for norm, d in {
        # BatchNormalization and LayerNormalization: float32 statistics; GroupNormalization: the half type
        **under_policy(DECLARATIONS, ("batch_norm", "layer_norm"), MIXED_DTYPES, accumulation=UPCAST),
        **under_policy(DECLARATIONS, ("group_norm",), MIXED_DTYPES, accumulation=IN_DTYPE),
    }.items()
}
