"""Keras 3 on each of its backends.

The family's folder: `adapters.py` holds its declarations (each fact with the source it was read from,
pinned to a release), its runtime and its adapters (keras[tensorflow], keras[jax], keras[torch],
keras[numpy]), each with its measured `cost`; `known.py` holds its known divergences, sorted by clause.
The adapters are registered by name as entry points of the group `normconf.adapters` in pyproject.toml.
"""
