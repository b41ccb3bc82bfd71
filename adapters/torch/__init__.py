"""PyTorch: torch.functional, torch.nn and torchvision.

The family's folder: `adapters.py` holds its declarations (each fact with the source it was read from,
pinned to a release), its runtime and its adapters (torch.functional, torch.nn, torchvision), each with
its measured `cost`; `known.py` holds its known divergences, sorted by clause. The adapters are
registered by name as entry points of the group `normconf.adapters` in pyproject.toml.
"""
