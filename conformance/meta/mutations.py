r"""pytest plugin: deliberately broken copies of the reference, to show the suite catches each bug.

    NORMCONF_MUTATION=eps_outside_sqrt pytest conformance/test_forward.py \
        -p normconf.conformance.meta.mutations

The patch is applied to the reference's module globals at configure time, in that process only.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

_common = importlib.import_module("normconf.reference._common")
_lrn = importlib.import_module("normconf.reference.local_response_norm")
_original_window = _lrn.window
_original_moments = _common.moments


def _shifted_window(size, extra):
    """LRN window off by one: the same size, slid one channel toward the end."""
    before, after = _original_window(size, extra)
    return (before - 1, after + 1) if before > 0 else (before, after)


def _eps_outside_sqrt(v, axes, eps, mean_sq=None, factor=1.0):
    mean_sq = factor * np.mean(v * v, axis=axes, keepdims=True) if mean_sq is None else mean_sq
    return np.sqrt(mean_sq) + eps


def _unbiased_moments(x, axes):
    m = _original_moments(x, axes)
    scale = m.n / (m.n - 1) if m.n > 1 else 1.0
    return _common.Moments(m.mean, m.centred, m.var * scale, m.n)


MUTATIONS = {
    "lrn_window_off_by_one": (_lrn, "window", _shifted_window),
    "eps_outside_sqrt": (_common, "root_mean_square", _eps_outside_sqrt),
    "unbiased_normalization": (_common, "moments", _unbiased_moments),
}


# Wrong declarations: an adapter that claims a default its framework does not have.
DECLARATION_MUTATIONS = {
    "torch_layer_norm_eps_declared_1e-3": ("layer_norm", "eps", 1e-3),
    "torch_batch_norm_momentum_declared_0.9": ("batch_norm", "momentum", 0.9),
}


def _misdeclare(norm, key, value):
    import dataclasses

    from normconf.adapters.torch import adapters as torch_adapters

    for cls in (torch_adapters.TorchModules, torch_adapters.TorchFunctional):
        declaration = cls.declarations[norm]
        conventions = tuple(
            dataclasses.replace(c, value=value) if c.key == key else c for c in declaration.conventions
        )
        cls.declarations = {
            **cls.declarations,
            norm: dataclasses.replace(declaration, conventions=conventions),
        }


def pytest_configure(config):
    name = os.environ.get("NORMCONF_MUTATION")
    if name in MUTATIONS:
        module, attribute, replacement = MUTATIONS[name]
        setattr(module, attribute, replacement)
    elif name in DECLARATION_MUTATIONS:
        _misdeclare(*DECLARATION_MUTATIONS[name])
    elif name:
        raise ValueError(f"unknown NORMCONF_MUTATION {name!r}")
