"""PyTorch declarations: what torch.functional, torch.nn and torchvision do, fact by fact, with the
source each was read from (pinned to a release). Data only: nothing here imports torch. Split from
adapters.py, which holds the adapters that run them."""

from __future__ import annotations

from ..base import Convention, NormDeclaration, Policy, under_policy

SRC_BN = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/batchnorm.py"
SRC_BN_CPP = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/Normalization.cpp"
SRC_NORM = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/normalization.py"
SRC_IN = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/instancenorm.py"
SRC_F = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/functional.py"
SRC_GN = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/cpu/group_norm_kernel.cpp"
SRC_RMS = "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/layer_norm.cpp"
SRC_TV = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/transforms/_functional_tensor.py"
SRC_TV2 = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/transforms/v2/functional/_misc.py"
SRC_FROZEN = "https://github.com/pytorch/vision/blob/v0.29.1/torchvision/ops/misc.py#L14-L63"
SRC_SYNC = (
    "https://github.com/pytorch/pytorch/blob/cf30153c4c131c8164ee7798e5022d810682e2cb/torch/nn/modules/"
    "_functions.py#L30-L124"
)
SRC_SYNC_DEVICE = (
    "https://github.com/pytorch/pytorch/blob/cf30153c4c131c8164ee7798e5022d810682e2cb/torch/nn/modules/"
    "batchnorm.py#L836-L888"
)
# the accelerators SyncBatchNorm synchronizes on (its device check); CPU tensors raise in a process group
SYNC_DEVICE_TYPES = ("cuda", "xpu", "hpu")

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
# CPU kernels accumulate half-precision statistics in float32 (spec LN.N2, RMS.N2, GN.N1).
HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
# BatchNorm (and InstanceNorm, which runs through it) sums in float32 but stores mean and invstd as
# `param_t`, the parameters' dtype: in a pure half module they are rounded to half before use
# (batch_norm_kernel.cpp, `batch_norm_cpu_collect_stats_contiguous_impl`), so their precision is half.
STATS_IN_PARAM_DTYPE = {d: d for d in ALL_DTYPES}

BN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_BN_CPP),
    Convention("eps", "eps", 1e-5, SRC_BN),
    Convention(
        "momentum", "momentum", 0.1, SRC_BN, note="weight on the new batch, as canonical; None = cumulative"
    ),
    Convention("running_var", "— (fixed)", "unbiased", SRC_BN_CPP, clause="BN.D1"),
    Convention("eps_placement", "—", "inside_sqrt", SRC_BN_CPP),
)
IN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_IN),
    Convention("eps", "eps", 1e-5, SRC_IN),
    Convention("momentum", "momentum", 0.1, SRC_IN),
    Convention(
        "running_var", "— (fixed)", "unbiased", SRC_BN_CPP, note="per instance, then averaged over the batch"
    ),
    Convention("affine", "affine", False, SRC_IN, clause="IN.D1"),
    Convention("track_running_stats", "track_running_stats", False, SRC_IN, clause="IN.D1"),
)
LN_CONVENTIONS = (
    Convention("axes", "normalized_shape", (-1,), SRC_NORM, clause="LN.D3", note="trailing axes only"),
    Convention("eps", "eps", 1e-5, SRC_NORM),
)
GN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_GN),
    Convention("eps", "eps", 1e-5, SRC_NORM),
    Convention("assignment", "— (fixed)", "contiguous", SRC_GN, clause="GN.D1"),
)
RMS_CONVENTIONS = (
    Convention("axes", "normalized_shape", (-1,), SRC_NORM),
    Convention(
        "eps",
        "eps",
        None,
        SRC_RMS,
        clause="RMS.D1",
        note="None = float32 epsilon for float32/float16/bfloat16 inputs, float64 epsilon for float64",
    ),
)
LRN_CONVENTIONS = (
    Convention("alpha", "alpha", 1e-4, SRC_F),
    Convention("beta", "beta", 0.75, SRC_F),
    Convention("k", "k", 1.0, SRC_F),
    Convention("channel_axis", "— (dim 1)", 1, SRC_F),
    Convention("alpha_over_size", "— (avg_pool)", True, SRC_F),
    Convention("extra", "— (padding size//2, (size-1)//2)", "before", SRC_F, clause="LRN.D2"),
)
LP_CONVENTIONS = (
    Convention("p", "p", 2.0, SRC_F),
    Convention("axes", "dim", (1,), SRC_F),
    Convention("eps", "eps", 1e-12, SRC_F),
    Convention("eps_placement", "— (clamp_min on the norm)", "max_norm", SRC_F, clause="LP.D1"),
)
CN_CONVENTIONS = (
    Convention("channel_axis", "— (dim -3)", -3, SRC_TV),
    Convention("std_floor", "— (zero std raises)", 0.0, SRC_TV, clause="CN.D1"),
)

BATCH_NORM_BY_RANK = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}
INSTANCE_NORM_BY_RANK = {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"}

FROZEN_BN_CONVENTIONS = (
    Convention("channel_axis", "— (dim 1)", 1, SRC_FROZEN),
    Convention("eps", "eps", 1e-5, SRC_FROZEN),
    Convention("eps_placement", "— (rsqrt(running_var + eps))", "inside_sqrt", SRC_FROZEN),
    Convention(
        "training",
        "— (eval only)",
        False,
        SRC_FROZEN,
        clause="BN.D21",
        note="running statistics, weight and bias are buffers: train() changes nothing, nothing is learned",
    ),
)

# -- each adapter's declarations, by norm ----------------------------------------------------

# torch.functional
FUNCTIONAL_DECLARATIONS = {
    "batch_norm": NormDeclaration(
        norm="batch_norm",
        api="torch.nn.functional.batch_norm",
        dtypes=ALL_DTYPES,
        conventions=BN_CONVENTIONS,
        accumulation=STATS_IN_PARAM_DTYPE,
        gradients=True,
        stateful=True,
    ),
    "instance_norm": NormDeclaration(
        norm="instance_norm",
        api="torch.nn.functional.instance_norm",
        dtypes=ALL_DTYPES,
        conventions=IN_CONVENTIONS,
        accumulation=STATS_IN_PARAM_DTYPE,
        gradients=True,
        stateful=True,
    ),
    "layer_norm": NormDeclaration(
        norm="layer_norm",
        api="torch.nn.functional.layer_norm",
        dtypes=ALL_DTYPES,
        conventions=LN_CONVENTIONS,
        accumulation=HALF_IN_FLOAT32,
        gradients=True,
    ),
    "group_norm": NormDeclaration(
        norm="group_norm",
        api="torch.nn.functional.group_norm",
        dtypes=ALL_DTYPES,
        conventions=GN_CONVENTIONS,
        accumulation=HALF_IN_FLOAT32,
        gradients=True,
    ),
    "rms_norm": NormDeclaration(
        norm="rms_norm",
        api="torch.nn.functional.rms_norm",
        dtypes=ALL_DTYPES,
        conventions=RMS_CONVENTIONS,
        accumulation=HALF_IN_FLOAT32,
        gradients=True,
    ),
    "local_response_norm": NormDeclaration(
        norm="local_response_norm",
        api="torch.nn.functional.local_response_norm",
        dtypes=ALL_DTYPES,
        conventions=LRN_CONVENTIONS,
        accumulation={d: d for d in ALL_DTYPES},
        gradients=True,
    ),
    "lp_normalize": NormDeclaration(
        norm="lp_normalize",
        api="torch.nn.functional.normalize",
        dtypes=ALL_DTYPES,
        conventions=LP_CONVENTIONS,
        accumulation={d: d for d in ALL_DTYPES},
        gradients=True,
    ),
}

# torch.nn
NN_DECLARATIONS = {
    "batch_norm": NormDeclaration(
        norm="batch_norm",
        api="torch.nn.BatchNorm{1,2,3}d",
        dtypes=ALL_DTYPES,
        conventions=BN_CONVENTIONS,
        accumulation=STATS_IN_PARAM_DTYPE,
        gradients=True,
        stateful=True,
    ),
    "instance_norm": NormDeclaration(
        norm="instance_norm",
        api="torch.nn.InstanceNorm{1,2,3}d",
        dtypes=ALL_DTYPES,
        conventions=IN_CONVENTIONS,
        accumulation=STATS_IN_PARAM_DTYPE,
        gradients=True,
        stateful=True,
    ),
    "layer_norm": NormDeclaration(
        norm="layer_norm",
        api="torch.nn.LayerNorm",
        dtypes=ALL_DTYPES,
        conventions=LN_CONVENTIONS,
        accumulation=HALF_IN_FLOAT32,
        gradients=True,
    ),
    "group_norm": NormDeclaration(
        norm="group_norm",
        api="torch.nn.GroupNorm",
        dtypes=ALL_DTYPES,
        conventions=GN_CONVENTIONS,
        accumulation=HALF_IN_FLOAT32,
        gradients=True,
    ),
    "rms_norm": NormDeclaration(
        norm="rms_norm",
        api="torch.nn.RMSNorm",
        dtypes=ALL_DTYPES,
        conventions=RMS_CONVENTIONS,
        accumulation=HALF_IN_FLOAT32,
        gradients=True,
    ),
    "local_response_norm": NormDeclaration(
        norm="local_response_norm",
        api="torch.nn.LocalResponseNorm",
        dtypes=ALL_DTYPES,
        conventions=LRN_CONVENTIONS,
        accumulation={d: d for d in ALL_DTYPES},
        gradients=True,
    ),
    "sync_batch_norm": NormDeclaration(
        norm="sync_batch_norm",
        api="torch.nn.SyncBatchNorm",
        dtypes=ALL_DTYPES,
        conventions=BN_CONVENTIONS
        + (
            Convention(
                "weighting",
                "— (fixed)",
                "count",
                SRC_SYNC,
                clause="SBN.D2",
                note="all-gathered mean, invstd and count per process, combined by count",
            ),
            Convention(
                "replicas",
                "— (processes, one accelerator each)",
                2,
                SRC_SYNC_DEVICE,
                clause="SBN.D3",
                note="CUDA/XPU/HPU tensors only: a CPU tensor in a process group raises",
            ),
        ),
        accumulation=STATS_IN_PARAM_DTYPE,
        gradients=True,
        stateful=True,
    ),
}

# torchvision
TORCHVISION_DECLARATIONS = {
    "channel_normalize": NormDeclaration(
        norm="channel_normalize",
        api="torchvision.transforms.Normalize",
        dtypes=ALL_DTYPES,
        conventions=CN_CONVENTIONS,
        accumulation={d: d for d in ALL_DTYPES},
        gradients=True,
    ),
    "batch_norm": NormDeclaration(
        norm="batch_norm",
        api="torchvision.ops.FrozenBatchNorm2d",
        dtypes=ALL_DTYPES,
        conventions=FROZEN_BN_CONVENTIONS,
        accumulation={
            d: d for d in ALL_DTYPES
        },  # every step a half-precision tensor op on the converted buffers
        # weight and bias are buffers (BN.D21): no gradients of scale and offset, so the suite's
        # gradient property (x, scale and offset against the VJP) is not run for it
        gradients=False,
        stateful=True,
    ),
}

# torchvision.v2
TORCHVISION_V2_DECLARATIONS = {
    "channel_normalize": NormDeclaration(
        norm="channel_normalize",
        api="torchvision.transforms.v2.Normalize",
        dtypes=ALL_DTYPES,
        conventions=(
            Convention("channel_axis", "— (dim -3)", -3, SRC_TV2),
            Convention("std_floor", "— (zero std raises)", 0.0, SRC_TV2, clause="CN.D1"),
            Convention(
                "inplace",
                "inplace",
                False,
                SRC_TV2,
                note="run with inplace=True unless gradients are taken (autograd refuses it on a leaf)",
            ),
        ),
        accumulation={d: d for d in ALL_DTYPES},
        gradients=True,
    ),
}

# -- the mixed policy (MP.P1) as PyTorch users turn it on for the CPU --------------------------------
# torch.autocast("cpu", dtype=torch.bfloat16) around the forward: the CPU autocast lists
# (`AutocastCPU`: lower_precision_fp and fp32) name no norm, so a norm receives the bfloat16 activations
# and its module's float32 parameters and buffers as they are and runs its mixed-type kernel (MP.D1).
SRC_AUTOCAST = "https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/autocast_mode.cpp"
AUTOCAST = Policy(mechanism='torch.autocast("cpu", dtype=torch.bfloat16)', source=SRC_AUTOCAST)
# the norms that hold anything the policy keeps in float32 (parameters, running statistics)
MIXED_NORMS = ("batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm")
# float32 parameters make BatchNorm's param_t float32: its mean and invstd are kept in float32 too
FUNCTIONAL_MIXED_DECLARATIONS = under_policy(
    FUNCTIONAL_DECLARATIONS, MIXED_NORMS, ("bfloat16",), accumulation=HALF_IN_FLOAT32
)
NN_MIXED_DECLARATIONS = under_policy(
    NN_DECLARATIONS, MIXED_NORMS, ("bfloat16",), accumulation=HALF_IN_FLOAT32
)
