"""Norms from Hugging Face transformers (a model library nobody here wrote), validated as shipped.

    normconf check examples/transformers_norms.py:llama_rms_norm     (one at a time: all three are RMSNorms)

- LlamaRMSNorm: RMSNorm over the last axis, weight only, statistics in float32.
- T5LayerNorm: the same equation, T5's own code (its half-precision path differs from Llama's).

Each layer is built as a model builds it and called with the module's own forward; the scale goes
in through `torch.func.functional_call`, so autograd differentiates the shipped code.
"""

import torch
from torch.func import functional_call
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.t5.modeling_t5 import T5LayerNorm

from normconf.adapters.plugin import implementation

ALL = ("float16", "bfloat16", "float32", "float64")
IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32", "float32": "float32"}


def _run(layer_class, x, eps, weight):
    layer = layer_class(x.shape[-1], eps=eps).to(x.dtype)
    return functional_call(layer, {"weight": weight}, (x,))


def _scale(scale, x):
    return torch.ones(x.shape[-1], dtype=x.dtype) if scale is None else scale


@implementation("rms_norm", arrays="torch", dtypes=ALL, accumulation=IN_FLOAT32)
def llama_rms_norm(x, *, eps, scale=None):
    return _run(LlamaRMSNorm, x, eps, _scale(scale, x))


@implementation("rms_norm", arrays="torch", dtypes=ALL, accumulation=IN_FLOAT32)
def t5_layer_norm(x, *, eps, scale=None):
    return _run(T5LayerNorm, x, eps, _scale(scale, x))
