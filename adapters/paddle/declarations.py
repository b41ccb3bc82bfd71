"""Paddle declarations: the conventions both adapters share, each fact with the source line it was read
from (Paddle v3.3.1), and the dtypes its CPU kernels take. Its own module so that `adapters.py` holds the
adapters. Data only: nothing here imports paddle."""

from __future__ import annotations

from ..base import Convention, f32

TAG = "https://github.com/PaddlePaddle/Paddle/blob/v3.3.1"
SRC_F = f"{TAG}/python/paddle/nn/functional/norm.py"
SRC_LAYERS = f"{TAG}/python/paddle/nn/layer/norm.py"
SRC_BN_CPU = f"{TAG}/paddle/phi/kernels/cpu/batch_norm_kernel.cc"
SRC_BN_ATTR = f"{TAG}/paddle/phi/kernels/batch_norm_kernel.h"
SRC_LN_ATTR = f"{TAG}/paddle/phi/kernels/layer_norm_kernel.h"
SRC_IN_ATTR = f"{TAG}/paddle/phi/kernels/instance_norm_kernel.h"
SRC_GN_ATTR = f"{TAG}/paddle/phi/kernels/group_norm_kernel.h"
SRC_GN_CPU = f"{TAG}/paddle/phi/kernels/cpu/group_norm_kernel.cc"
SRC_PNORM = f"{TAG}/paddle/phi/kernels/cpu/p_norm_kernel.cc"
SRC_RMS = f"{TAG}/python/paddle/incubate/nn/functional/fused_rms_norm.py"
# the CPU kernel of fused_rms_norm: AVX-512 intrinsics (_mm512_*) with no runtime dispatch
SRC_RMS_CPU = f"{TAG}/paddle/phi/kernels/fusion/cpu/rms_norm_avx_kernel.cc"

DTYPES = ("float32", "float64")  # every norm kernel here is registered for CPU float32/float64 only
SAME = {d: d for d in DTYPES}  # the kernels compute in the input dtype


EPS32 = f32(1e-5)  # 9.99999974738e-06: epsilon=1e-5 passed as a float attribute
MOMENTUM32 = 1.0 - f32(
    0.9
)  # 0.10000002384: Paddle's momentum=0.9 (weight on the old value), a float attribute


def _attribute_precision(source: str, names: str) -> Convention:
    return Convention(
        "attribute_precision",
        names,
        "float32",
        source,
        clause="BN.D17",
        note="32-bit op attributes: float64 runs need float32-representable values",
    )


BN_CONVENTIONS = (
    Convention("channel_axis", "data_format", 1, SRC_F, note="NC/NCL/NCHW/NCDHW = 1; NLC/NHWC/NDHWC = last"),
    Convention("eps", "epsilon", EPS32, SRC_BN_ATTR, note="1e-5 as a float attribute"),
    Convention(
        "momentum",
        "momentum",
        MOMENTUM32,
        SRC_BN_CPU,
        clause="BN.D2",
        note="canonical = 1 - paddle momentum (0.9, weight on the old value, a float attribute)",
    ),
    Convention("running_var", "— (fixed)", "biased", SRC_BN_CPU, clause="BN.D1"),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN_CPU),
    Convention(
        "single_value",
        "— (N·spatial == 1)",
        "returns x",
        SRC_BN_CPU,
        clause="BN.D16",
        note="skips normalization, affine and the running update",
    ),
    _attribute_precision(SRC_BN_ATTR, "momentum, epsilon (float)"),
)
IN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_F, note="the dynamic-graph op takes no data_format"),
    Convention("eps", "eps / epsilon", EPS32, SRC_IN_ATTR, note="1e-5 as a float attribute"),
    Convention(
        "affine",
        "weight_attr, bias_attr",
        True,
        SRC_LAYERS,
        clause="IN.D1",
        note="the layers create scale (1) and bias (0); F.instance_norm takes None",
    ),
    Convention(
        "track_running_stats",
        "— (running_mean, running_var, use_input_stats: obsolete)",
        False,
        SRC_F,
        clause="IN.D4",
        note="no running statistics: a state is unsupported",
    ),
    _attribute_precision(SRC_IN_ATTR, "epsilon (float)"),
)
LN_CONVENTIONS = (
    Convention(
        "axes",
        "normalized_shape",
        (-1,),
        SRC_F,
        clause="LN.D3",
        note="trailing axes only; weight and bias are flattened to prod(normalized_shape)",
    ),
    Convention("eps", "epsilon", EPS32, SRC_LN_ATTR, note="1e-5 as a float attribute"),
    _attribute_precision(SRC_LN_ATTR, "epsilon (float)"),
)
GN_CONVENTIONS = (
    Convention("channel_axis", "data_format", 1, SRC_F, note="NCL/NCHW/NCDHW = 1; NLC/NHWC/NDHWC = last"),
    Convention("eps", "epsilon", 1e-5, SRC_GN_ATTR, note="a double attribute: exact"),
    Convention("assignment", "— (fixed)", "contiguous", SRC_GN_CPU, clause="GN.D1"),
    Convention(
        "variance",
        "— (CPU kernel)",
        "one-pass",
        SRC_GN_CPU,
        clause="GN.D7",
        note="max(E[x²] − mean², 0) in the input dtype",
    ),
)
LRN_CONVENTIONS = (
    Convention("alpha", "alpha", 1e-4, SRC_F),
    Convention(
        "beta",
        "beta",
        0.75,
        SRC_F,
        note="a float attribute of pow: float64 runs need a float32 beta (LRN.D8)",
    ),
    Convention("k", "k", 1.0, SRC_F),
    Convention("channel_axis", "data_format", 1, SRC_F, note="NCL/NCHW/NCDHW = 1; NLC/NHWC/NDHWC = last"),
    Convention("alpha_over_size", "— (avg_pool)", True, SRC_F),
    Convention("extra", "— (pad size//2 before, (size-1)//2 after)", "before", SRC_F, clause="LRN.D2"),
)
LP_CONVENTIONS = (
    Convention("p", "p", 2.0, SRC_F, note="float64 runs need 1/p exact in float32 (LP.D7)"),
    Convention("axes", "axis", (1,), SRC_F, note="one axis only"),
    Convention("eps", "epsilon", 1e-12, SRC_F, note="a tensor of the input dtype"),
    Convention("eps_placement", "— (maximum(norm, eps))", "max_norm", SRC_F, clause="LP.D1"),
)
RMS_CONVENTIONS = (
    Convention("axes", "begin_norm_axis", (-1,), SRC_RMS, note="[begin_norm_axis, rank): trailing axes only"),
    Convention(
        "eps",
        "epsilon (required)",
        1e-5,
        SRC_RMS,
        clause="RMS.D2",
        note="no default: required; 1e-5 is paddle.nn.functional.rms_norm's, which has no CPU kernel",
    ),
    Convention(
        "affine",
        "norm_weight (required), norm_bias",
        True,
        SRC_RMS,
        note="an absent canonical scale passes ones, exactly",
    ),
)
