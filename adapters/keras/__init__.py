"""Keras 3 on each of its backends.

The family's folder: `adapters.py` holds its adapters (keras[tensorflow], keras[jax], keras[torch],
keras[numpy]) with their declarations (each fact with the source it was read from, pinned to a release)
and measured `cost`; `runtime.py` which process runs each backend, tensors and jitted calls;
`layer_plan.py` the plan record its calls share; `sync_programs.py` the synchronized BatchNorm's
programs; `default_calls.py` the no-argument calls. `known.py` holds its known divergences, sorted by
clause, gathered from `known_axes.py`, `known_rsqrt.py` and `known_unit.py` by subject. The adapters are
registered by name as entry points of the group `normconf.adapters` in pyproject.toml.
"""
