"""Adapters: each framework implementation behind the protocol of `base.Adapter`.

The registry names each adapter and where it lives, so listing them imports no framework; an adapter's
module is imported only when it is used, and its framework only when it runs. Plug-ins (your own
implementations, `plugin.py`) are named by where they live - "path/file.py[:obj]" or "module:obj" - or
by the name of an installed `normconf.adapters` entry point.
"""

from __future__ import annotations

import importlib
import os
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


ISOLATE = (
    "NORMCONF_ISOLATE"  # set (to the per-call timeout in seconds, or "on"): every call in a child process
)


@lru_cache(maxsize=None)
def get(name: str) -> Adapter:
    """The adapter called `name` (its framework is not imported until it runs), or the plug-in it names;
    with NORMCONF_ISOLATE set, a proxy running its calls in a child process (crash and hang isolation)."""
    from . import _isolated

    adapter = _load(name)
    setting = os.environ.get(ISOLATE, "")
    if not setting or _isolated.in_child():
        return adapter
    return _isolated.IsolatedAdapter(adapter, None if setting == "on" else float(setting))


def _load(name: str) -> Adapter:
    from . import plugin

    if name in REGISTRY:
        module, cls, kwargs = REGISTRY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(**kwargs)
    if plugin.is_spec(name):
        return plugin.load(name)
    if name in plugin.entry_points():
        return plugin.load_entry_point(name)
    known = sorted([*REGISTRY, *plugin.entry_points()])
    raise UnknownAdapter(
        f"unknown adapter {name!r}; known: {', '.join(known)} (or a plug-in: path/file.py[:obj], module:obj)"
    )


def names() -> list[str]:
    """The built-in adapters and the installed plug-ins' entry points."""
    from . import plugin

    return [*REGISTRY, *sorted(set(plugin.entry_points()) - set(REGISTRY))]


__all__ = [
    "NORMS",
    "REGISTRY",
    "Adapter",
    "Convention",
    "NormDeclaration",
    "Outcome",
    "Unsupported",
    "UnknownAdapter",
    "get",
    "names",
]
