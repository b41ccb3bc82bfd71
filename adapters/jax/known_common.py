"""What the JAX family's known divergences share: the CPU dependency of XLA's float16 arithmetic, which
haiku's, flax.linen's and equinox's float16 rsqrt-derivative overflows (LN.D10) hinge on."""

from __future__ import annotations

from normconf.vocabulary import CpuDependency

# haiku's BatchNorm float16 backward overflows only where XLA promotes float16 arithmetic to float32 per
# operation (no AVX512-FP16 in force); with native float16 it stays finite and within NUM.N8's budget
# (measured on an AVX512-FP16 Xeon: 351 against a budget of 3.3e7; the same CPU capped to AVX2 overflows).
XLA_PROMOTED_HALF = CpuDependency("xla", "avx512_fp16", present=False)
