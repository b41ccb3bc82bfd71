"""The JAX family: flax (linen, nnx), dm-haiku and equinox.

One module per library - `linen.py`, `nnx.py`, `haiku.py`, `equinox.py` - over what they share
(`common.py`: the base adapter, isolation and 64-bit mode, the jitted plan's execution and rendering),
the JAX plumbing (`runtime.py`: `ModulePlan`, one `jax.jit` per program, gradients by `jax.vjp` inside
it) and the declarations (`declarations.py`: each fact with the source it was read from, pinned to a
release). JAX is imported only when a layer runs; float64 switches `jax_enable_x64` on first. `policy.py`
holds each library's sibling under the mixed policy (spec MP.P1: flax.linen@mixed, flax.nnx@mixed,
haiku@mixed, equinox@mixed): the plain adapter with its parameters and running statistics in float32,
the policy turned on as that library's users do.
`known.py` holds the family's known divergences, sorted by clause: those two or more libraries share,
gathered with each library's own (`known_flax.py`, `known_haiku.py`, `known_equinox.py`). The adapters
are registered by name as entry points of the group `normconf.adapters` in pyproject.toml.
"""
