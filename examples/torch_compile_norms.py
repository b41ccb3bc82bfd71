"""PyTorch's norms compiled by torch.compile (TorchInductor, generating C++ for the CPU).

    normconf check examples/torch_compile_norms.py:compiled_layer_norm
    normconf check examples/torch_compile_norms.py:compiled_rms_norm

Inductor fuses the reduction and the normalization into its own generated loops, so this is a
different implementation from the eager kernels the `torch.functional` adapter checks. `dynamic=True`
compiles one kernel for every shape (the first call takes ~30 s; a gcc/g++ must be installed). Neither
function takes `axes`: both normalize the last axis, which is what the suite draws.
"""

import torch
import torch.nn.functional as F

from normconf.adapters.plugin import implementation

DTYPES = ("float16", "bfloat16", "float32", "float64")
IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}


@torch.compile(dynamic=True)
def _layer_norm(x, weight, bias, eps: float):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


@torch.compile(dynamic=True)
def _rms_norm(x, weight, eps: float):
    return F.rms_norm(x, x.shape[-1:], weight, eps)


@implementation("layer_norm", arrays="torch", dtypes=DTYPES, accumulation=IN_FLOAT32)
def compiled_layer_norm(x, *, eps, scale=None, offset=None):
    return _layer_norm(x, scale, offset, eps)


@implementation("rms_norm", arrays="torch", dtypes=DTYPES, accumulation=IN_FLOAT32)
def compiled_rms_norm(x, *, eps, scale=None):
    return _rms_norm(x, scale, eps)
