"""ONNX one-node models on onnxruntime and on onnx's reference evaluator.

The family's folder: `declarations.py` holds its declarations (each fact with the source it was read
from, pinned to a release), `model_builder.py` the one-node models and their framework-alone scripts,
`adapters.py` the adapters (onnxruntime, onnx.reference and their MVN forms), each with its measured
`cost`; `known.py` holds its known divergences, sorted by clause. The adapters are registered by name
as entry points of the group `normconf.adapters` in pyproject.toml.
"""
