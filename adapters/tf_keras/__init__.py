"""Keras 2 (`tf_keras`): the legacy Keras layers on TensorFlow.

The family's folder: `declarations.py` holds its declarations (each fact with the source it was read from,
pinned to tf-keras v2.21.0), `adapters.py` its runtime (TensorFlow's, through plans) and its adapter
(tf_keras) with its measured `cost`; `known.py` holds its known divergences, sorted by clause. The adapter
is registered by name as an entry point of the group `normconf.adapters` in pyproject.toml.
"""
