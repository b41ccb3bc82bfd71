"""Keras 3 declarations: what each backend's normalization layers do, fact by fact, with the source
line each was read from (Keras v3.15.1). Data only: nothing here imports Keras."""

from __future__ import annotations

from dataclasses import replace

from .. import _replicas
from ..base import Convention, NormDeclaration, Policy, under_policy

K = "https://github.com/keras-team/keras/blob/v3.15.1"
SRC_BN = f"{K}/keras/src/layers/normalization/batch_normalization.py"
SRC_BN_DEFAULTS = f"{SRC_BN}#L160-L180"
SRC_BN_TRAINING = f"{SRC_BN}#L363"
SRC_BN_UPDATE = f"{SRC_BN}#L385-L391"
SRC_BN_MOMENTS = f"{SRC_BN}#L434-L440"
SRC_SYNC_MOMENTS = (
    "https://github.com/keras-team/keras/blob/v3.15.1/keras/src/backend/tensorflow/nn.py#L1492-L1544"
)
SRC_TF_LOGICAL_DEVICES = (
    "https://github.com/tensorflow/tensorflow/blob/a481b10260d/tensorflow/python/framework/config.py#L859"
)
SRC_OPS_BN = f"{K}/keras/src/ops/nn.py#L2428-L2478"
SRC_LN = f"{K}/keras/src/layers/normalization/layer_normalization.py"
SRC_LN_DEFAULTS = f"{SRC_LN}#L105-L151"
SRC_OPS_LN_FORM = f"{K}/keras/src/ops/nn.py#L3183-L3195"
SRC_OPS_LN_TORCH = f"{K}/keras/src/ops/nn.py#L3177-L3182"
SRC_GN = f"{K}/keras/src/layers/normalization/group_normalization.py"
SRC_GN_DEFAULTS = f"{SRC_GN}#L67-L101"
SRC_GN_GROUPS = f"{SRC_GN}#L166-L177"
SRC_RMS = f"{K}/keras/src/layers/normalization/rms_normalization.py#L45-L62"
SRC_OPS_RMS = f"{K}/keras/src/ops/nn.py#L3024-L3055"
SRC_UNIT = f"{K}/keras/src/layers/normalization/unit_normalization.py#L27-L44"
SRC_OPS_NORMALIZE = f"{K}/keras/src/ops/nn.py#L2679-L2733"
SRC_NORMALIZATION = f"{K}/keras/src/layers/preprocessing/normalization.py"
SRC_NORMALIZATION_ARGS = f"{SRC_NORMALIZATION}#L110-L151"
SRC_NORMALIZATION_CALL = f"{SRC_NORMALIZATION}#L410-L443"
SRC_EPSILON = f"{K}/keras/src/backend/config.py#L10"
# Keras' type promotion maps float64 to float32 on every backend but TensorFlow ("to be aligned with
# JAX's default behavior"), so `result_type(float64, "float32")` is float32 there. Line numbers read
# from the 3.15.1 wheel.
SRC_64_TO_32 = f"{K}/keras/src/backend/common/dtypes.py#L235-L242"
SRC_JAX_X64 = "https://github.com/jax-ml/jax#current-gotchas"
SRC_MOMENTS = {
    "tensorflow": f"{K}/keras/src/backend/tensorflow/nn.py#L1492-L1548",
    "jax": f"{K}/keras/src/backend/jax/nn.py#L1039-L1069",
    "torch": f"{K}/keras/src/backend/torch/nn.py#L959-L1001",
    "numpy": f"{K}/keras/src/backend/numpy/nn.py#L932-L964",
}
SRC_BATCH_NORMALIZATION = {
    "tensorflow": f"{K}/keras/src/backend/tensorflow/nn.py#L1551-L1571",
    "jax": f"{K}/keras/src/backend/jax/nn.py#L1072-L1090",
    "torch": f"{K}/keras/src/backend/torch/nn.py#L1004-L1031",
    "numpy": f"{K}/keras/src/backend/numpy/nn.py#L967-L985",
}
SRC_OPS_RMS_TORCH = f"{K}/keras/src/ops/nn.py#L3035"
SRC_CONTINUOUS = f"{K}/keras/src/utils/python_utils.py#L8-L17"

# backend -> (family: the extra that installs it, modules the adapter needs)
BACKENDS = {
    "tensorflow": ("tensorflow", ("keras", "tensorflow")),
    "jax": ("jax", ("keras", "jax")),
    "torch": ("torch", ("keras", "torch")),
    # Keras 3.15's NumPy backend imports jax:
    # https://github.com/keras-team/keras/blob/v3.15.1/keras/src/backend/numpy/math.py#L5-L6
    "numpy": ("jax", ("keras", "jax")),
}
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


def declarations_for(backend: str) -> dict[str, NormDeclaration]:
    """What keras[backend] offers. The layers accept all four dtypes on every backend; what differs is
    where float64 is computed (float32 except on TensorFlow), the variance formula, and autodiff."""
    tf = backend == "tensorflow"
    f64 = "float64" if tf else "float32"
    # BN, LN, GN and RMS compute in result_type(x.dtype, "float32"): half -> float32; float64 ->
    # float64 on TensorFlow, float32 elsewhere.
    upcast = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": f64}
    # UnitNormalization and Normalization compute in the input dtype; their float64 survives on
    # TensorFlow and JAX (x64) but meets a Python-float operand on torch/numpy and drops to float32.
    plain_f64 = "float64" if backend in ("tensorflow", "jax") else "float32"
    plain = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float64": plain_f64}
    gradients = backend != "numpy"
    one_pass = backend in ("torch", "numpy")

    x64: tuple[Convention, ...] = ()
    if backend == "jax":
        x64 = (
            Convention(
                "jax_enable_x64",
                "JAX_ENABLE_X64",
                False,
                SRC_JAX_X64,
                note="float64 runs are made under jax.enable_x64(True), as a float64 user must; without "
                "it every array is float32",
            ),
        )
    # float64 -> float32: BN, LN, GN, RMS through result_type(x, "float32"); Unit/Normalization through a
    # Python-float operand of minimum/maximum (torch, numpy; numpy even returns float32).
    common = x64 + (
        ()
        if tf
        else (
            Convention(
                "float64",
                "— (keras.backend.result_type)",
                "float32",
                SRC_64_TO_32,
                note="float64 inputs are accepted, computed in float32, cast back",
            ),
        )
    )
    plain_common = x64 + (
        ()
        if plain_f64 == "float64"
        else (
            Convention(
                "float64",
                "— (keras.backend.result_type)",
                "float32",
                SRC_64_TO_32,
                note="float64 meets a Python-float operand (1/epsilon, epsilon) and is computed in float32"
                + ("; the output is float32" if backend == "numpy" else ""),
            ),
        )
    )

    def trailing_only(source, kernel):
        """torch backend: contiguous axes go to the torch kernel, which normalizes the trailing ones."""
        if backend != "torch":
            return ()
        return (
            Convention(
                "contiguous_axes",
                "axis",
                "trailing only",
                source,
                note=f"contiguous axes (is_continuous_axis, {SRC_CONTINUOUS}) are passed to {kernel} "
                "as a normalized_shape, which names the TRAILING axes: non-trailing ones raise "
                "RuntimeError (axis=[1] of (2,3,4,6)) or, where the trailing sizes match, silently "
                "normalize the wrong axes (axis=[1] of (2,3,3)); non-contiguous axes are correct",
            ),
        )

    variance = Convention(
        "variance",
        "— (ops.moments)",
        "biased, one-pass" if one_pass else "biased, two-pass",
        SRC_MOMENTS[backend],
        clause="BN.D4" if one_pass else None,
        note="E[x^2] - E[x]^2, unclamped" if one_pass else "",
    )
    bn = (
        Convention("channel_axis", "axis", -1, SRC_BN_DEFAULTS),
        Convention("eps", "epsilon", 1e-3, SRC_BN_DEFAULTS, clause="BN.D3"),
        Convention(
            "momentum",
            "momentum",
            0.01,
            SRC_BN_UPDATE,
            clause="BN.D2",
            note="canonical = 1 - keras momentum (0.99); Keras weights the old value",
        ),
        Convention("running_var", "—", "biased", SRC_BN_MOMENTS, clause="BN.D1"),
        Convention("eps_placement", "—", "inside_sqrt", SRC_OPS_BN),
        Convention(
            "training",
            "training",
            False,
            SRC_BN_TRAINING,
            note="a call without training= is inference; training also needs layer.trainable",
        ),
        Convention(
            "algebraic_form",
            "— (ops.batch_normalization)",
            "(x - mean)*inv + offset" if backend == "torch" else "x*inv + (offset - mean*inv)",
            SRC_BATCH_NORMALIZATION[backend],
            clause=None if backend == "torch" else "BN.D5",
        ),
        variance,
    ) + common
    ln = (
        (
            Convention("axes", "axis", (-1,), SRC_LN_DEFAULTS, note="any int or list of axes"),
            Convention("eps", "epsilon", 1e-3, SRC_LN_DEFAULTS, clause="LN.D1"),
            Convention(
                "algebraic_form",
                "— (ops.layer_normalization)",
                "torch.nn.functional.layer_norm for contiguous axes"
                if backend == "torch"
                else "x*inv + (-mean*inv + beta)",
                SRC_OPS_LN_TORCH if backend == "torch" else SRC_OPS_LN_FORM,
            ),
            variance,
        )
        + common
        + trailing_only(SRC_OPS_LN_TORCH, "F.layer_norm")
    )
    gn = (
        Convention(
            "groups", "groups", 32, SRC_GN_DEFAULTS, clause="GN.D2", note="-1 = one group per channel"
        ),
        Convention("channel_axis", "axis", -1, SRC_GN_DEFAULTS),
        Convention("eps", "epsilon", 1e-3, SRC_GN_DEFAULTS, clause="GN.D2"),
        Convention(
            "assignment", "— (reshape to (groups, C // groups))", "contiguous", SRC_GN_GROUPS, clause="GN.D1"
        ),
        variance,
    ) + common
    rms = (
        (
            Convention("axes", "axis", (-1,), SRC_RMS),
            Convention(
                "eps",
                "epsilon",
                1e-6,
                SRC_RMS,
                clause="RMS.D2",
                note="the layer's default; keras.ops.rms_normalization defaults to backend.epsilon() = 1e-7",
            ),
            Convention("scale", "scale (always created, ones)", "always", SRC_RMS, note="no offset"),
            Convention(
                "scale_broadcast",
                "— (outputs * scale)",
                "trailing axes only",
                SRC_OPS_RMS,
                note="scale (shape x.shape[axes]) is multiplied without reshaping: for non-trailing axes it "
                "broadcasts against the trailing axes, raising or silently scaling the wrong axes",
            ),
        )
        + common
        + trailing_only(SRC_OPS_RMS_TORCH, "F.rms_norm")
    )
    lp = (
        Convention("p", "— (order=2 fixed)", 2.0, SRC_UNIT),
        Convention("axes", "axis", (-1,), SRC_UNIT),
        Convention("eps", "— (epsilon=1e-12 fixed)", 1e-12, SRC_UNIT),
        Convention(
            "eps_placement", "— (min(rsqrt(sum x^2), 1/eps))", "max_norm", SRC_OPS_NORMALIZE, clause="LP.D1"
        ),
    ) + plain_common
    cn = (
        Convention("channel_axis", "axis", -1, SRC_NORMALIZATION_ARGS),
        Convention(
            "std_floor",
            "— (backend.epsilon())",
            1e-7,
            SRC_EPSILON,
            clause="CN.D2",
            note="keras.config.epsilon(); set_epsilon changes it",
        ),
        Convention("statistics", "mean, variance", "std = sqrt(variance)", SRC_NORMALIZATION_CALL),
    ) + plain_common

    # NumPy's minimum/maximum with a Python-float operand return float32 for a float64 array: Unit- and
    # Normalization's float64 output is float32 there (MP.N2)
    plain_output = {"float64": "float32"} if backend == "numpy" else {}

    def declare(norm, api, conventions, accumulation, stateful=False, constants=(), output=None):
        return NormDeclaration(
            norm=norm,
            api=api,
            dtypes=ALL_DTYPES,
            conventions=conventions,
            accumulation=accumulation,
            gradients=gradients,
            stateful=stateful,
            constants=constants,
            output=output or {},
        )

    return {
        "batch_norm": declare("batch_norm", "keras.layers.BatchNormalization", bn, upcast, stateful=True),
        "layer_norm": declare("layer_norm", "keras.layers.LayerNormalization", ln, upcast),
        "group_norm": declare("group_norm", "keras.layers.GroupNormalization", gn, upcast),
        "rms_norm": declare("rms_norm", "keras.layers.RMSNormalization", rms, upcast),
        "lp_normalize": declare(
            "lp_normalize", "keras.layers.UnitNormalization", lp, plain, output=plain_output
        ),
        # mean and variance are constructor arguments: constants of the compiled program on jax
        "channel_normalize": declare(
            "channel_normalize",
            "keras.layers.Normalization",
            cn,
            plain,
            constants=("mean", "std") if backend == "jax" else (),
            output=plain_output,
        ),
        **(
            {
                "sync_batch_norm": declare(
                    "sync_batch_norm",
                    "keras.layers.BatchNormalization(synchronized=True) under tf.distribute.MirroredStrategy",
                    tuple(c for c in bn if c.key != "variance")
                    + (
                        Convention(
                            "weighting",
                            "— (fixed)",
                            "count",
                            SRC_SYNC_MOMENTS,
                            clause="SBN.D2",
                            note="all-reduced sums, sums of squares and counts",
                        ),
                        Convention(
                            "variance",
                            "— (_compute_moments_sync)",
                            "biased, one-pass, clipped at 0",
                            SRC_SYNC_MOMENTS,
                            clause="SBN.D2",
                            note="max(E[x^2] - mean^2, 0) (SBN.N2)",
                        ),
                        Convention(
                            "replicas",
                            "— (logical CPU devices)",
                            _replicas.TF_DEVICES,
                            SRC_TF_LOGICAL_DEVICES,
                            note=(
                                "tf.config.set_logical_device_configuration splits the CPU, "
                                "in a child process"
                            ),
                        ),
                    ),
                    upcast,
                    stateful=True,
                )
            }
            if tf
            else {}
        ),
    }


# -- the mixed policy (MP.P1) as Keras users turn it on -----------------------------------------------
# A layer built with dtype="mixed_float16" / "mixed_bfloat16" computes in the half type and holds its
# variables in float32 (DTypePolicy); its __call__ casts floating inputs to the half type unless the layer
# opts out (`self.autocast = False`: LayerNormalization, GroupNormalization) and enters an autocast scope
# in which a variable created with autocast=True - RMSNormalization's scale - is read rounded to the half
# type (MP.D10). Measured with Keras 3.15.1 on all four backends: every layer returns the half type, its
# variables are float32.
SRC_MIXED_POLICY = f"{K}/keras/src/dtype_policies/dtype_policy.py#L82-L85"
SRC_AUTOCAST_SCOPE = f"{K}/keras/src/layers/layer.py#L980-L998"
SRC_AUTOCAST_READ = f"{K}/keras/src/backend/common/variables.py#L245-L280"
SRC_STATELESS_CALL = f"{K}/keras/src/layers/layer.py#L1171-L1188"
SRC_BN_UPCAST = f"{SRC_BN}#L346-L405"
SRC_LN_OPT_OUT = f"{SRC_LN}#L151"
SRC_GN_UPCAST = f"{SRC_GN}#L179-L210"
SRC_RMS_SCALE = f"{K}/keras/src/layers/normalization/rms_normalization.py#L58-L60"
MIXED = Policy(
    mechanism='keras.layers.<Norm>(..., dtype="mixed_float16") or dtype="mixed_bfloat16" (a DTypePolicy)',
    source=SRC_MIXED_POLICY,
)
MIXED_DTYPES = ("float16", "bfloat16")
HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32"}
_POLICY_NOTES = {
    "batch_norm": Convention(
        "policy_dtypes",
        "dtype (DTypePolicy)",
        "input cast to the half type, then float32; gamma, beta, moving statistics float32",
        SRC_BN_UPCAST,
        note="__call__ casts the input to the compute dtype (a float32 input is rounded to the half type), "
        "call() casts it to result_type(half, float32) = float32 and the variables (autocast=False) stay "
        "float32; the output is cast to the half type",
    ),
    "layer_norm": Convention(
        "policy_dtypes",
        "dtype (DTypePolicy)",
        "float32 statistics and affine, output cast to the half type",
        SRC_LN_OPT_OUT,
        note="the layer opts out of autocasting (a float32 input stays float32); ops.layer_normalization "
        f"computes in float32 ({K}/keras/src/ops/nn.py#L3145), gamma and beta float32 (autocast=False)",
    ),
    "group_norm": Convention(
        "policy_dtypes",
        "dtype (DTypePolicy)",
        "float32 statistics and affine, output cast to the half type",
        SRC_GN_UPCAST,
        note="the layer opts out of autocasting (a float32 input stays float32), upcasts to float32 and "
        "casts back to the input dtype, then to the compute dtype",
    ),
    "rms_norm": Convention(
        "scale_dtype",
        "— (add_weight autocast=True)",
        "read rounded to the half type",
        SRC_RMS_SCALE,
        note=f"MP.D10: the float32 scale is read through the autocast scope ({SRC_AUTOCAST_READ}): "
        "rounded to the half type, then converted to float32 for the float32 product; its gradient "
        "comes back through the same cast, rounded to the half type",
    ),
    "lp_normalize": Convention(
        "policy_dtypes",
        "dtype (DTypePolicy)",
        "the half type throughout",
        SRC_UNIT,
        note="no variables and no upcast: the input is cast to the half type and ops.normalize sums its "
        "squares there (float16 overflows for norms past 256: NUM.D1)",
    ),
}


def mixed_declarations_for(backend: str) -> dict[str, NormDeclaration]:
    """keras[backend]@mixed: the plain layers with a variable or state (and UnitNormalization), built
    with dtype="mixed_<half>". BatchNormalization, LayerNormalization, GroupNormalization and
    RMSNormalization take their statistics in float32, UnitNormalization in the half type; every output
    is in the half type (the input's)."""
    plain = declarations_for(backend)
    upcast = ("batch_norm", "layer_norm", "group_norm", "rms_norm")
    declared = {
        **under_policy(plain, upcast, MIXED_DTYPES, accumulation=HALF_IN_FLOAT32),
        **under_policy(plain, ("lp_normalize",), MIXED_DTYPES, accumulation={d: d for d in MIXED_DTYPES}),
    }
    if "sync_batch_norm" in plain:
        declared |= under_policy(plain, ("sync_batch_norm",), MIXED_DTYPES, accumulation=HALF_IN_FLOAT32)
    notes = {**_POLICY_NOTES, "sync_batch_norm": _POLICY_NOTES["batch_norm"]}
    return {norm: replace(d, conventions=(*d.conventions, notes[norm])) for norm, d in declared.items()}
