"""PaddlePaddle: paddle.nn.functional and the paddle.nn layers.

The family's folder: `declarations.py` holds its declarations (each fact with the source it was read
from, pinned to a release), `runtime.py` its runtime, `arguments.py` the canonical parameters turned
into Paddle's, `adapters.py` the adapters (paddle.functional, paddle.nn), each with its measured
`cost`; `known.py` holds its known divergences, sorted by clause. The adapters are registered by name
as entry points of the group `normconf.adapters` in pyproject.toml.
"""
