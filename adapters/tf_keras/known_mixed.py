"""tf_keras' known divergences under the mixed policy (tf_keras@mixed, spec MP): LayerNormalization's fused
kernel applies its affine in the half type (MP.D20), and NUM.D1 where the policy's output rounds the
offset. Every plain tf_keras entry names tf_keras@mixed too (vocabulary/records.py); known.py lists these
with them."""

from __future__ import annotations

import dataclasses

import numpy as np

from normconf.vocabulary import Case, Divergence, Simulated, half, param, reference_value, rounded
from normconf.vocabulary.builders import squares_overflow_mixed
from normconf.vocabulary.models import along

# LayerNormalization takes FusedBatchNormV3 for trailing contiguous axes and epsilon >= 1.001e-5 once its
# variables are float32 (_fused_can_be_used)
FUSED_EPS = 1.001e-5


# The models: what tf_keras computes under the policy where a divergence holds (vocabulary/models.py).
def _fused_layer_norm(case: Case, dtype: str) -> bool:
    """MP.D20: a half-type LayerNormalization with a scale or an offset that takes the fused kernel."""
    if not half(dtype) or (case.params.get("scale") is None and case.params.get("offset") is None):
        return False
    axes = sorted(a % case.x.ndim for a in param(case, "axes"))
    trailing = axes == list(range(case.x.ndim - len(axes), case.x.ndim))
    return trailing and param(case, "eps") >= FUSED_EPS


def _sequential(rows: np.ndarray, dtype: str) -> np.ndarray:
    total = np.zeros(rows.shape[1:])
    for row in rows:
        total = rounded(total + row, dtype)
    return total


def column_sums(terms: np.ndarray, rows: int, dtype: str) -> np.ndarray:
    """MP.D20: TF's reduce_sum of a half tensor (`rows` flattened leading rows) over its rows, as
    measured with TF 2.21 on an AVX2 CPU: bfloat16 accumulates in float32; float16 in float16, the
    columns in whole packets of 8 in four interleaved accumulators (rows i mod 4) added in order, then
    the rows left over, the other columns one running sum each (bit for bit on every shape tried)."""
    flat = terms.reshape(rows, -1)
    if dtype != "float16":
        return rounded(flat.sum(axis=0), dtype)
    width = 8 * (flat.shape[1] // 8)
    total = np.zeros(flat.shape[1])
    if width:
        whole = rows - rows % 4
        lanes = [_sequential(flat[i:whole:4, :width], dtype) for i in range(4)] if whole else []
        total[:width] = _sequential(np.array([*lanes, *flat[whole:, :width]]), dtype)
    total[width:] = _sequential(flat[:, width:], dtype)
    return total


def fused_affine_in_half(case: Case, dtype: str, which: str):
    """MP.D20: y = h(h(h(x̂) h(gamma)) + h(beta)) - FusedBatchNormV3's x̂ (float32 statistics) returned in
    the half type h, gamma and beta cast to it; dx = h(the affine-free VJP at the cotangent h(g h(gamma)));
    dgamma and dbeta TF's half-type column sums of h(g h(x̂)) and g over the rows (column_sums)."""
    params = case.params
    plain = dataclasses.replace(
        case, params={k: v for k, v in params.items() if k not in ("scale", "offset")}
    )
    xhat = rounded(reference_value(plain, "y"), dtype)
    scale, offset = params.get("scale"), params.get("offset")
    gamma = None if scale is None else rounded(along(case, scale), dtype)
    if which == "y":
        y = xhat if gamma is None else rounded(xhat * gamma, dtype)
        return y if offset is None else rounded(y + rounded(along(case, offset), dtype), dtype)
    g = case.cotangent
    if g is None:
        return None
    if which == "x":
        dyhat = g if gamma is None else rounded(g * gamma, dtype)
        return rounded(reference_value(dataclasses.replace(plain, cotangent=dyhat), "x"), dtype)
    rows = int(np.prod(case.x.shape[: case.x.ndim - len(param(case, "axes"))]))
    if which == "scale" and scale is not None:
        return column_sums(rounded(g * xhat, dtype), rows, dtype).reshape(np.shape(scale))
    if which == "offset" and offset is not None:
        return column_sums(np.asarray(g, dtype=np.float64), rows, dtype).reshape(np.shape(offset))
    return None


_ROWS = np.array(
    [[0.5, -1.25, 2.0, 0.75], [1.5, 0.25, -0.5, -2.0], [-1.0, 3.0, 0.125, 1.0]]
)  # exact in both half types

MIXED: list[Divergence] = [
    Divergence(
        adapters="tf_keras@mixed",
        norm="layer_norm",
        clause="MP.D20",
        reason=(
            "under a mixed policy LayerNormalization takes FusedBatchNormV3 (float32 variables), which "
            "returns x̂ in the half type, then multiplies by gamma and adds beta cast to it: the affine and "
            "its gradients in the half type"
        ),
        applies=_fused_layer_norm,
        example=lambda: (
            Case(
                "layer_norm",
                _ROWS,
                {
                    "axes": (-1,),
                    "eps": 1e-3,
                    "scale": rounded(np.array([1.1, 0.9, 1.3, 0.7]), "float32"),
                    # float32 offsets that cancel the first row's x̂ gamma to ~0.01: its roundings show
                    "offset": np.array(
                        [0.009999999776482582, 1.368187665939331, -1.6715656518936157, -0.14090973138809204]
                    ),
                },
                "standard",
            ),
            "bfloat16",
        ),
        model=Simulated(fused_affine_in_half),
    ),
    *squares_overflow_mixed("tf_keras@mixed", ("batch_norm",), running_var="biased"),
    *squares_overflow_mixed("tf_keras@mixed", ("layer_norm",)),
    *squares_overflow_mixed("tf_keras@mixed", ("group_norm",), half_in_half=True),
]
