"""PyTorch: torch.functional, torch.nn and torchvision.

The family's folder: `declarations.py` holds its declarations (each fact with the source it was read
from, pinned to a release), `runtime.py` its runtime (torch imported when a call runs, tensors in and
out), `default_calls.py` the no-argument calls, `adapters.py` the adapters (torch.functional, torch.nn,
torchvision, torchvision.v2), each with its measured `cost`; `known.py` holds its known divergences,
sorted by clause (those of the mixed policy, torch.*@mixed, in `known_mixed.py`). The adapters are
registered by name as entry points of the group `normconf.adapters` in pyproject.toml.
"""
