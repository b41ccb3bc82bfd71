"""PyTorch's known divergences under the mixed policy (spec MP: torch.nn@mixed, torch.functional@mixed),
sorted by clause: each a model of what ATen computes there, measured with torch 2.14.1 and read from its
sources (spec/mixed_precision.md MP.D2-MP.D4; NUM.D1 as the policy's bfloat16 output holds it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from normconf import reference as R
from normconf.vocabulary import (
    Case,
    Computes,
    Divergence,
    Judged,
    Model,
    Raises,
    param,
    rounded,
    statistic_view,
)
from normconf.vocabulary import tolerances as T
from normconf.vocabulary.builders import squares_overflow_mixed

# -- MP.D2: a BatchNorm (InstanceNorm) with nothing in float32 ------------------------------------------


def _nothing_held_in_float32(case: Case, dtype: str) -> bool:
    """MP.D2's territory: a BatchNorm (InstanceNorm) call with no weight, no bias and no running
    statistics - the policy leaves nothing of the layer in float32."""
    return all(case.params.get(k) is None for k in ("scale", "offset", "state"))


def _statistics_in_input_dtype(case: Case, dtype: str, which: str):
    """y with mean and invstd rounded to the input's dtype (param_t), then (x - mean) * invstd rounded."""
    if which != "y":
        return None
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    mean, var = view.mean(axis=axes, keepdims=True), view.var(axis=axes, keepdims=True)
    with np.errstate(all="ignore"):
        invstd = 1.0 / np.sqrt(var + param(case, "eps"))
        return rounded((case.x - back(rounded(mean, dtype))) * back(rounded(invstd, dtype)), dtype)


# -- MP.D3: LayerNorm's parameter gradients summed in the input's dtype ------------------------------


def _rows(case: Case) -> tuple[np.ndarray, np.ndarray, tuple]:
    """x and the cotangent as ATen's LayerNorm sees them: (M rows, N normalized values), and the
    parameters' shape (the trailing axes)."""
    count = len(param(case, "axes"))
    shape = case.x.shape[case.x.ndim - count :]
    n = int(np.prod(shape, dtype=np.int64))
    g = np.broadcast_to(case.cotangent, case.x.shape)
    return case.x.reshape(-1, n), np.asarray(g, dtype=np.float64).reshape(-1, n), shape


def _row_splits(m: int) -> list[int]:
    """The rows per thread at::parallel_for(0, M, 1) hands each of t threads (ceil(M / t), t = 1..M: a
    thread count beyond M splits no finer): every split some machine's torch.get_num_threads() gives."""
    return sorted({-(-m // t) for t in range(1, max(m, 1) + 1)}, reverse=True)


def _buffered_sums(case: Case, dtype: str, which: str, rows: int):
    """(lo, hi): LayerNormBackwardKernelImplInternal's dgamma (which="scale") or dbeta ("offset") for
    threads of `rows` rows each - per thread a buffer in the input's dtype (`buffer` is X.options()) that
    each row adds to in float32 (dgamma: fma(dy, fma(rstd, x, -rstd * mean), buffer), measured bit for
    bit with ATen's own mean and rstd) and stores rounded back, then the threads' buffers summed in
    float32 in thread order. The mean and rstd here are float64's rounded to float32, ATen's (Welford,
    in float32) within a few float32 ulps: each row's term is carried as an interval that wide, and
    rounding is monotone, so ATen's answer lies in [lo, hi] - which is one value except where an
    interval straddles a rounding boundary of the buffer."""
    x, g, shape = _rows(case)
    u = T.unit_roundoff("float32")
    f32 = lambda v: rounded(v, "float32")  # noqa: E731
    if which == "scale":
        eps = param(case, "eps")
        mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
        with np.errstate(all="ignore"):
            rstd = f32(1.0 / np.sqrt(var + eps))
            term = g * f32(rstd * x + f32(-rstd * f32(mean)))
            # ATen's statistics within k float32 ulps of these (Welford: relative to the spread, and
            # to |x| / std where the values sit far from their mean), and each rounding after them
            k = T.SAFETY * T.growth(x.shape[1]) * u
            reach = np.max(np.abs(x), axis=1, keepdims=True)
            d_rstd = k * rstd * (1.0 + reach * rstd)
            d_inner = d_rstd * np.abs(x - mean) + rstd * k * reach + 2 * u * rstd * (reach + np.abs(mean))
            spread = np.abs(g) * d_inner + 2 * u * np.abs(term)
    else:
        term, spread = g, np.zeros_like(g)
    lo_total = hi_total = np.zeros(x.shape[1])
    with np.errstate(all="ignore"):
        for start in range(0, x.shape[0], rows):
            lo = hi = np.zeros(x.shape[1])
            for i in range(start, min(start + rows, x.shape[0])):
                lo = rounded(f32(lo + term[i] - spread[i]), dtype)
                hi = rounded(f32(hi + term[i] + spread[i]), dtype)
            lo_total, hi_total = f32(lo_total + lo), f32(hi_total + hi)
    return lo_total.reshape(shape), hi_total.reshape(shape)


@dataclass(frozen=True)
class BufferedRows(Model):
    """MP.D3's model: the parameter gradients as `_buffered_sums` gives them for one split of the rows
    among threads - agreeing where the simulation of some split does (the thread count is the
    machine's); within each split's interval [lo, hi] and the property's budget, nothing more. Other
    quantities (dx) are held to the reference."""

    sums: Callable = field(default=_buffered_sums)
    kind: str = field(default="precision", kw_only=True)

    def _split_model(self, rows: int) -> Computes:
        def interval(case, dtype, which):
            if which not in ("scale", "offset") or case.params.get(which) is None:
                return None
            return self.sums(case, dtype, which, rows)

        def middle(case, dtype, which):
            bounds = interval(case, dtype, which)
            return None if bounds is None else (bounds[0] + bounds[1]) / 2

        def half_width(case, dtype, which):
            bounds = interval(case, dtype, which)
            return None if bounds is None else (bounds[1] - bounds[0]) / 2

        return Computes(middle, absolute=half_width, kind=self.kind)

    def judge(self, observations, dtype):
        if not observations or observations[0].case.cotangent is None:
            return Judged(False, math.inf, "no cotangent: no parameter gradient to model")
        rows = _rows(observations[0].case)[0].shape[0]
        judged = []
        for split in _row_splits(rows):
            verdict = self._split_model(split).judge(observations, dtype)
            if verdict.agrees:
                return verdict
            judged.append(verdict)
        return min(judged, key=lambda j: j.miss, default=Judged(False, math.inf, "no rows"))

    def width(self, observation, dtype):
        rows = _rows(observation.case)[0].shape[0]
        widths = [
            np.asarray(self._split_model(split).width(observation, dtype), dtype=np.float64)
            for split in _row_splits(rows)
        ]
        return np.maximum.reduce(np.broadcast_arrays(*widths)) if len(widths) > 1 else widths[0]

    def describe(self) -> str:
        return "BufferedRows (parameter gradients summed per thread in the input's dtype)"


def _layer_norm_parameter_gradients(case: Case, dtype: str) -> bool:
    """MP.D3's territory: a half-precision LayerNorm backward with float32 weight or bias."""
    has_parameter = case.params.get("scale") is not None or case.params.get("offset") is not None
    return dtype in ("float16", "bfloat16") and case.cotangent is not None and has_parameter


def _layer_norm_example() -> tuple[Case, str]:
    """64 rows of 8: per thread a bfloat16 buffer summing up to 64 terms (g representable in bfloat16,
    as the policy draws it; the parameters float32 values bfloat16 cannot hold)."""
    rng = np.random.default_rng(0)
    x = rounded(rng.normal(size=(64, 8)), "bfloat16")
    g = rounded(rng.normal(size=(64, 8)), "bfloat16")
    params = {
        "axes": (-1,),
        "eps": 1e-5,
        "scale": rounded(1.0 + 0.1 * rng.normal(size=8), "float32"),
        "offset": rounded(0.1 * rng.normal(size=8), "float32"),
    }
    return Case("layer_norm", x, params, "standard", cotangent=g), "bfloat16"


# -- MP.D4: F.instance_norm without a weight takes its running statistics in the input's dtype ---------


def _running_stats_cast(case: Case, dtype: str) -> bool:
    """MP.D4's territory: an InstanceNorm call with running statistics and neither weight nor bias."""
    params = case.params
    return params.get("state") is not None and params.get("scale") is None and params.get("offset") is None


def _instance_norm_in_input_dtype(case: Case, dtype: str, which: str):
    """What at::instance_norm computes once it has cast the running statistics to the input's dtype
    (measured bit for bit, torch 2.14.1): the non-mixed kernel (param_t = the input's dtype). Training:
    y as MP.D2; each (sample, channel) updates its copy of the state as h(h(m) * h(mean)) +
    h(h(1 - m) * h(running)) for the mean and h(m) * h(h(var_sum) / (n - 1)) + h(h(1 - m) * h(running))
    for the variance (h: rounded to the input's dtype, the last sum too); the copies' mean over the batch
    is rounded to it before the float32 buffer takes it. Eval: y = h(x * a + b), a = 1 / sqrt(h(var) +
    eps) and b = -h(mean) * a in float32. momentum=None is torch.nn's 0.0 (IN.D5)."""
    training = param(case, "training")
    state = case.params["state"]
    h = lambda v: rounded(v, dtype)  # noqa: E731
    f32 = lambda v: rounded(v, "float32")  # noqa: E731
    along = (1, -1) + (1,) * (case.x.ndim - 2)
    if which == "y":
        if training:
            return _statistics_in_input_dtype(case, dtype, "y")
        with np.errstate(all="ignore"):
            a = f32(1.0 / np.sqrt(h(state.var) + param(case, "eps"))).reshape(along)
            b = f32(-h(state.mean).reshape(along) * a)
            return h(case.x * a + b)
    if which not in ("mean", "var") or not training:
        return None
    momentum = param(case, "momentum")
    m = h(0.0 if momentum is None else momentum)
    keep = h(1.0 - (0.0 if momentum is None else momentum))
    values = case.x.reshape(case.x.shape[0], case.x.shape[1], -1)
    n = values.shape[2]
    mean = values.mean(axis=2)
    with np.errstate(all="ignore"):
        if which == "mean":
            copies = h(h(m * h(mean)) + h(keep * h(state.mean)))
        else:
            var_sum = np.sum((values - mean[..., None]) ** 2, axis=2)
            copies = h(m * h(h(var_sum) / (n - 1)) + h(keep * h(state.var)))
        return h(f32(np.sum(copies, axis=0)) / values.shape[0])


def _instance_norm_example() -> tuple[Case, str]:
    """Eval from a float32 state bfloat16 cannot hold (a mean of 100.3 is read as 100.5): x - mean off by
    0.2 where it is ~1 (the training steps' bfloat16 state, the other half of MP.D4, shows in the suite's
    running-statistics property, whose state budget is float32's)."""
    rng = np.random.default_rng(0)
    x = rounded(np.array([100.3, -50.15, 0.3337]).reshape(1, 3, 1) + rng.normal(size=(2, 3, 4)), "bfloat16")
    state = R.RunningStats(
        rounded([100.3, -50.15, 0.3337], "float32"), rounded([1.0123456, 0.8765432, 1.3333333], "float32"), 3
    )
    params = {"eps": 1e-5, "momentum": 0.1, "training": False, "state": state}
    return Case("instance_norm", x, params, "standard"), "bfloat16"


_INSTANCE_NORM_BUG = (
    "F.instance_norm (and nn.InstanceNorm*d(affine=False, track_running_stats=True)) with a "
    "bfloat16 input and float32 running_mean/running_var converts the running statistics to "
    "bfloat16 before the batch_norm call and copies the bfloat16 result back: the float32 "
    "buffers are rounded to bfloat16 on every training step and read rounded in eval, where "
    "F.batch_norm with the same arguments keeps them float32 (its mixed-type kernel); with a "
    "float32 bias and no weight the call raises 'mixed dtype (CPU): expect parameter to have "
    "scalar type of Float'. Upstream: not found reported"
)

KNOWN: list[Divergence] = [
    *(
        Divergence(
            adapters="torch.*@mixed",
            norm=norm,
            clause="MP.D2",
            reason=(
                "with no weight, bias or running statistics nothing of the layer is float32: ATen's param_t "
                "is the input's dtype and mean and invstd are stored in bfloat16, as without the policy"
            ),
            applies=_nothing_held_in_float32,
            example=lambda norm=norm: (
                Case(
                    norm,
                    rounded(np.linspace(-2.0, 2.0, 24).reshape(2, 3, 4) ** 3 / 8 + 3.0, "bfloat16"),
                    {"channel_axis": 1, "eps": 1.0},
                    "wide",
                ),
                "bfloat16",
            ),
            # measured bit for bit (torch 2.14.1): 24 of 24 outputs of this example (values off their mean, so
            # that bfloat16's mean is off), in both adapters: 7x the float32 statistics' budget
            model=Computes(_statistics_in_input_dtype),
        )
        for norm in ("batch_norm", "instance_norm")
    ),
    Divergence(
        adapters="torch.*@mixed",
        norm="layer_norm",
        clause="MP.D3",
        reason=(
            "ATen's mixed-type LayerNorm backward sums dweight and dbias per thread in a buffer of the "
            "input's dtype (bfloat16), rounding after every row, and returns them as float32"
        ),
        applies=_layer_norm_parameter_gradients,
        example=_layer_norm_example,
        shows_in="gradient",
        bug=(
            "LayerNorm backward on CPU with a bfloat16 input and float32 weight/bias (the CPU autocast "
            "setup) accumulates grad_weight and grad_bias in a bfloat16 buffer (`buffer` is allocated with "
            "X.options() in LayerNormBackwardKernelImplInternal, layer_norm_kernel.cpp), rounding the "
            "running sum to bfloat16 after every row: the float32 parameter gradients carry bfloat16 "
            "summation error over the rows (8% / 22% off on a (8, 16, 32) example); GroupNorm and "
            "BatchNorm sum them in float32. Upstream: not found reported"
        ),
        model=BufferedRows(),
    ),
    Divergence(
        adapters="torch.*@mixed",
        norm="instance_norm",
        clause="MP.D4",
        reason=(
            "at::instance_norm casts float32 running statistics to the input's dtype when there is no "
            "weight: the running mean and variance move in bfloat16 steps, eval reads them rounded to "
            "bfloat16, and the batch statistics are bfloat16 (MP.D2's arithmetic)"
        ),
        applies=_running_stats_cast,
        example=_instance_norm_example,
        bug=_INSTANCE_NORM_BUG,
        model=Computes(_instance_norm_in_input_dtype),
    ),
    Divergence(
        adapters="torch.functional@mixed",
        norm="instance_norm",
        clause="MP.D4",
        reason="F.instance_norm with running statistics, a float32 bias and no weight casts the running "
        "statistics to bfloat16 but not the bias, and ATen refuses the mix: 'mixed dtype (CPU): expect "
        "parameter to have scalar type of Float'",
        applies=lambda case, dtype: (
            case.params.get("state") is not None
            and case.params.get("scale") is None
            and case.params.get("offset") is not None
        ),
        example=lambda: (
            Case(
                "instance_norm",
                rounded(np.linspace(-1.0, 1.0, 8).reshape(2, 1, 4), "bfloat16"),
                {"offset": np.array([0.1]), "training": True, "state": R.RunningStats.initial(1)},
                "standard",
            ),
            "bfloat16",
        ),
        bug=_INSTANCE_NORM_BUG,
        model=Raises(pattern="mixed dtype"),
    ),
    # NUM.D1 under the policy: the overflowing group's float32 offset, rounded to the bfloat16 output
    *squares_overflow_mixed("torch.*@mixed", ("batch_norm", "instance_norm", "layer_norm", "group_norm")),
]
