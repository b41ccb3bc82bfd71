"""The JAX family under the mixed policy (spec MP.P1): each library's norms as its users turn mixed
precision on - flax's `dtype=<half>` with `param_dtype=float32`, a jmp policy installed on the haiku
module class, equinox's `dtype=float32` layers fed half activations - on float32 parameters and running
statistics (declarations.py: the policies and their sources; mixed_precision.md MP.D30-D59: what departs
from the reference)."""

from __future__ import annotations

import contextlib

from ..base import under_policy
from .declarations import (
    EQUINOX_POLICY,
    HAIKU_POLICY,
    HALF_IN_FLOAT32,
    HALF_IN_HALF,
    HALF_OUT_FLOAT32,
    HALVES,
    LINEN_POLICY,
    NNX_POLICY,
)
from .equinox import Equinox
from .haiku import Haiku, _haiku
from .linen import FlaxLinen
from .nnx import FlaxNnx

# Every norm of these libraries holds parameters (and BatchNorm running statistics): all run under it.


class FlaxLinenMixed(FlaxLinen):
    """flax.linen modules built with `dtype=<half>` (the computation's and the result's dtype) and
    `param_dtype=float32`, called on half activations: the statistics are float32 and so is every
    operation up to y, rounded once to the half type (`_normalize`'s final asarray)."""

    name = "flax.linen@mixed"
    cost = 4.1  # see Adapter.cost: 0.25 of flax.linen's seconds in the gate's quick run (2026-12-08)
    policy = LINEN_POLICY
    declarations = under_policy(
        FlaxLinen.declarations, tuple(FlaxLinen.declarations), HALVES, accumulation=HALF_IN_FLOAT32
    )

    def no_argument_calls(self):
        return {}

    def _dtypes(self, norm, dtype) -> dict:
        return {**super()._dtypes(norm, dtype), "dtype": dtype}


class FlaxNnxMixed(FlaxNnx):
    """flax.nnx modules built with `dtype=<half>` and `param_dtype=float32` on half activations:
    `promote_dtype` casts the parameters - and in eval the running statistics - to the half type before
    use (MP.D30, MP.D31); the batch statistics are float32."""

    name = "flax.nnx@mixed"
    cost = 3.3  # see Adapter.cost: 0.25 of flax.nnx's seconds in the gate's quick run (2026-12-08)
    policy = NNX_POLICY
    declarations = under_policy(
        FlaxNnx.declarations, tuple(FlaxNnx.declarations), HALVES, accumulation=HALF_IN_FLOAT32
    )

    def no_argument_calls(self):
        return {}

    def _dtypes(self, norm, dtype) -> dict:
        return {**super()._dtypes(norm, dtype), "dtype": dtype}


def jmp_policy(dtype: str) -> str:
    """The jmp policy string of the mixed policy for half type `dtype`."""
    return f"params=float32,compute={dtype},output={dtype}"


class HaikuMixed(Haiku):
    """haiku modules under a jmp policy set on their class (`hk.mixed_precision.set_policy`, here pushed
    around each call so the plain haiku adapter in the same process is untouched): parameters created
    float32, read - the running statistics too - cast to the half type, the input cast to it, the output
    cast to it (MP.D40-D42)."""

    name = "haiku@mixed"
    cost = 5.1  # see Adapter.cost: 0.29 of haiku's seconds in the gate's quick run (2026-12-08)
    policy = HAIKU_POLICY
    declarations = under_policy(
        Haiku.declarations, tuple(Haiku.declarations), HALVES, accumulation=HALF_IN_HALF
    )
    repro_import = "import haiku as hk\nimport jmp"

    def no_argument_calls(self):
        return {}

    @contextlib.contextmanager
    def _policy(self, plan):
        hk = _haiku()
        import jmp

        with hk.mixed_precision.push_policy(getattr(hk, plan.module), jmp.get_policy(jmp_policy(plan.dtype))):
            yield

    def _setup(self, plan, x_shape, dtype, synced=True):
        with self._policy(plan):
            return super()._setup(plan, x_shape, dtype, synced)

    def _call(self, plan, x, affine):
        with self._policy(plan):  # traced (and compiled) under it: the program holds its casts
            return super()._call(plan, x, affine)

    def _synchronized(self, plan, affine):
        with self._policy(plan):
            return super()._synchronized(plan, affine)

    def _policy_lines(self, plan) -> list[str]:
        return [
            f"hk.mixed_precision.set_policy(hk.{plan.module}, jmp.get_policy({jmp_policy(plan.dtype)!r}))"
        ]

    def _repro_body(self, plan):
        return [*self._policy_lines(plan), *super()._repro_body(plan)]

    def _sync_repro_body(self, plan):
        return [*self._policy_lines(plan), *super()._sync_repro_body(plan)]


_EQX_TRAILING = ("layer_norm", "group_norm", "rms_norm")


class EquinoxMixed(Equinox):
    """equinox layers built with `dtype=float32` (weight, bias and BatchNorm's running statistics) on half
    activations: LayerNorm, GroupNorm and RMSNorm compute in result_type(x, float32) and return x's
    dtype; BatchNorm takes its statistics in x's dtype, normalizes against its float32 state and
    parameters and returns float32 - and its 'ema' training step raises (MP.D50)."""

    name = "equinox@mixed"
    cost = 3.4  # see Adapter.cost: 0.42 of equinox's seconds in the gate's quick run (2026-12-08)
    policy = EQUINOX_POLICY
    declarations = {
        **under_policy(
            Equinox.declarations,
            ("batch_norm",),
            HALVES,
            accumulation=HALF_IN_HALF,
            output=HALF_OUT_FLOAT32,
        ),
        **under_policy(Equinox.declarations, _EQX_TRAILING, HALVES, accumulation=HALF_IN_FLOAT32),
    }

    def no_argument_calls(self):
        return {}


__all__ = ["EquinoxMixed", "FlaxLinenMixed", "FlaxNnxMixed", "HaikuMixed"]
