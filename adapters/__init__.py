"""Adapters: each framework implementation behind the protocol of `base.Adapter`.

The registry names each adapter and where it lives, so listing them imports no framework; an adapter's
module is imported only when it is used, and its framework only when it runs.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

from .base import NORMS, Adapter, Convention, NormDeclaration, Outcome, Unsupported

# name -> (module in this package, class, constructor keyword arguments)
REGISTRY: dict[str, tuple[str, str, dict]] = {
    "torch.functional": ("pytorch", "TorchFunctional", {}),
    "torch.nn": ("pytorch", "TorchModules", {}),
    "torchvision": ("pytorch", "TorchVision", {}),
    "tf.nn": ("tensorflow_nn", "TfNn", {}),
    "tf.fused_batch_norm": ("tensorflow_nn", "TfFusedBatchNorm", {}),
    "keras[tensorflow]": ("keras3", "Keras", {"backend": "tensorflow"}),
    "keras[jax]": ("keras3", "Keras", {"backend": "jax"}),
    "keras[torch]": ("keras3", "Keras", {"backend": "torch"}),
    "keras[numpy]": ("keras3", "Keras", {"backend": "numpy"}),
    "flax.linen": ("jax_family", "FlaxLinen", {}),
    "flax.nnx": ("jax_family", "FlaxNnx", {}),
    "haiku": ("jax_family", "Haiku", {}),
    "equinox": ("jax_family", "Equinox", {}),
    "onnxruntime": ("onnx_models", "OnnxRuntime", {}),
    "onnx.reference": ("onnx_models", "OnnxReference", {}),
    "paddle.functional": ("paddle", "PaddleFunctional", {}),
    "paddle.nn": ("paddle", "PaddleLayers", {}),
    "mlx.nn": ("mlx", "MlxNn", {}),
}


class UnknownAdapter(KeyError):
    """An adapter name the registry does not hold."""


@lru_cache(maxsize=None)
def get(name: str) -> Adapter:
    """The adapter called `name` (its framework is not imported until it runs)."""
    try:
        module, cls, kwargs = REGISTRY[name]
    except KeyError:
        raise UnknownAdapter(f"unknown adapter {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(**kwargs)


def names() -> list[str]:
    return list(REGISTRY)


__all__ = ["NORMS", "REGISTRY", "Adapter", "Convention", "NormDeclaration", "Outcome", "Unsupported", "UnknownAdapter",
           "get", "names"]
