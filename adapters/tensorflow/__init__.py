"""TensorFlow: tf.nn and the v1 fused BatchNorm kernel.

The family's folder: `adapters.py` holds its declarations (each fact with the source it was read from,
pinned to a release), its runtime and its adapters (tf.nn, tf.fused_batch_norm), each with its measured
`cost`; `known.py` holds its known divergences, sorted by clause. The adapters are registered by name as
entry points of the group `normconf.adapters` in pyproject.toml.
"""
