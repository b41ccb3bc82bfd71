"""The JAX family: flax (linen, nnx), dm-haiku and equinox.

The family's folder: `adapters.py` holds its declarations (each fact with the source it was read from,
pinned to a release), its runtime and its adapters (flax.linen, flax.nnx, haiku, equinox), each with its
measured `cost`; `known.py` holds its known divergences, sorted by clause. The adapters are registered
by name as entry points of the group `normconf.adapters` in pyproject.toml.
"""
