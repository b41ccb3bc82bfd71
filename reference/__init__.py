"""The float64 reference: one pure NumPy module per norm, the spec's equations in code.

Each norm has a forward function and a `<name>_vjp(g, x, **same_params)` that returns the
cotangents of x, scale and offset, and one record in `NORMS` (norms.py) that the rest of normconf
reads. Invalid arguments raise `ClauseError`, citing the clause.
"""

from ._common import ClauseError, Grads
from .batch_norm import RunningStats, batch_norm, batch_norm_vjp
from .channel_normalize import channel_normalize, channel_normalize_vjp
from .group_norm import group_norm, group_norm_vjp
from .instance_norm import instance_norm, instance_norm_vjp
from .layer_norm import layer_norm, layer_norm_vjp
from .local_response_norm import local_response_norm, local_response_norm_vjp
from .lp_normalize import lp_normalize, lp_normalize_vjp
from .norms import NORMS, Norm
from .rms_norm import rms_norm, rms_norm_vjp
from .sync_batch_norm import sync_batch_norm, sync_batch_norm_vjp

__all__ = [
    "ClauseError",
    "Grads",
    "NORMS",
    "Norm",
    "RunningStats",
    "batch_norm",
    "batch_norm_vjp",
    "channel_normalize",
    "channel_normalize_vjp",
    "group_norm",
    "group_norm_vjp",
    "instance_norm",
    "instance_norm_vjp",
    "layer_norm",
    "layer_norm_vjp",
    "local_response_norm",
    "local_response_norm_vjp",
    "lp_normalize",
    "lp_normalize_vjp",
    "rms_norm",
    "rms_norm_vjp",
    "sync_batch_norm",
    "sync_batch_norm_vjp",
]
