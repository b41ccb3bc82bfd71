"""Keras 3 under the mixed policy (spec MP.P1): the normalization layers built as users turn mixed
precision on - `dtype="mixed_float16"` or `"mixed_bfloat16"`, a DTypePolicy - on the half type's
activations, their variables (gamma, beta, scale, the moving statistics) float32 and loaded in float32.

Each is its backend's plain adapter with the policy's name as the layer's `dtype` (`layer_dtype`). On
JAX a layer under the policy is called through its `__call__` in a StatelessScope, as a Model's
`stateless_call` (Keras' JAX trainer) calls its layers: `Layer.stateless_call` calls `call` directly and
skips the autocast scope the policy opens (runtime._stateless_call). What the policy leaves in which
dtype, per norm: declarations.py (`mixed_declarations_for`) and the spec's MP.D10-D19.
"""

from __future__ import annotations

from .adapters import KerasJax, KerasNumpy, KerasTensorflow, KerasTorch
from .declarations import MIXED, mixed_declarations_for
from .runtime import mixed


class _MixedPolicy:
    """The plain Keras adapter of one backend, its layers built with dtype="mixed_<half>"."""

    policy = MIXED

    def __init__(self):
        super().__init__()
        self.name = f"{self.name}@mixed"
        self.declarations = mixed_declarations_for(self.backend)

    def layer_dtype(self, dtype: str) -> str:
        return f"mixed_{dtype}"

    def no_argument_calls(self):
        return {}

    def _built(self, plan):
        """The plan's layer, built under the policy; every variable must be float32 (MP.P1)."""
        layer = super()._built(plan)
        odd = {v.path: str(v.dtype) for v in layer.variables if str(v.dtype) != "float32"}
        if not mixed(layer) or odd:
            raise RuntimeError(
                f"{self.name}: {plan.layer}(dtype={plan.kwargs.get('dtype')!r}) is not under a mixed "
                f"policy ({layer.dtype_policy}) or holds non-float32 variables: {odd}"
            )
        return layer


class KerasTensorflowMixed(_MixedPolicy, KerasTensorflow):
    cost = 2.7  # see Adapter.cost: 0.19 of keras[tensorflow]'s seconds in the gate's quick run (2026-12-08)


class KerasJaxMixed(_MixedPolicy, KerasJax):
    cost = 3.5  # see Adapter.cost: 0.25 of keras[jax]'s seconds in the gate's quick run (2026-12-08)


class KerasTorchMixed(_MixedPolicy, KerasTorch):
    cost = 0.2  # see Adapter.cost: 0.05 of keras[torch]'s seconds in the gate's quick run (2026-12-08)


class KerasNumpyMixed(_MixedPolicy, KerasNumpy):
    cost = 0.1  # see Adapter.cost: 0.03 of keras[numpy]'s seconds in the gate's quick run (2026-12-08)


__all__ = ["KerasJaxMixed", "KerasNumpyMixed", "KerasTensorflowMixed", "KerasTorchMixed"]
