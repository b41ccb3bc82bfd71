"""The drawn example every property, model and known divergence speaks of: a norm, its input in float64
(already representable in the tested dtype), its parameters and, for gradients, the output cotangent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normconf.reference import RunningStats

# squares of |x| above these overflow float16, float32: an "overflow" draw has most |x| well above
OVERFLOW_MAGNITUDE = {"float16": 6.0e4, "default": 1.0e30}


@dataclass
class Case:
    """One drawn example: the input in float64 (already representable in the tested dtype) and params."""

    norm: str
    x: np.ndarray
    params: dict
    kind: str
    cotangent: np.ndarray | None = None  # gradient properties: the output cotangent drawn with the case

    def _repr_pretty_(self, printer, cycle) -> None:
        """What hypothesis prints of a draw: the example's outline, not its arrays (printing 10^4
        values cost milliseconds on every covering example; the failure's repro has them all)."""
        params = {
            k: (v if np.isscalar(v) or v is None or isinstance(v, tuple) else "...")
            for k, v in self.params.items()
        }
        printer.text(f"Case({self.norm!r}, shape={self.x.shape}, values={self.kind!r}, params={params})")

    def describe(self) -> dict:
        return {
            "norm": self.norm,
            "shape": list(self.x.shape),
            "values": self.kind,
            "params": {k: _plain(v) for k, v in self.params.items()},
        }


def _plain(value):
    if isinstance(value, RunningStats):
        return {
            "mean": value.mean.tolist(),
            "var": value.var.tolist(),
            "num_batches_tracked": value.num_batches_tracked,
        }
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
