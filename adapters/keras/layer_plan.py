"""The Keras adapters' plan (LayerPlan): what to build, load, call and read. Its own module so that
adapters.py, which makes and runs plans, and sync_programs.py, which caches them, share it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LayerPlan:
    """A Keras adapter's plan: `keras.layers.<layer>(**kwargs)` built for `build_shape`, the weights
    given loaded (attribute -> float64 values), called on x with `call`; the gradients of x and of the
    variables in `wrt` (canonical name -> attribute), and the variables in `reads` read afterwards.
    With `replica_sizes`: a synchronized step, one replica batch each (MirroredStrategy.run)."""

    layer: str
    kwargs: dict
    build_shape: tuple
    weights: dict
    call: dict
    x: np.ndarray
    dtype: str
    cotangent: np.ndarray | None = None
    wrt: dict = field(default_factory=dict)
    reads: tuple = ()
    replica_sizes: tuple | None = None
