"""What the JAX family's known divergences share: the CPU dependency of XLA's float16 arithmetic, which
haiku's, flax.linen's and equinox's float16 rsqrt-derivative overflows (LN.D10) hinge on, and, under the
mixed policy (spec MP), a model judged on the parameters as the policy casts them (`CastFirst`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from normconf.reference import RunningStats
from normconf.vocabulary import Case, CpuDependency, Divergence, Model, rounded

# haiku's BatchNorm float16 backward overflows only where XLA promotes float16 arithmetic to float32 per
# operation (no AVX512-FP16 in force); with native float16 it stays finite and within NUM.N8's budget
# (measured on an AVX512-FP16 Xeon: 351 against a budget of 3.3e7; the same CPU capped to AVX2 overflows).
XLA_PROMOTED_HALF = CpuDependency("xla", "avx512_fp16", present=False)

HALVES = ("float16", "bfloat16")


def policy_cast(case: Case, dtype: str, keys: tuple[str, ...]) -> Case:
    """The case with `keys` - "scale", "offset", "state" - rounded to the half type `dtype`, as a mixed
    policy's framework casts (or returns) its float32 values; unchanged for any other dtype."""
    if dtype not in HALVES:
        return case
    params = dict(case.params)
    for key in keys:
        value = params.get(key)
        if isinstance(value, RunningStats):
            params[key] = RunningStats(
                rounded(value.mean, dtype), rounded(value.var, dtype), value.num_batches_tracked
            )
        elif value is not None:
            params[key] = rounded(value, dtype)
    return Case(case.norm, case.x, params, case.kind, cotangent=case.cotangent)


@dataclass(frozen=True)
class CastFirst(Model):
    """`model` judged on the case as a mixed policy casts it (`policy_cast` of `keys`): what the
    framework computes from its float32 parameters rounded to the half type - before use (flax.nnx's
    promote_dtype, a jmp policy's getter) or on the way out (an offset that is all of y, rounded with it)."""

    model: Model = None
    keys: tuple = ("offset",)
    kind: str = field(default="", kw_only=True)

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", self.model.kind)

    def _cast(self, observation, dtype):
        return replace(observation, case=policy_cast(observation.case, dtype, self.keys))

    def judge(self, observations, dtype: str):
        return self.model.judge(tuple(self._cast(o, dtype) for o in observations), dtype)

    def width(self, observation, dtype):
        return self.model.width(self._cast(observation, dtype), dtype)

    def describe(self) -> str:
        return f"{self.model.describe()} on the {', '.join(self.keys)} cast to the half type"


def in_half(example, dtype: str = "bfloat16"):
    """An entry's example with x and its parameters rounded to a half type - its own, or `dtype` for a
    wider one (a policy adapter runs only half inputs)."""

    def half() -> tuple[Case, str]:
        case, own = example()
        dtype_ = own if own in HALVES else dtype
        params = {k: rounded(v, dtype_) if isinstance(v, np.ndarray) else v for k, v in case.params.items()}
        g = None if case.cotangent is None else rounded(case.cotangent, dtype_)
        return Case(case.norm, rounded(case.x, dtype_), params, case.kind, cotangent=g), dtype_

    return half


def range_under_policy(
    entries, plain: str, policy: str, keys: tuple[str, ...], norms: tuple[str, ...] | None = None
) -> list[Divergence]:
    """NUM.D1 for a policy adapter: its plain sibling's range entries (`plain` names the sibling) with
    their model judged on the values as the policy casts them (`keys`) - a group whose squares overflow
    settles to the offset the framework holds or returns, rounded to the half type - for `norms` (None:
    all), with examples in a half type. Still range limits (NUM.L3)."""
    return [
        replace(
            entry,
            adapters=policy,
            reason=entry.reason
            + f", its offset in the half type under the mixed policy ({', '.join(keys)} cast)",
            example=in_half(entry.example),
            model=CastFirst(entry.model, keys),
        )
        for entry in entries
        if entry.clause == "NUM.D1"
        and entry.adapters in (plain, plain.split(".")[0] + ".*")
        and (norms is None or entry.norm in norms)
    ]
