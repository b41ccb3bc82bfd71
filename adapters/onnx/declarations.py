"""ONNX declarations: the operators' conventions (each fact with the source line it was read from, pinned
to onnx v1.22.0, or the onnxruntime / onnx.reference behaviour measured), the opset of each operator and
the dtype maps the two runtimes' declarations share. Its own module so that `adapters.py` holds the
adapters, and `known.py` reads the facts it needs (MVN_EPS) without the adapters. Data only: nothing here
imports onnx."""

from __future__ import annotations

from ..base import Convention, NormDeclaration, f32

ONNX_VERSION = "https://github.com/onnx/onnx/blob/v1.22.0"
SRC_OPS = f"{ONNX_VERSION}/docs/Operators.md"
SRC_BN = f"{SRC_OPS}#BatchNormalization"
SRC_IN = f"{SRC_OPS}#InstanceNormalization"
SRC_LN = f"{SRC_OPS}#LayerNormalization"
SRC_GN = f"{SRC_OPS}#GroupNormalization"
SRC_RMS = f"{SRC_OPS}#RMSNormalization"
SRC_LRN = f"{SRC_OPS}#LRN"
SRC_LP = f"{SRC_OPS}#LpNormalization"
SRC_BN_DEFS = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L1632-L1650"
SRC_LN_BODY = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2547-L2563"
SRC_GN_BODY = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2783-L2828"
SRC_LRN_DEFS = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2025-L2045"
SRC_LP_ZERO = "https://github.com/onnx/onnx/pull/7618"
SRC_PROTO = f"{ONNX_VERSION}/onnx/onnx.proto"  # AttributeProto: `float f = 2` (32-bit)
SRC_REF_LRN = f"{ONNX_VERSION}/onnx/reference/ops/op_lrn.py#L15-L28"
SRC_REF_LP = f"{ONNX_VERSION}/onnx/reference/ops/op_lp_normalization.py#L11-L19"
SRC_REF_LN = f"{ONNX_VERSION}/onnx/reference/ops/op_layer_normalization.py#L11-L73"
SRC_REF_RMS = f"{ONNX_VERSION}/onnx/reference/ops/op_rms_normalization.py#L11-L49"
SRC_ORT_LRN = (
    "https://github.com/microsoft/onnxruntime/blob/bffa98a41265a164694ed48010a6cefa0a7c8c4e/"
    "onnxruntime/core/providers/cpu/nn/lrn.h"
)
SRC_ORT_LRN_CC = (
    "https://github.com/microsoft/onnxruntime/blob/0c2d8019c9731fe2e21727c53a046ad56814abb6/"
    "onnxruntime/core/providers/cpu/nn/lrn.cc"
)
SRC_ORT_GN = "https://github.com/microsoft/onnxruntime/issues/24538"
SRC_MVN = f"{SRC_OPS}#MeanVarianceNormalization"
SRC_MVN_BODY = f"{ONNX_VERSION}/onnx/defs/nn/defs.cc#L2205-L2264"
SRC_ORT_MVN = (
    "https://github.com/microsoft/onnxruntime/blob/2481dbcbb18afab0095b03616053abd638f90604/"
    "onnxruntime/core/providers/cpu/tensor/mean_variance_normalization.cc"
)
SRC_ORT_LN = "https://github.com/microsoft/onnxruntime/pull/28743"

# The newest opset of each operator that onnxruntime 1.32 runs on CPU (every one of them is also the
# newest in onnx 1.23.2). GroupNormalization-21 has per-channel scale/bias (18 had per-group, GN.D3).
OPSET = {
    "BatchNormalization": 15,
    "InstanceNormalization": 22,
    "LayerNormalization": 17,
    "GroupNormalization": 21,
    "RMSNormalization": 23,
    "LRN": 13,
    "LpNormalization": 22,
    "MeanVarianceNormalization": 13,
}
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
SAME = {d: d for d in ALL_DTYPES}
HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
STASH_FLOAT32 = {d: "float32" for d in ALL_DTYPES}  # stash_type=1: stage one in float32, float64 inputs too


EPS_DEFAULT = f32(1e-5)  # 9.99999974738e-06: ONNX's epsilon=1e-5, a float32 attribute
ATTRIBUTE_PRECISION = Convention(
    "attribute_precision",
    "AttributeProto.f",
    "float32",
    SRC_PROTO,
    note="float attributes are 32-bit: float64 runs need float32-representable values",
)

BN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 1)", 1, SRC_BN),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_BN, note="1e-5 as a float32 attribute"),
    Convention(
        "momentum",
        "momentum",
        1.0 - f32(0.9),
        SRC_BN,
        clause="BN.D2",
        note="canonical = 1 - onnx momentum (0.9, a float32 attribute)",
    ),
    Convention("running_var", "— (ReduceVar, population)", "biased", SRC_BN_DEFS, clause="BN.D1"),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN),
    Convention(
        "training", "training_mode", False, SRC_BN, note="1 = batch statistics and running-stat outputs"
    ),
    Convention(
        "affine",
        "scale, B (required)",
        True,
        SRC_BN,
        note="absent canonical scale/offset pass ones/zeros, exactly",
    ),
    ATTRIBUTE_PRECISION,
)
IN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 1)", 1, SRC_IN),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_IN, note="1e-5 as a float32 attribute"),
    Convention(
        "affine",
        "scale, B (required)",
        True,
        SRC_IN,
        clause="IN.D1",
        note="absent canonical scale/offset pass ones/zeros, exactly",
    ),
    Convention(
        "track_running_stats", "—", False, SRC_IN, note="no running statistics: a state is unsupported"
    ),
    ATTRIBUTE_PRECISION,
)
LN_CONVENTIONS = (
    Convention(
        "axes", "axis", (-1,), SRC_LN, clause="LN.D3", note="normalizes [axis, rank): trailing axes only"
    ),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_LN, note="1e-5 as a float32 attribute"),
    Convention(
        "affine",
        "Scale (required), B (optional)",
        True,
        SRC_LN,
        note="absent canonical scale passes ones, exactly",
    ),
    ATTRIBUTE_PRECISION,
)
GN_CONVENTIONS = (
    Convention("channel_axis", "— (axis 1)", 1, SRC_GN),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_GN, note="1e-5 as a float32 attribute"),
    Convention("assignment", "— (Reshape to [N, G, C/G, ...])", "contiguous", SRC_GN_BODY, clause="GN.D1"),
    Convention(
        "affine",
        "scale, bias (required, per channel at opset 21)",
        True,
        SRC_GN,
        clause="GN.D3",
        note="absent canonical scale/offset pass ones/zeros, exactly",
    ),
    Convention("variance", "— (function body)", "one-pass", SRC_GN_BODY, clause="GN.D4"),
    ATTRIBUTE_PRECISION,
)
RMS_CONVENTIONS = (
    Convention("axes", "axis", (-1,), SRC_RMS, note="normalizes [axis, rank): trailing axes only"),
    Convention("eps", "epsilon", EPS_DEFAULT, SRC_RMS, clause="RMS.D2", note="1e-5 as a float32 attribute"),
    Convention(
        "affine",
        "scale (required), no bias",
        True,
        SRC_RMS,
        note="absent canonical scale passes ones, exactly",
    ),
    ATTRIBUTE_PRECISION,
)
LRN_CONVENTIONS = (
    Convention("alpha", "alpha", f32(1e-4), SRC_LRN, note="1e-4 as a float32 attribute"),
    Convention("beta", "beta", 0.75, SRC_LRN),
    Convention("k", "bias", 1.0, SRC_LRN),
    Convention("channel_axis", "— (axis 1)", 1, SRC_LRN),
    Convention("alpha_over_size", "— (alpha / size)", True, SRC_LRN_DEFS),
    Convention(
        "extra",
        "— (window [c-floor((size-1)/2), c+ceil((size-1)/2)])",
        "after",
        SRC_LRN_DEFS,
        clause="LRN.D2",
    ),
    ATTRIBUTE_PRECISION,
)
LP_CONVENTIONS = (
    Convention("p", "p", 2.0, SRC_LP, note="1 or 2 only"),
    Convention("axes", "axis", (-1,), SRC_LP, note="a single axis"),
    Convention("eps", "— (none)", 0.0, SRC_LP, clause="LP.D2", note="no eps"),
    Convention(
        "eps_placement",
        "—",
        "none_or_zero",
        SRC_LP_ZERO,
        clause="LP.D2",
        note="x / norm, and a zero-norm row gives 0 (ONNX >= 1.21)",
    ),
)

# Behaviours of onnxruntime's CPU provider that differ from the operator spec.
ORT_LRN = Convention(
    "kernel_limits",
    "—",
    "odd size",
    SRC_ORT_LRN,
    note="onnxruntime's kernel enforces an odd size, alpha > 0, beta > 0, 4-D input",
)
ORT_LN = Convention(
    "variance",
    "— (CPU kernel)",
    "two-pass",
    SRC_ORT_LN,
    clause="LN.D4",
    note=f"the spec's function body is one-pass ({SRC_LN_BODY}); onnxruntime's kernel centres first "
    "since this PR, released in 1.27.0 (float32 rows offset by 1e4: NaN up to 1.26.0, error 2.9e-3 in "
    "1.27-1.29, 1.2e-3 from 1.30)",
)
ORT_LRN_SUM = Convention(
    "window_sum",
    "— (running sum: add head, subtract tail)",
    "sliding",
    SRC_ORT_LRN_CC,
    note="Caffe's algorithm: a channel's window sum inherits the cancellation error of its "
    "neighbours' larger squares (float32 |x| ~ 1e18: 40 ulps)",
)
ORT_GN = Convention(
    "kernel",
    "—",
    "function-expanded",
    SRC_ORT_GN,
    clause="GN.D4",
    note="no CPU GroupNormalization kernel: the ONNX function body runs (one-pass, float32 stage one); "
    "float16 Mul/Add get Casts to float32, so the affine step rounds once",
)
# Known bugs of onnx.reference, kept as they are (the adapter is faithful).
REF_LRN = Convention(
    "window",
    "— (loops over x.shape[0])",
    "batch axis",
    SRC_REF_LRN,
    clause="LRN.D4",
    note="channels >= N get no window (onnx #7805)",
)
REF_LP = Convention(
    "norm",
    "— (no abs)",
    "(sum x**p)**(1/p)",
    SRC_REF_LP,
    clause="LP.D3",
    note="for p = 1 the 'norm' is a signed sum (fixed upstream by onnx #8427)",
)
REF_LN = Convention(
    "stash_type",
    "stash_type",
    "ignored",
    SRC_REF_LN,
    clause="LN.D7",
    note="computes in the input dtype, not float32",
)
REF_LN_VARIANCE = Convention(
    "variance",
    "— (op_layer_normalization.py)",
    "two-pass",
    SRC_REF_LN,
    clause="LN.D4",
    note="its own NumPy op, not the spec's one-pass function body",
)
REF_GN = Convention(
    "affine_precision",
    "— (function body, stage two in T)",
    "input dtype",
    SRC_GN_BODY,
    note="the normalized values are cast back to T before scale and bias: three roundings in "
    "float16/bfloat16, which cancel where scale*xhat ~ -bias",
)
REF_RMS = Convention(
    "stash_type",
    "stash_type",
    "ignored",
    SRC_REF_RMS,
    clause="RMS.D4",
    note="computes in the input dtype, not float32",
)


MVN = "MeanVarianceNormalization"
MVN_EPS = f32(1e-9)  # the function body's `Epsilon = Constant <value = float {1e-9}>`
MVN_AXES = Convention(
    "axes",
    "axes",
    (0, 2, 3),
    SRC_MVN,
    clause="LN.D11",
    note="any axes; the default normalizes each channel of NCHW over the batch and the spatial axes",
)
MVN_CONVENTIONS = (
    MVN_AXES,
    Convention("eps", "— (Epsilon: a float constant)", MVN_EPS, SRC_MVN_BODY, clause="LN.D11"),
    Convention(
        "eps_placement", "— (Sqrt(Variance) + Epsilon)", "outside_sqrt", SRC_MVN_BODY, clause="LN.D11"
    ),
    Convention(
        "variance", "— (function body)", "one-pass E[x²] − E[x]², unclamped", SRC_MVN_BODY, clause="LN.D11"
    ),
    Convention("affine", "— (none)", False, SRC_MVN, note="a canonical scale or offset is unsupported"),
)
ORT_MVN_CONVENTIONS = (
    MVN_AXES,
    Convention(
        "eps",
        "— (none: its float kernel)",
        0.0,
        SRC_ORT_MVN,
        clause="LN.D11",
        note="(X − E[X]) / sqrt(E[(X − E[X])²]), two-pass; the operator's 1e-9 is its function body's",
    ),
    Convention(
        "eps_placement", "— (no epsilon)", "outside_sqrt", SRC_MVN_BODY, note="the operator's; moot at 0"
    ),
    Convention("affine", "— (none)", False, SRC_MVN, note="a canonical scale or offset is unsupported"),
)


def _declaration(norm, op, dtypes, conventions, accumulation, stateful=False) -> NormDeclaration:
    return NormDeclaration(
        norm=norm,
        api=f"onnx {op}-{OPSET[op]}",
        dtypes=dtypes,
        conventions=conventions,
        accumulation=accumulation,
        gradients=False,
        stateful=stateful,
    )
