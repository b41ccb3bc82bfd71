"""Known divergences, as data: which adapter differs from the spec where, by which clause, and why.

An entry explains a failing comparison only for the examples its `applies` predicate accepts; the
suite then records an expected divergence (with the reason, which the report shows) instead of a
finding. Each entry carries a minimal `example` that must still diverge: a meta-test runs it, so an
entry that no longer matches anything is flagged rather than silently hiding a fixed framework.
An entry whose behaviour depends on the CPU says so (`cpu`): it explains failures only where that
dependency holds, and where it does not the meta-test checks that the adapter conforms (NUM.N10).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import numpy as np

from normconf.adapters._cpu import CpuDependency

from .strategies import Case


@dataclass(frozen=True)
class Divergence:
    adapters: str  # fnmatch pattern over adapter names
    norm: str
    clause: str  # the spec's D clause describing it
    reason: str
    applies: Callable[[Case, str], bool]  # (case, dtype) -> does this entry explain a failure there?
    example: Callable[[], tuple[Case, str]]  # a minimal (case, dtype) that shows the divergence
    shows_in: str = "forward"  # where the example diverges: "forward" output, "gradient", or running "state"
    non_finite: bool = False  # explains how NaN / ±inf inputs come out (NUM.N9): judged on the input as run
    cpu: CpuDependency | None = (
        None  # occurs only on CPUs where this holds (NUM.N10); elsewhere the adapter conforms
    )

    def holds_here(self) -> bool:
        """Whether this divergence occurs on this CPU under the ISA caps in force (always, without a
        `cpu`)."""
        return self.cpu is None or self.cpu.holds()

    def names(self, adapter: str) -> bool:
        """Whether this entry's adapter pattern names `adapter` (`*` is the only wildcard: names hold `[`)."""
        return adapter == self.adapters or (
            "*" in self.adapters and fnmatch.fnmatchcase(adapter, self.adapters)
        )

    def matches(self, adapter: str, norm: str, case: Case, dtype: str) -> bool:
        return (
            self.names(adapter)
            and norm in INHERITS.get(self.norm, (self.norm,))
            and self.holds_here()
            and self.applies(case, dtype)
        )


# A synchronized BatchNorm is its framework's BatchNorm with pooled statistics (spec/sync_batch_norm.md):
# what that BatchNorm does differently, its synchronized form does too.
INHERITS = {"batch_norm": ("batch_norm", "sync_batch_norm")}


def _offset_rows(shape=(2, 64), offset=1e4, seed=0) -> np.ndarray:
    return offset + np.random.default_rng(seed).normal(size=shape)


KNOWN: list[Divergence] = []


def explaining(
    adapter: str, norm: str, case: Case, dtype: str, non_finite_only: bool = False
) -> Divergence | None:
    for entry in KNOWN:
        if (entry.non_finite or not non_finite_only) and entry.matches(adapter, norm, case, dtype):
            return entry
    return None


def _values_per_statistic(case: Case) -> int:
    from .checks import reduction_length

    return reduction_length(case.norm, case.x, case.params)


def _batch_stats(case: Case) -> bool:
    return case.params.get("training", True) or case.params.get("state") is None


def _torch_group_check(case: Case) -> bool:
    x, groups = case.x, case.params["groups"]
    spatial = int(
        np.prod(
            [s for i, s in enumerate(x.shape) if i not in (0, case.params.get("channel_axis", 1) % x.ndim)]
        )
    )
    return x.shape[0] * (x.shape[case.params.get("channel_axis", 1) % x.ndim] // groups) * spatial == 1


KNOWN += [
    Divergence(
        "torch.*",
        "batch_norm",
        "BN.D6",
        "PyTorch raises 'Expected more than 1 value per channel when training' for one value per channel",
        lambda case, dtype: _batch_stats(case) and _values_per_statistic(case) == 1,
        lambda: (Case("batch_norm", np.array([[0.5, -1.0]]), {"training": True}, "standard"), "float64"),
    ),
    Divergence(
        "torch.*",
        "instance_norm",
        "IN.D3",
        "PyTorch raises 'Expected more than 1 spatial element when training' for one spatial value",
        lambda case, dtype: _batch_stats(case) and _values_per_statistic(case) == 1,
        lambda: (
            Case("instance_norm", np.array([[[0.5], [-1.0]]]), {"training": True}, "standard"),
            "float64",
        ),
    ),
    Divergence(
        "torch.*",
        "group_norm",
        "GN.D5",
        "PyTorch's F.group_norm raises 'Expected more than 1 value per channel' when N*(C/G)*spatial == 1",
        lambda case, dtype: _torch_group_check(case),
        lambda: (Case("group_norm", np.array([[0.5, -1.0]]), {"groups": 2}, "standard"), "float64"),
    ),
]


def _max_abs(case: Case) -> float:
    return float(np.max(np.abs(case.x))) if case.x.size else 0.0


KNOWN += [
    Divergence(
        "torch.*",
        "local_response_norm",
        "LRN.D3",
        "PyTorch squares in the input dtype: float16 x*x overflows for |x| > 255.9",
        lambda case, dtype: dtype == "float16" and _max_abs(case) > 255.9,
        lambda: (Case("local_response_norm", np.array([[[300.0], [1.0]]]), {"size": 2}, "large"), "float16"),
    ),
    Divergence(
        "torch.functional",
        "lp_normalize",
        "LP.D4",
        "PyTorch's p-norm raises |x| to p (and squares the norm in the backward) in the input dtype: "
        "it over- or underflows",
        lambda case, dtype: (
            dtype != "float64"
            and (
                _max_abs(case) ** case.params.get("p", 2.0) > _huge(dtype)
                or 0 < _max_abs(case) ** case.params.get("p", 2.0) < _tiny(dtype)
                or _norm_of(case) ** 2 > _huge(dtype)
            )
        ),
        lambda: (
            Case("lp_normalize", np.array([3e19, 4e19]), {"axes": (0,), "eps": 0.0}, "large"),
            "float32",
        ),
    ),
    Divergence(
        "torch.*",
        "batch_norm",
        "BN.D11",
        "PyTorch half-precision BatchNorm stores invstd in float16: inf when var + eps < 2^-32",
        lambda case, dtype: dtype == "float16" and case.params.get("eps", 1e-5) < 2.0**-32,
        lambda: (Case("batch_norm", np.array([[[1e4, 1e4]]]), {"eps": 1e-12}, "constant_channel"), "float16"),
    ),
]
KNOWN.append(
    Divergence(
        "torch.*",
        "instance_norm",
        "BN.D11",
        "PyTorch's InstanceNorm runs the BatchNorm kernel: "
        "in float16 invstd overflows when var + eps < 2^-32",
        lambda case, dtype: dtype == "float16" and case.params.get("eps", 1e-5) < 2.0**-32,
        lambda: (
            Case("instance_norm", np.array([[[1e4, 1e4]]]), {"eps": 1e-12}, "constant_channel"),
            "float16",
        ),
    )
)
KNOWN.append(
    Divergence(
        "onnx.reference",
        "local_response_norm",
        "LRN.D4",
        "onnx.reference's LRN loops over the batch axis: "
        "with N != C channels get no window or it raises IndexError",
        lambda case, dtype: case.x.shape[0] != case.x.shape[case.params.get("channel_axis", 1) % case.x.ndim],
        lambda: (
            Case(
                "local_response_norm",
                np.arange(1.0, 13.0).reshape(1, 3, 2, 2),
                {"size": 3, "alpha": 0.5, "extra": "after"},
                "standard",
            ),
            "float64",
        ),
    )
)

KNOWN.append(
    Divergence(
        "tf.nn",
        "local_response_norm",
        "LRN.D10",
        "TF's CPU LRN multiplies the squares by a 0/1 band matrix: "
        "a NaN or ±inf makes NaN of channels outside its window",
        lambda case, dtype: not np.all(np.isfinite(case.x)),
        lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1.0, np.nan, 2.0, 3.0, 1.0, 2.0]]]]),
                {"size": 1, "channel_axis": 3, "alpha": 1.0, "beta": 0.5, "k": 1.0, "alpha_over_size": False},
                "standard",
            ),
            "float32",
        ),
        non_finite=True,
    )
)


def _norm_of(case: Case) -> float:
    from normconf.reference.lp_normalize import lp_norm

    axes = tuple(a % case.x.ndim for a in case.params.get("axes", (1,)))
    return (
        float(np.max(lp_norm(case.x, case.params.get("p", 2.0), axes), initial=0.0)) if case.x.size else 0.0
    )


def _half_rstd_overflow(case: Case, dtype: str) -> bool:
    return dtype == "float16" and case.params.get("eps", 1e-5) < 2.0**-32


KNOWN += [
    Divergence(
        "torch.*",
        "layer_norm",
        "LN.D5",
        "PyTorch saves rstd in float16 for the backward: inf (NaN gradient) when var + eps < 2^-32",
        _half_rstd_overflow,
        lambda: (
            Case("layer_norm", np.array([[0.125]]), {"axes": (-1,), "eps": 1e-12}, "standard"),
            "float16",
        ),
        "gradient",
    ),
    Divergence(
        "torch.*",
        "group_norm",
        "LN.D5",
        "PyTorch saves rstd in float16 for the backward: inf (NaN gradient) when var + eps < 2^-32",
        _half_rstd_overflow,
        lambda: (
            Case("group_norm", np.array([[[1e4, 1e4]]]), {"groups": 1, "eps": 1e-12}, "constant_channel"),
            "float16",
        ),
        "gradient",
    ),
    Divergence(
        "torch.*",
        "rms_norm",
        "RMS.D3",
        "PyTorch differentiates rsqrt(mean(x^2)) in float32: the -1/2 m^(-3/2) term underflows for m > ~1e25",
        lambda case, dtype: dtype != "float64" and _max_abs(case) > 1e12,
        lambda: (Case("rms_norm", np.array([1.25e18]), {"axes": (0,), "eps": 1e-12}, "large"), "float32"),
        "gradient",
    ),
    Divergence(
        "torch.*",
        "local_response_norm",
        "LRN.D5",
        "PyTorch's derivative of base^-beta, -beta base^(-beta-1), "
        "underflows in the input dtype for large |x|",
        lambda case, dtype: dtype != "float64" and _lrn_base_power(case) > 1.0 / _tiny(dtype),
        lambda: (Case("local_response_norm", np.array([[[1.25e18]]]), {"size": 1}, "large"), "float32"),
        "gradient",
    ),
]


def _tiny(dtype: str) -> float:
    from .tolerances import finfo

    return float(finfo(dtype).tiny)


def _huge(dtype: str) -> float:
    from .tolerances import finfo

    return float(finfo(dtype).max)


def _lrn_base_power(case: Case) -> float:
    p = case.params
    a = p.get("alpha", 1e-4) / (p["size"] if p.get("alpha_over_size", True) else 1)
    base = p.get("k", 1.0) + a * p["size"] * _max_abs(case) ** 2
    return base ** (p.get("beta", 0.75) + 1.0)


def _rstd_scaled_input(case: Case) -> float:
    from .checks import statistic_view

    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    rstd = 1.0 / np.sqrt(view.var(axis=axes) + case.params.get("eps", 1e-5))
    return _max_abs(case) * float(np.max(rstd, initial=0.0))


KNOWN.append(
    Divergence(
        "torch.*",
        "layer_norm",
        "LN.D6",
        "PyTorch's float32 LayerNorm backward overflows to inf where |x| * rstd is beyond ~1e19",
        lambda case, dtype: dtype != "float64" and _rstd_scaled_input(case) ** 2 > _huge(dtype),
        lambda: (Case("layer_norm", np.array([1.25e18]), {"axes": (0,), "eps": 1e-12}, "large"), "float32"),
        "gradient",
    )
)
KNOWN.append(
    Divergence(
        "torch.functional",
        "lp_normalize",
        "LP.D5",
        "PyTorch casts eps to the input dtype: "
        "in float16 eps below 3e-8 becomes 0, and rows of norm below it divide by 0",
        lambda case, dtype: (
            dtype == "float16"
            and float(np.float16(case.params.get("eps", 1e-12))) != case.params.get("eps", 1e-12)
            and _min_norm(case) < case.params.get("eps", 1e-12)
        ),
        lambda: (
            Case("lp_normalize", np.zeros((1, 2)), {"axes": (-1,), "eps": 1e-12}, "integers"),
            "float16",
        ),
    )
)


def _min_norm(case: Case) -> float:
    from normconf.reference.lp_normalize import lp_norm

    axes = tuple(a % case.x.ndim for a in case.params.get("axes", (1,)))
    return (
        float(np.min(lp_norm(case.x, case.params.get("p", 2.0), axes), initial=np.inf))
        if case.x.size
        else np.inf
    )


KNOWN.append(
    Divergence(
        "torch.*",
        "group_norm",
        "LN.D6",
        "PyTorch's float32 GroupNorm backward overflows to inf/NaN where |x| * rstd is beyond ~1e19",
        lambda case, dtype: dtype != "float64" and _rstd_scaled_input(case) ** 2 > _huge(dtype),
        lambda: (
            Case("group_norm", np.array([[[1.25e18, 1.25e18]]]), {"groups": 1, "eps": 1e-12}, "large"),
            "float32",
        ),
        "gradient",
    )
)


def _kappa(case: Case) -> float:
    from .checks import statistic_view
    from .tolerances import conditioning

    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    return float(np.max(conditioning(view, axes, case.params.get("eps", 1e-5)), initial=1.0))


def _half(dtype: str) -> bool:
    return dtype in ("float16", "bfloat16")


KNOWN += [
    Divergence(
        "onnx*",
        "group_norm",
        "GN.D4",
        "ONNX's GroupNormalization function body computes E[x^2] - E[x]^2 (float32 stash): "
        "offsets lose every digit",
        lambda case, dtype: _one_pass_exceeds_budget(case, dtype, clip=False),
        lambda: (
            Case(
                "group_norm",
                1e4 + np.array([[0.5, -0.25, 0.125, -0.5]]),
                {"groups": 1, "eps": 2.0**-20},
                "offset",
            ),
            "float32",
        ),
    ),
    Divergence(
        "onnxruntime",
        "local_response_norm",
        "LRN.D6",
        "onnxruntime slides a running sum of squares along the channels: error grows with all squares seen",
        lambda case, dtype: case.x.shape[case.params.get("channel_axis", 1) % case.x.ndim] > 1,
        lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1e18]], [[1.0]], [[1.0]], [[1.0]]]]),
                {"size": 1, "alpha": 1.0, "extra": "after"},
                "large",
            ),
            "float32",
        ),
    ),
    Divergence(
        "onnx.reference",
        "group_norm",
        "GN.D6",
        "onnx.reference applies GroupNormalization's scale and bias in the input dtype",
        lambda case, dtype: _half(dtype),
        lambda: (
            Case(
                "group_norm",
                np.array([[[1.0, 3.0], [2.0, 2.5]]]),
                {
                    "groups": 1,
                    "eps": 2.0**-20,
                    "scale": np.array([1.0, 1.5]),
                    "offset": np.array([-0.9921875, 1.25]),
                },
                "standard",
            ),
            "float16",
        ),
    ),
]


def _float32_inexact(value: float) -> bool:
    return float(np.float32(value)) != value


KNOWN += [
    Divergence(
        "onnx.reference",
        "lp_normalize",
        "LP.D3",
        "onnx.reference's LpNormalization omits abs(): "
        "for p = 1 the 'norm' of mixed or negative values is a signed sum",
        lambda case, dtype: case.params.get("p", 2.0) == 1.0 and bool(np.any(case.x < 0)),
        lambda: (
            Case(
                "lp_normalize",
                np.array([[1.0, -1.0, 2.0]]),
                {"p": 1.0, "axes": (-1,), "eps": 0.0, "eps_placement": "none_or_zero"},
                "integers",
            ),
            "float64",
        ),
    ),
    Divergence(
        "onnx.reference",
        "local_response_norm",
        "LRN.D7",
        "onnx.reference keeps alpha/size in float32 and squares in the input dtype",
        lambda case, dtype: (
            (dtype == "float64" and _float32_inexact(case.params.get("alpha", 1e-4) / case.params["size"]))
            or (dtype == "float16" and _max_abs(case) > 255.9)
        ),
        lambda: (
            Case(
                "local_response_norm",
                np.array([[[[0.75]]]]),
                {"size": 3, "alpha": 1.0, "beta": 0.5, "extra": "after"},
                "standard",
            ),
            "float64",
        ),
    ),
]
KNOWN += [
    Divergence(
        "onnx.reference",
        "batch_norm",
        "BN.D12",
        "onnx.reference takes float16 batch statistics with NumPy in float16: "
        "the variance overflows past |x| ~ 256",
        lambda case, dtype: dtype == "float16" and _max_abs(case) > 255.9 and _batch_stats(case),
        lambda: (
            Case("batch_norm", np.array([[-300.0], [300.0]]), {"eps": 2.0**-20, "training": True}, "large"),
            "float16",
        ),
    ),
    Divergence(
        "onnx.reference",
        "lp_normalize",
        "LP.D4",
        "onnx.reference sums |x|^p in the input dtype: it over- or underflows",
        lambda case, dtype: (
            dtype != "float64"
            and (
                _max_abs(case) ** case.params.get("p", 2.0) > _huge(dtype)
                or _norm_of(case) ** case.params.get("p", 2.0) > _huge(dtype)
                or 0 < _max_abs(case) ** case.params.get("p", 2.0) < _tiny(dtype)
            )
        ),
        lambda: (
            Case(
                "lp_normalize",
                np.array([[300.0, 400.0]]),
                {"axes": (-1,), "eps": 0.0, "eps_placement": "none_or_zero"},
                "large",
            ),
            "float16",
        ),
    ),
]


def _eps_underflows(case: Case, dtype: str) -> bool:
    return dtype == "float16" and float(np.float16(case.params.get("eps", 1e-5))) != case.params.get(
        "eps", 1e-5
    )


KNOWN += [
    Divergence(
        "onnx.reference",
        "layer_norm",
        "LN.D7",
        "onnx.reference ignores stash_type: float16 statistics (and eps) are computed and rounded in float16",
        lambda case, dtype: _eps_underflows(case, dtype) or (dtype == "float16" and _max_abs(case) > 255.9),
        lambda: (
            Case("layer_norm", np.array([[-300.0, 300.0]]), {"axes": (-1,), "eps": 2.0**-20}, "large"),
            "float16",
        ),
    ),
    Divergence(
        "onnx.reference",
        "rms_norm",
        "RMS.D4",
        "onnx.reference ignores stash_type: float16 mean squares overflow past |x| ~ 256",
        lambda case, dtype: _eps_underflows(case, dtype) or (dtype == "float16" and _max_abs(case) > 255.9),
        lambda: (
            Case("rms_norm", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 2.0**-20}, "large"),
            "float16",
        ),
    ),
]


def one_pass_standardized(
    x: np.ndarray, axes: tuple[int, ...], eps: float, dtype: str, clip: bool
) -> np.ndarray:
    """x̂ with var = E[x^2] - E[x]^2 in `dtype` (clipped at 0 when `clip`): the one-pass formula of
    BN.D4 / BN.D8 / LN.D4 / GN.D4."""
    if dtype == "bfloat16":  # NumPy knows it through ml_dtypes only
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    with np.errstate(all="ignore"):
        xd = np.asarray(x, dtype=np.float64).astype(dtype)
        mean = xd.mean(axis=axes, keepdims=True, dtype=dtype)
        var = (xd * xd).mean(axis=axes, keepdims=True, dtype=dtype) - mean * mean
        var = np.maximum(var, 0) if clip else var
        return ((xd - mean) / np.sqrt(var + np.asarray(eps, dtype=dtype))).astype(np.float64)


def _one_pass_exceeds_budget(case: Case, dtype: str, clip: bool, acc: str = "float32") -> bool:
    """Does honest one-pass arithmetic in `acc` itself break the NUM.N5/N6 budget on this example?"""
    from normconf import reference as R

    from . import checks

    view, axes, back = checks.statistic_view(case.norm, case.x, case.params)
    eps = case.params.get("eps", 1e-5)
    xhat = back(one_pass_standardized(view, axes, eps, "float64" if dtype == "float64" else acc, clip))
    plain = {k: v for k, v in case.params.items() if k not in ("scale", "offset")}
    ref = getattr(R, case.norm)(case.x, **plain)
    ref = getattr(ref, "y", ref)
    bound, _ = checks.budget(
        case.norm, case.x, plain, ref, acc_dtype=acc if dtype != "float64" else dtype, out_dtype=dtype
    )
    with np.errstate(invalid="ignore"):
        # an eighth of the budget: the simulation's summation order is not the framework's
        return bool(np.any(~np.isfinite(xhat) | (np.abs(xhat - ref) > bound / 8)))


KNOWN += [
    Divergence(
        "torch.*",
        norm,
        "BN.D13",
        "PyTorch raises 'batch_norm eps must be positive during training' for eps = 0",
        lambda case, dtype: case.params.get("eps", 1e-5) == 0 and _batch_stats(case),
        lambda norm=norm: (
            Case(norm, np.array([[[0.5, -1.0, 2.0]]]), {"eps": 0.0, "training": True}, "standard"),
            "float64",
        ),
    )
    for norm in ("batch_norm",)
]


def _flax_one_pass(case: Case, dtype: str) -> bool:
    return _one_pass_exceeds_budget(case, dtype, clip=True, acc="float32")


def _input_dtype_one_pass(case: Case, dtype: str) -> bool:
    return _one_pass_exceeds_budget(case, dtype, clip=False, acc=dtype)


def _unclipped_one_pass_can_go_negative(case: Case, dtype: str) -> bool:
    """BN.D8, haiku: mean(x²) − mean² unclipped, in the input dtype, each mean a sum times 1/n (as XLA
    divides) — on a (near-)constant channel it can come out a few ulps of mean(x²) below 0, and with
    eps smaller than that rsqrt(var + eps) is NaN. True where var + eps is within 4 ulps of mean(x²)."""
    from . import checks

    if not _batch_stats(case) or not case.x.size:
        return False
    view, axes, _ = checks.statistic_view(case.norm, case.x, case.params)
    unit = float(np.finfo(np.float32 if dtype in ("float16", "bfloat16") else np.dtype(dtype)).eps)
    unit = 2.0**-8 if dtype == "bfloat16" else 2.0**-11 if dtype == "float16" else unit
    with np.errstate(over="ignore", invalid="ignore"):
        mean_square = np.mean(view * view, axis=axes)
        return bool(np.any(view.var(axis=axes) + case.params.get("eps", 1e-5) <= 4 * unit * mean_square))


_CONSTANT_30 = np.full((30, 1), 1.5)  # mean(x) and mean(x²) multiplied by fl(1/30): var comes out < 0


def _keras_sync_one_pass(case: Case, dtype: str) -> bool:
    return _one_pass_exceeds_budget(case, dtype, clip=True, acc="float32")


_OFFSET_ROWS = 1e4 + np.array([[0.5, -0.25, 0.125, -0.5, 0.25, 0.0]])
KNOWN += (
    [
        Divergence(
            "flax.*",
            "batch_norm",
            "BN.D8",
            "flax computes the variance in one pass (use_fast_variance=True)",
            _flax_one_pass,
            lambda: (
                Case(
                    "batch_norm",
                    _OFFSET_ROWS.T.copy(),
                    {"channel_axis": -1, "eps": 2.0**-20, "training": True},
                    "offset",
                ),
                "float32",
            ),
        ),
        Divergence(
            "haiku",
            "batch_norm",
            "BN.D8",
            "haiku computes the variance in one pass, unclipped, in the input dtype",
            _input_dtype_one_pass,
            lambda: (
                Case(
                    "batch_norm",
                    _OFFSET_ROWS.T.copy(),
                    {"channel_axis": -1, "eps": 2.0**-20, "training": True},
                    "offset",
                ),
                "float32",
            ),
        ),
        Divergence(
            "haiku",
            "batch_norm",
            "BN.D8",
            "haiku's unclipped one-pass variance goes below 0 on a constant channel: "
            "NaN where eps is smaller",
            _unclipped_one_pass_can_go_negative,
            lambda: (
                Case(
                    "batch_norm",
                    _CONSTANT_30,
                    {"channel_axis": -1, "eps": 1e-12, "training": True},
                    "constant_channel",
                ),
                "float32",
            ),
        ),
    ]
    + [
        Divergence(
            "flax.*",
            norm,
            "LN.D4",
            "flax computes the variance in one pass (use_fast_variance=True)",
            _flax_one_pass,
            lambda norm=norm, shape=shape, extra=extra: (
                Case(norm, _OFFSET_ROWS.reshape(shape), {"eps": 2.0**-20, **extra}, "offset"),
                "float32",
            ),
        )
        for norm, shape, extra in (
            ("layer_norm", (1, 6), {"axes": (-1,)}),
            ("instance_norm", (1, 6, 1), {"channel_axis": -1}),
            ("group_norm", (1, 6), {"groups": 1, "channel_axis": -1}),
        )
    ]
    + [
        Divergence(
            name,
            norm,
            "BN.D14",
            "float16 statistics: eps below ~3e-8 rounds to 0 and a zero variance gives 0/0",
            _eps_underflows,
            lambda norm=norm, x=x, extra=extra: (
                Case(norm, x, {"eps": 1e-12, **extra}, "constant_channel"),
                "float16",
            ),
        )
        for name, norms in (
            ("tf.nn", ("batch_norm",)),
            ("haiku", ("batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm")),
            ("equinox", ("batch_norm",)),
        )
        for norm, x, extra in (
            ("batch_norm", np.array([[0.5, 0.5]]), {"channel_axis": -1, "training": True}),
            ("layer_norm", np.array([[0.5, 0.5]]), {"axes": (-1,)}),
            ("instance_norm", np.array([[[0.5], [0.5]]]), {"channel_axis": -1}),
            ("group_norm", np.array([[0.5, 0.5]]), {"groups": 1, "channel_axis": -1}),
            ("rms_norm", np.zeros((1, 2)), {"axes": (-1,)}),
        )
        if norm in norms
    ]
)


def _axes_of(case: Case) -> list[int]:
    return sorted(a % case.x.ndim for a in case.params.get("axes", (-1,)))


def _non_trailing(case: Case) -> bool:
    axes = _axes_of(case)
    return axes != list(range(case.x.ndim - len(axes), case.x.ndim))


def _contiguous_non_trailing(case: Case) -> bool:
    axes = _axes_of(case)
    return _non_trailing(case) and axes == list(range(axes[0], axes[0] + len(axes)))


def _keras_one_pass(case: Case, dtype: str) -> bool:
    return _one_pass_exceeds_budget(case, dtype, clip=False, acc="float32")


_WIDE = np.arange(18.0).reshape(2, 3, 3) / 7.0
# 16 values offset by 1e3 from a unit spread, exact in float32: one-pass float32 variance fails here
_KERAS_ROWS = (1e3 + np.random.default_rng(0).normal(size=16)).astype(np.float32).astype(np.float64)
KNOWN += (
    [
        Divergence(
            name,
            norm,
            "BN.D4",
            "Keras' torch and numpy backends compute the variance in one pass, unclipped",
            _keras_one_pass,
            lambda norm=norm, shape=shape, extra=extra: (
                Case(norm, _KERAS_ROWS.reshape(shape), {"eps": 2.0**-20, **extra}, "offset"),
                "float32",
            ),
        )
        for name in ("keras[torch]", "keras[numpy]")
        for norm, shape, extra in (
            ("batch_norm", (16, 1), {"channel_axis": -1, "training": True, "running_var": "biased"}),
            ("layer_norm", (1, 16), {"axes": (-1,)}),
            ("group_norm", (1, 16), {"groups": 1, "channel_axis": -1}),
        )
        if not (name == "keras[torch]" and norm == "layer_norm")  # F.layer_norm there: two-pass (LN.D8)
    ]
    + [
        Divergence(
            "keras[tensorflow]",
            "sync_batch_norm",
            "SBN.D2",
            "Keras' synchronized BatchNorm pools E[x^2] - mean^2 (one pass, clipped at 0; SBN.N2)",
            _keras_sync_one_pass,
            lambda: (
                Case(
                    "sync_batch_norm",
                    _KERAS_ROWS.reshape(16, 1),
                    {
                        "channel_axis": -1,
                        "eps": 2.0**-20,
                        "training": True,
                        "replica_sizes": (8, 8),
                        "weighting": "count",
                        "running_var": "biased",
                    },
                    "offset",
                ),
                "float32",
            ),
        ),
        Divergence(
            "keras*",
            "rms_norm",
            "RMS.D5",
            "Keras RMSNormalization multiplies an unreshaped scale on non-trailing axes",
            lambda case, dtype: _non_trailing(case),
            lambda: (
                Case(
                    "rms_norm",
                    _WIDE,
                    {"axes": (1,), "eps": 2.0**-20, "scale": np.array([1.0, 2.0, 3.0])},
                    "standard",
                ),
                "float32",
            ),
        ),
        Divergence(
            "keras[torch]",
            "rms_norm",
            "RMS.D6",
            "Keras' torch backend normalizes the trailing axes instead",
            lambda case, dtype: _contiguous_non_trailing(case),
            lambda: (Case("rms_norm", _WIDE, {"axes": (1,), "eps": 2.0**-20}, "standard"), "float32"),
        ),
        Divergence(
            "keras[torch]",
            "layer_norm",
            "LN.D8",
            "Keras' torch backend normalizes the trailing axes instead",
            lambda case, dtype: _contiguous_non_trailing(case),
            lambda: (Case("layer_norm", _WIDE, {"axes": (1,), "eps": 2.0**-20}, "standard"), "float32"),
        ),
    ]
    + [
        Divergence(
            name,
            "lp_normalize",
            "LP.D6",
            "Keras 3.15 UnitNormalization's gradient at a zero vector is inf",
            lambda case, dtype: _min_norm(case) == 0,
            lambda: (
                Case("lp_normalize", np.zeros((3, 1)), {"axes": (0,), "eps": 1e-12}, "integers"),
                "float64",
            ),
            "gradient",
        )
        for name in ("keras[jax]", "keras[torch]")
    ]
    + [
        Divergence(
            "tf.nn",
            "lp_normalize",
            "LP.D6",
            "TF's l2_normalize gradient underflows in float32 at huge |x|",
            lambda case, dtype: dtype != "float64" and _max_abs(case) > 1e15,
            lambda: (
                Case(
                    "lp_normalize",
                    np.array([[3.8e18, 1.0]]),
                    {"axes": (-1,), "eps": 1e-12, "eps_placement": "max_power_sum"},
                    "large",
                ),
                "float32",
            ),
            "gradient",
        ),
    ]
)
KNOWN += [
    Divergence(
        "flax.nnx",
        "batch_norm",
        "BN.D15",
        "flax.nnx stores float64 running statistics in float32 (param_dtype)",
        lambda case, dtype: (
            dtype == "float64" and case.params.get("state") is not None and case.params.get("training", True)
        ),
        lambda: (
            Case(
                "batch_norm",
                np.array([[0.1], [0.7], [1.3]]),
                {
                    "channel_axis": -1,
                    "eps": 2.0**-20,
                    "momentum": 0.5,
                    "running_var": "biased",
                    "training": True,
                    "state": __import__("normconf").reference.RunningStats(
                        np.array([0.1]), np.array([0.3]), 0
                    ),
                },
                "standard",
            ),
            "float64",
        ),
        "state",
    ),
    Divergence(
        "equinox",
        "batch_norm",
        "BN.D10",
        "equinox BatchNorm ('ema' mode) normalizes training batches with its running averages",
        lambda case, dtype: case.params.get("training", True) and case.params.get("state") is not None,
        lambda: (
            Case(
                "batch_norm",
                np.array([[0.1, 2.0], [0.7, -1.0], [1.3, 0.5]]),
                {
                    "channel_axis": -1,
                    "momentum": 0.01,
                    "running_var": "biased",
                    "training": True,
                    "state": __import__("normconf").reference.RunningStats(
                        np.array([5.0, -3.0]), np.array([4.0, 0.25]), 3
                    ),
                },
                "standard",
            ),
            "float64",
        ),
    ),
]


def _paddle_p_norm_backward(case: Case, dtype: str) -> bool:
    """LP.D7: Paddle's p-norm backward divides by norm^(p-1) + eps; visible once eps / norm^(p-1)
    passes u/16."""
    from .tolerances import finfo

    p, eps = case.params.get("p", 2.0), case.params.get("eps", 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        # NumPy floats: a zero row's norm gives inf here, where Python floats raise ZeroDivisionError
        return eps > 0 and bool(
            np.float64(eps) / np.float64(_min_norm(case)) ** (p - 1.0) > float(finfo(dtype).eps) / 16
        )


def _power_of_two(size: int) -> bool:
    return size & (size - 1) == 0


KNOWN += [
    Divergence(
        "paddle.*",
        "batch_norm",
        "BN.D16",
        "Paddle's CPU batch_norm returns x unchanged (no affine, no running update) when N*spatial == 1",
        lambda case, dtype: _batch_stats(case) and _values_per_statistic(case) == 1,
        lambda: (
            Case(
                "batch_norm", np.array([[0.5, -1.0]]), {"training": True, "running_var": "biased"}, "standard"
            ),
            "float64",
        ),
    ),
    Divergence(
        "paddle.*",
        "group_norm",
        "GN.D7",
        "Paddle's CPU group_norm computes max(E[x^2] - mean^2, 0) in the input dtype",
        lambda case, dtype: _one_pass_exceeds_budget(case, dtype, clip=True, acc=dtype),
        lambda: (
            Case("group_norm", _OFFSET_ROWS.copy(), {"groups": 1, "eps": 2.0**-20}, "offset"),
            "float32",
        ),
    ),
    Divergence(
        "paddle.*",
        "local_response_norm",
        "LRN.D8",
        "Paddle's average-pool backward scales by 1/size in float32: float64 LRN gradients are off by ~1e-8",
        lambda case, dtype: dtype == "float64" and not _power_of_two(case.params["size"]),
        lambda: (
            Case(
                "local_response_norm",
                np.arange(1.0, 7.0).reshape(1, 6, 1),
                {"size": 3, "alpha": 1.0},
                "standard",
            ),
            "float64",
        ),
        "gradient",
    ),
    Divergence(
        "paddle.functional",
        "lp_normalize",
        "LP.D7",
        "Paddle's p-norm backward divides by norm^(p-1) + eps: not the derivative of the forward",
        _paddle_p_norm_backward,
        lambda: (
            Case("lp_normalize", np.array([[0.6, 0.8]]), {"axes": (-1,), "eps": 1e-6}, "standard"),
            "float64",
        ),
        "gradient",
    ),
]


def _mlx_statistics_dtype(case: Case, dtype: str) -> str:
    """The dtype mlx.nn computes a case's statistics in: float32 in mx.fast's CPU fallback (LayerNorm,
    InstanceNorm, RMSNorm, GroupNorm(pytorch_compatible=True)), the input dtype in mx.mean / mx.var."""
    fast = case.norm in ("layer_norm", "instance_norm", "rms_norm") or (
        case.norm == "group_norm" and case.params.get("assignment", "contiguous") == "contiguous"
    )
    return "float32" if fast else dtype


def _mlx_float32_range(case: Case, dtype: str) -> bool:
    """LN.D9 / RMS.D3: float32-range statistics v (variance, or mean square for RMSNorm) beyond ~1e25,
    where the backward's rsqrt(v)/v underflows (and beyond ~1e38, where the squares overflow)."""
    from . import checks

    if _mlx_statistics_dtype(case, dtype) not in ("float32", "bfloat16") or not case.x.size:
        return False
    if case.norm == "batch_norm" and not checks.uses_batch_stats(case.params):
        return False
    view, axes, _ = checks.statistic_view(case.norm, case.x, case.params)
    centred = view if case.norm == "rms_norm" else view - view.mean(axis=axes, keepdims=True)
    return float(np.max(np.mean(centred**2, axis=axes))) > 1e25


_MLX_HUGE = np.array([1e20, -3e20])
KNOWN += (
    [
        Divergence(
            "mlx.nn",
            "batch_norm",
            "BN.D6",
            "mlx.nn.BatchNorm raises 'BatchNorm training requires more than one value per channel' "
            "in training",
            lambda case, dtype: case.params.get("training", True) and _values_per_statistic(case) == 1,
            lambda: (
                Case(
                    "batch_norm", np.array([[0.5, -1.0]]), {"channel_axis": -1, "training": True}, "standard"
                ),
                "float64",
            ),
        ),
        Divergence(
            "mlx.nn",
            "batch_norm",
            "BN.D14",
            "mlx.nn.BatchNorm keeps float16 statistics (mx.var) and adds eps in float16: "
            "eps below ~3e-8 rounds to 0",
            _eps_underflows,
            lambda: (
                Case(
                    "batch_norm",
                    np.array([[0.5], [0.5]]),
                    {"channel_axis": -1, "eps": 1e-12, "training": True},
                    "constant_channel",
                ),
                "float16",
            ),
        ),
        Divergence(
            "mlx.nn",
            "group_norm",
            "GN.D8",
            "mlx.nn.GroupNorm's interleaved (default) path computes mean, variance and eps "
            "in the half input dtype",
            lambda case, dtype: case.params.get("assignment", "contiguous") == "interleaved" and _half(dtype),
            lambda: (
                Case(
                    "group_norm",
                    np.array([[0.5, 0.5]]),
                    {"groups": 1, "channel_axis": -1, "eps": 1e-12, "assignment": "interleaved"},
                    "constant_channel",
                ),
                "float16",
            ),
        ),
    ]
    + [
        Divergence(
            "mlx.nn",
            norm,
            "GN.D6",
            "mlx.nn applies the affine in the half input dtype after rounding x̂ to it",
            lambda case, dtype: _half(dtype) and case.params.get("offset") is not None,
            lambda norm=norm, x=x, scale=scale, offset=offset, extra=extra: (
                Case(
                    norm,
                    np.array(x),
                    {"eps": 2.0**-20, "scale": np.array(scale), "offset": np.array(offset), **extra},
                    "standard",
                ),
                "float16",
            ),
        )
        for norm, x, scale, offset, extra in (
            (
                "layer_norm",
                [[-0.0557861328125, 2.068359375, 0.300537109375, -1.025390625, 0.174072265625]],
                [1.1259765625, 0.86767578125, 1.640625, 1.1044921875, 0.46435546875],
                [0.361572265625, 1.3037109375, 0.947265625, -0.70361328125, -1.265625],
                {"axes": (-1,)},
            ),
            (
                "instance_norm",
                [[[-1.125, 0.75], [1.5, -0.375], [0.75, -0.375]]],
                [1.375, 1.5],
                [-1.40625, -0.75],
                {"channel_axis": -1},
            ),
            (
                "group_norm",
                [[[-0.75, 0.125], [0.0, 0.875], [-0.375, -0.625]]],
                [1.25, 0.375],
                [-0.859375, 0.34375],
                {"groups": 1, "channel_axis": -1},
            ),
        )
    ]
    + [
        Divergence(
            "mlx.nn",
            norm,
            "LN.D9",
            "MLX's norms square and differentiate rsqrt in float32: "
            "variances beyond ~1e25 underflow the backward, "
            "beyond ~1e38 overflow the forward",
            _mlx_float32_range,
            lambda norm=norm, x=x, extra=extra, dtype=dtype: (
                Case(norm, x, {"eps": 1e-12, **extra}, "large"),
                dtype,
            ),
        )
        for norm, x, extra, dtype in (
            ("layer_norm", _MLX_HUGE.reshape(1, 2), {"axes": (-1,)}, "float64"),
            ("instance_norm", _MLX_HUGE.reshape(1, 2, 1), {"channel_axis": -1}, "float64"),
            ("group_norm", _MLX_HUGE.reshape(1, 2), {"groups": 1, "channel_axis": -1}, "float64"),
            ("batch_norm", _MLX_HUGE.reshape(2, 1), {"channel_axis": -1, "training": True}, "float32"),
        )
    ]
    + [
        Divergence(
            "mlx.nn",
            "rms_norm",
            "RMS.D3",
            "mx.fast.rms_norm's CPU backward differentiates rsqrt(mean(x^2)) in float32: "
            "-1/2 m^(-3/2) underflows",
            _mlx_float32_range,
            lambda: (Case("rms_norm", np.array([1.25e18]), {"axes": (0,), "eps": 1e-12}, "large"), "float32"),
            "gradient",
        ),
    ]
)
KNOWN += [
    Divergence(
        "mlx.nn",
        norm,
        "BN.D13",
        "mlx.nn's normalization layers raise ValueError for eps <= 0 when constructed",
        lambda case, dtype: case.params.get("eps", 1e-5) == 0,
        lambda norm=norm, x=x, extra=extra: (
            Case(norm, np.array(x), {"eps": 0.0, **extra}, "standard"),
            "float64",
        ),
    )
    for norm, x, extra in (
        ("batch_norm", [[0.5], [-1.0]], {"channel_axis": -1}),
        ("layer_norm", [[0.5, -1.0]], {"axes": (-1,)}),
        ("instance_norm", [[[0.5], [-1.0]]], {"channel_axis": -1}),
        ("group_norm", [[0.5, -1.0]], {"groups": 1, "channel_axis": -1}),
        ("rms_norm", [[0.5, -1.0]], {"axes": (-1,)}),
    )
]
KNOWN.append(
    Divergence(
        "paddle.*",
        "group_norm",
        "GN.D9",
        "Paddle's group_norm backward gives a wrong dx when weight is None",
        lambda case, dtype: case.params.get("scale") is None,
        lambda: (Case("group_norm", np.array([[0.3, 0.7]]), {"groups": 1}, "standard"), "float64"),
        "gradient",
    )
)


def _tf_folded_overflow(case: Case, dtype: str) -> bool:
    """BN.D18: in float16, x*rsqrt(var + eps) or rsqrt's derivative -inv^3/2 leaves the range."""
    from .checks import statistic_view

    if dtype != "float16" or not _batch_stats(case) or not case.x.size:
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    floor = float(np.min(view.var(axis=axes))) + case.params.get("eps", 1e-5)
    return _max_abs(case) / np.sqrt(floor) > _huge(dtype) or floor**-1.5 / 2 > _huge(dtype)


def _lrn_log_amplification(case: Case) -> bool:
    """LRN.D9: exp(-beta*log(base)) amplifies rounding by |beta| ln(base); the budget allows |beta| + 1."""
    from .tolerances import SAFETY

    beta = abs(case.params.get("beta", 0.75))
    return beta * np.log(max(_lrn_base_power(case) ** (1.0 / (beta + 1.0)), 1.0)) > SAFETY * (beta + 1.0)


KNOWN += [
    Divergence(
        "tf.nn",
        "batch_norm",
        "BN.D18",
        "tf.nn.batch_normalization computes x*inv + (offset - mean*inv) in float16: "
        "x*inv (and rsqrt's derivative) overflow",
        _tf_folded_overflow,
        lambda: (
            Case(
                "batch_norm", np.array([[[1e4, 1e4]]]), {"eps": 2.0**-20, "running_var": "biased"}, "offset"
            ),
            "float16",
        ),
    ),
    Divergence(
        "tf.nn",
        "local_response_norm",
        "LRN.D9",
        "TF's LRN computes base^-beta through exp and log in float32: error grows with ln(base)",
        lambda case, dtype: dtype != "float64" and _lrn_log_amplification(case),
        lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1.2627243707536507e18]]]]),
                {"size": 1, "channel_axis": 3, "alpha_over_size": False},
                "large",
            ),
            "float32",
        ),
        "gradient",
    ),
    Divergence(
        "tf.nn",
        "lp_normalize",
        "LP.D4",
        "TF's l2_normalize sums x^2 in the input dtype: float16 rows of norm above 256 overflow",
        lambda case, dtype: dtype != "float64" and _norm_of(case) ** 2 > _huge(dtype),
        lambda: (
            Case(
                "lp_normalize",
                np.array([[300.0, 400.0]]),
                {"axes": (-1,), "eps": 0.0, "eps_placement": "max_power_sum"},
                "large",
            ),
            "float16",
        ),
    ),
]
KNOWN += [
    Divergence(
        "paddle.nn",
        "batch_norm",
        "BN.D19",
        "Paddle's eval-mode BatchNorm with use_global_stats=False differentiates "
        "the batch statistics as constants",
        lambda case, dtype: case.params.get("state") is None and not case.params.get("training", True),
        lambda: (
            Case(
                "batch_norm",
                np.array([[0.5], [-1.0], [2.0]]),
                {"training": False, "running_var": "biased"},
                "standard",
            ),
            "float64",
        ),
        "gradient",
    ),
    Divergence(
        "paddle.*",
        "local_response_norm",
        "LRN.D5",
        "Paddle's derivative of base^-beta underflows in the input dtype for large |x|",
        lambda case, dtype: dtype != "float64" and _lrn_base_power(case) > 1.0 / _tiny(dtype),
        lambda: (Case("local_response_norm", np.array([[[1.25e18]]]), {"size": 1}, "large"), "float32"),
        "gradient",
    ),
]


def _square_statistics(case: Case) -> np.ndarray:
    """Every var + eps (mean square + eps for RMSNorm) the norm takes rsqrt of, in float64."""
    from .checks import statistic_view

    if not case.x.size:
        return np.zeros(1)
    if case.norm == "rms_norm":
        axes = tuple(sorted(a % case.x.ndim for a in case.params.get("axes", (-1,))))
        return np.mean(case.x * case.x, axis=axes) + (case.params.get("eps") or 0.0)
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    return view.var(axis=axes) + case.params.get("eps", 1e-5)


def _largest_square_statistic(case: Case) -> float:
    return float(np.max(_square_statistics(case)))


def _half_rsqrt_jvp_overflows(case: Case, dtype: str) -> bool:
    """LN.D10 in float16 arithmetic: rsqrt(v)/(2v) beyond float16's range (v < ~6.1e-4)."""
    smallest = float(np.min(_square_statistics(case)))
    return dtype == "float16" and _batch_stats(case) and (smallest == 0 or smallest**-1.5 / 2 > _huge(dtype))


def _rsqrt_jvp_underflows(case: Case, dtype: str) -> bool:
    """LN.D10: rsqrt(v)/v below float32's smallest normal (v ~> 2e25) in a float32-or-narrower run."""
    return dtype != "float64" and _rsqrt_jvp_underflows_in_float32(case, dtype)


def _rsqrt_jvp_underflows_in_float32(case: Case, dtype: str) -> bool:
    """LN.D10 where every dtype, float64 included, is computed in float32 (Keras on jax and torch)."""
    tiny = float(np.finfo(np.float32).tiny)
    return _batch_stats(case) and _largest_square_statistic(case) ** 1.5 > 1.0 / tiny


def _half_cotangent_times_rstd_overflows(case: Case, dtype: str) -> bool:
    """LN.D5 (flax): |g| * rsqrt(var + eps) beyond float16's range."""
    from .checks import statistic_view

    if dtype != "float16" or case.cotangent is None or not case.x.size:
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    smallest = float(np.min(view.var(axis=axes))) + case.params.get("eps", 1e-5)
    return float(np.max(np.abs(case.cotangent))) / np.sqrt(smallest) > _huge(dtype)


_HUGE_ROW = np.array([[7.29e17, -1.2254e18, -2.4433e18]])
_RSQRT_EXAMPLES = {
    "layer_norm": (_HUGE_ROW, {"axes": (-1,), "eps": 1e-12}),
    "rms_norm": (_HUGE_ROW, {"axes": (-1,), "eps": 1e-12}),
    "group_norm": (_HUGE_ROW.reshape(1, 3, 1), {"groups": 1, "channel_axis": -1, "eps": 1e-12}),
    "batch_norm": (_HUGE_ROW.T.copy(), {"channel_axis": -1, "eps": 1e-12, "running_var": "biased"}),
    "instance_norm": (_HUGE_ROW.reshape(1, 3, 1), {"channel_axis": -1, "eps": 1e-12}),
}
KNOWN += (
    [
        Divergence(
            name,
            norm,
            "LN.D10",
            "JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
            _rsqrt_jvp_underflows,
            lambda norm=norm: (
                Case(
                    norm,
                    *_RSQRT_EXAMPLES[norm],
                    "large",
                    cotangent=np.array([0.7, 0.3, 0.3]).reshape(_RSQRT_EXAMPLES[norm][0].shape),
                ),
                "float32",
            ),
            "gradient",
        )
        for name, norms in (
            ("flax.*", ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")),
            ("haiku", ("layer_norm", "rms_norm", "group_norm", "batch_norm", "instance_norm")),
            ("equinox", ("layer_norm", "rms_norm")),
        )
        for norm in norms
    ]
    + [
        Divergence(
            name,
            norm,
            "LN.D10",
            "Keras computes in float32 here, float64 too: rsqrt's derivative underflows for v > ~2e25",
            _rsqrt_jvp_underflows_in_float32,
            lambda norm=norm, example=example: (
                Case(norm, *example, "large", cotangent=np.array([0.7, 0.3, 0.3]).reshape(example[0].shape)),
                "float64",
            ),
            "gradient",
        )
        for name in ("keras[jax]", "keras[torch]")
        for norm in ("layer_norm", "rms_norm", "group_norm", "batch_norm")
        # Keras' torch backend hands trailing axes to F.layer_norm, whose backward is exact here: use others
        for example in (
            [_HUGE_ROW.reshape(3, 1, 1), {"axes": (0, 2), "eps": 1e-12}]
            if norm == "layer_norm"
            else _RSQRT_EXAMPLES[norm],
        )
    ]
    + [
        Divergence(
            "keras[tensorflow]",
            "group_norm",
            "LN.D10",
            "TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
            _rsqrt_jvp_underflows,
            lambda: (
                Case(
                    "group_norm",
                    np.array(
                        [
                            [
                                [
                                    1.4220007074850406e17,
                                    1.4181626044502508e18,
                                    1.0295566435677635e18,
                                    -1.6208742031441265e18,
                                ],
                                [
                                    1.1649953792304087e18,
                                    -1.520324964295639e18,
                                    7.485851744631521e17,
                                    -1.0572333441037107e18,
                                ],
                            ]
                        ]
                    ),
                    {
                        "groups": 1,
                        "channel_axis": 1,
                        "eps": 1e-12,
                        "scale": np.array([-0.7522706389427185, 0.11860664188861847]),
                        "offset": np.array([0.5206981301307678, 0.1494448333978653]),
                    },
                    "large",
                    cotangent=np.array(
                        [
                            [
                                [
                                    0.3645724058151245,
                                    0.2941325008869171,
                                    0.028422242030501366,
                                    0.5467129945755005,
                                ],
                                [
                                    -0.7364540696144104,
                                    -0.16290995478630066,
                                    -0.4821193218231201,
                                    0.5988461971282959,
                                ],
                            ]
                        ]
                    ),
                ),
                "float32",
            ),
            "gradient",
        ),
    ]
    + [
        Divergence(
            name,
            "lp_normalize",
            "LN.D10",
            "Keras differentiates rsqrt(sum x^2) in the input dtype: "
            "rsqrt(v)/v under- or subflows for large v",
            lambda case, dtype: dtype != "float64" and _norm_of(case) ** 3 > 1.0 / _tiny(dtype),
            lambda example=example: example,
            "gradient",
        )
        for name, example in (
            (
                "keras[jax]",
                (
                    Case(
                        "lp_normalize",
                        np.array([100.125, 99.875, 100.625]),
                        {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                        "offset",
                        cotangent=np.array([0.125732421875, -0.132080078125, 0.640625]),
                    ),
                    "float16",
                ),
            ),
            (
                "keras[torch]",
                (
                    Case(
                        "lp_normalize",
                        _HUGE_ROW.reshape(-1),
                        {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                        "large",
                        cotangent=np.array([0.1257302165031433, -0.13210485875606537, 0.6404226422309875]),
                    ),
                    "float32",
                ),
            ),
        )
    ]
    + [
        Divergence(
            "keras*",
            "lp_normalize",
            "LP.D4",
            "Keras' UnitNormalization sums x^2 in the input dtype: float16 norms above 256 overflow",
            lambda case, dtype: dtype != "float64" and _norm_of(case) ** 2 > _huge(dtype),
            lambda: (
                Case("lp_normalize", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 1e-12}, "large"),
                "float16",
            ),
        ),
        Divergence(
            "paddle.functional",
            "lp_normalize",
            "LP.D4",
            "Paddle's p-norm raises |x| to p in the input dtype: it over- or underflows",
            lambda case, dtype: (
                dtype != "float64"
                and (
                    _max_abs(case) ** case.params.get("p", 2.0) > _huge(dtype)
                    or _norm_of(case) ** case.params.get("p", 2.0) > _huge(dtype)
                    or 0 < _max_abs(case) ** case.params.get("p", 2.0) < _tiny(dtype)
                )
            ),
            lambda: (
                Case("lp_normalize", np.array([[3e19, 4e19]]), {"axes": (-1,), "eps": 0.0}, "large"),
                "float32",
            ),
        ),
    ]
    + [
        Divergence(
            "flax.*",
            norm,
            "LN.D5",
            "flax's float16 backward multiplies the cotangent by rsqrt(var + eps) in float16",
            _half_cotangent_times_rstd_overflows,
            lambda norm=norm, x=x, extra=extra: (
                Case(norm, x, {"eps": 1e-12, **extra}, "constant_channel", cotangent=np.full_like(x, 0.7)),
                "float16",
            ),
            "gradient",
        )
        for norm, x, extra in (
            ("layer_norm", np.array([[0.125], [-0.25]]), {"axes": (-1,)}),
            ("group_norm", np.array([[[0.125]], [[-0.25]]]), {"groups": 1, "channel_axis": -1}),
            ("instance_norm", np.array([[[0.125]], [[-0.25]]]), {"channel_axis": -1}),
        )
    ]
)


def _one_pass_gradient_amplified(case: Case, dtype: str) -> bool:
    """LN.D4, gradients: the one-pass variance's relative error u * E[x^2] / (var + eps) beyond what
    NUM.N8 allows a backward-stable gradient, u * SAFETY * growth(n) * kappa."""
    from . import tolerances as T
    from .checks import reduction_length, statistic_view

    if not _batch_stats(case) or not case.x.size:  # every dtype: flax's float64 statistics are one-pass too
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    eps = case.params.get("eps", 1e-5)
    amplification = np.mean(view * view, axis=axes) / (view.var(axis=axes) + eps)
    kappa = T.conditioning(view, axes, eps)
    allowed = T.SAFETY * T.growth(reduction_length(case.norm, case.x, case.params)) * kappa
    return bool(np.any(amplification > np.reshape(allowed, np.shape(amplification))))


_NEAR_ONE = 1.0 + 1e-5 * np.array([[0.3, -1.2, 0.7, 0.2]])
_rng = np.random.default_rng(3)  # two replicas of 8 values 1 ± 1e-5 (float32-exact): 15x the gradient budget
_SYNC_NEAR_ONE = (
    (1.0 + 1e-5 * _rng.normal(size=(16, 1))).astype(np.float32).astype(np.float64),
    {
        "channel_axis": -1,
        "eps": 1e-6,
        "training": True,
        "replica_sizes": (8, 8),
        "weighting": "count",
        "running_var": "biased",
    },
)
_SYNC_NEAR_ONE_COTANGENT = _rng.normal(size=(16, 1)).astype(np.float32).astype(np.float64)
KNOWN += [
    Divergence(
        "flax.*",
        norm,
        "LN.D4",
        "flax's one-pass variance (use_fast_variance=True) carries its error into the gradient",
        _one_pass_gradient_amplified,
        lambda norm=norm, x=x, extra=extra: (
            Case(
                norm,
                x,
                {"eps": 1e-5, **extra},
                "tiny_spread",
                cotangent=np.array([0.7, -0.3, 0.2, -0.5]).reshape(x.shape),
            ),
            "float32",
        ),
        "gradient",
    )
    for norm, x, extra in (
        ("layer_norm", _NEAR_ONE, {"axes": (-1,)}),
        ("instance_norm", _NEAR_ONE.reshape(1, 4, 1), {"channel_axis": -1}),
        ("group_norm", _NEAR_ONE.reshape(1, 4, 1), {"groups": 1, "channel_axis": -1}),
        ("batch_norm", _NEAR_ONE.T.copy(), {"channel_axis": -1, "training": True}),
    )
]
KNOWN += [
    Divergence(
        "keras[tensorflow]",
        "sync_batch_norm",
        "SBN.D2",
        "Keras' synchronized BatchNorm's one-pass pooled variance carries its error into the gradient",
        _one_pass_gradient_amplified,
        lambda: (
            Case("sync_batch_norm", *_SYNC_NEAR_ONE, "tiny_spread", cotangent=_SYNC_NEAR_ONE_COTANGENT),
            "float32",
        ),
        "gradient",
    ),
]

# haiku's BatchNorm float16 backward overflows only where XLA promotes float16 arithmetic to float32 per
# operation (no AVX512-FP16 in force); with native float16 it stays finite and within NUM.N8's budget
# (measured on an AVX512-FP16 Xeon: 351 against a budget of 3.3e7; the same CPU capped to AVX2 overflows).
_XLA_PROMOTED_HALF = CpuDependency("xla", "avx512_fp16", present=False)
KNOWN += [
    Divergence(
        "haiku",
        norm,
        "LN.D10",
        "haiku differentiates rsqrt in float16: -rsqrt(v)/(2v) overflows for v < ~6.1e-4",
        _half_rsqrt_jvp_overflows,
        lambda norm=norm, x=x, extra=extra: (
            Case(
                norm,
                x,
                {"eps": 2.0**-20, **extra},
                "constant_channel",
                cotangent=np.array([0.125, -0.132, 0.64]).reshape(x.shape),
            ),
            "float16",
        ),
        "gradient",
        cpu=cpu,
    )
    for norm, x, extra, cpu in (
        ("layer_norm", np.full((1, 3), 1e4), {"axes": (-1,)}, None),
        ("group_norm", np.full((1, 3, 1), 1e4), {"groups": 1, "channel_axis": -1}, None),
        ("instance_norm", np.full((1, 3, 1), 1e4), {"channel_axis": -1}, None),
        ("batch_norm", np.full((3, 1), 1e4), {"channel_axis": -1, "training": True}, _XLA_PROMOTED_HALF),
    )
]

KNOWN.append(
    Divergence(
        "mlx.nn",
        "batch_norm",
        "LN.D10",
        "MLX differentiates rsqrt in float16 (BN.D14): -rsqrt(v)/(2v) overflows for v < ~6.1e-4",
        _half_rsqrt_jvp_overflows,
        lambda: (
            Case(
                "batch_norm",
                np.array(
                    [
                        [0.125732421875, -0.132080078125, 0.640625],
                        [0.10491943359375, -0.53564453125, 0.361572265625],
                    ]
                ),
                {"channel_axis": -1, "eps": 2.0**-20, "training": True},
                "standard",
                cotangent=np.array([[0.5, -0.25, 0.75], [0.125, 0.375, -0.5]]),
            ),
            "float16",
        ),
        "gradient",
    )
)

# Keras on TF differentiates tf.math.rsqrt (RsqrtGrad) for every standardizing layer and for
# UnitNormalization's ops.normalize: the same float32 underflow as its GroupNormalization (LN.D10)
_HUGE_2X3 = np.array(
    [
        [8.928809573238702e17, -1.5008069836351734e18, -2.9924863714923643e18],
        [-3.151854259746636e18, 2.042272067532882e18, 2.6908372805573673e18],
    ]
)
_SMALL_COTANGENT = np.array(
    [
        [0.1257302165031433, -0.13210485875606537, 0.6404226422309875],
        [0.10490011423826218, -0.5356693863868713, 0.3615950644016266],
    ]
)
KNOWN += [
    Divergence(
        "keras[tensorflow]",
        norm,
        "LN.D10",
        "TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        _rsqrt_jvp_underflows,
        lambda norm=norm, x=x, params=params, g=g: (Case(norm, x, params, "large", cotangent=g), "float32"),
        "gradient",
    )
    for norm, x, params, g in (
        (
            "batch_norm",
            _HUGE_2X3,
            {"channel_axis": 1, "eps": 1e-12, "running_var": "biased", "training": False},
            _SMALL_COTANGENT,
        ),
        ("layer_norm", _HUGE_2X3, {"axes": (0,), "eps": 1e-12}, _SMALL_COTANGENT),
        (
            "rms_norm",
            np.array(
                [
                    [
                        [3.443006588049162e17, 1.1787756959002788e18, 4.3824550926247526e17],
                        [-1.8627761071036826e17, -1.2481824361231155e17, -7.160974920803942e17],
                        [1.0370656895101829e18, 1.1239236721306501e18, 8.03800518106284e17],
                        [1.1649254228030915e18, 4.617789063875789e17, -7.087771498210918e17],
                        [8.833133507363471e17, 7.366934751724175e17, 2.0683299777150976e17],
                    ]
                ]
            ),
            {"axes": (0, 1, 2), "eps": 1e-12},
            np.array(
                [
                    [
                        [-0.5015294551849365, -0.2821129262447357, -0.47814905643463135],
                        [-1.6602836847305298, 0.6462036967277527, -0.1277744621038437],
                        [-1.2871307134628296, 0.20206326246261597, 0.5188384652137756],
                        [-0.2968858778476715, 1.8651530742645264, -0.05999547243118286],
                        [-0.14610053598880768, 0.840681791305542, -0.1843334585428238],
                    ]
                ]
            ),
        ),
    )
] + [
    Divergence(
        "keras[tensorflow]",
        "lp_normalize",
        "LN.D10",
        "Keras differentiates rsqrt(sum x^2) in the input dtype: rsqrt(v)/v under- or subflows for large v",
        lambda case, dtype: dtype != "float64" and _norm_of(case) ** 3 > 1.0 / _tiny(dtype),
        lambda: (
            Case(
                "lp_normalize",
                np.array([2.3003341810806292e18, -2.3929039891684393e18, -1.94159281143441e18]),
                {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                "large",
                cotangent=_SMALL_COTANGENT[0].copy(),
            ),
            "float32",
        ),
        "gradient",
    ),
]

# a nearly constant batch: the running variance is almost all blend, whose float32 rounding shows
_NEARLY_CONSTANT_BATCH = np.array(
    [
        [1.0001257302210933, 0.9998678951367087, 1.0006404226504433],
        [1.0001049001171531, 0.9994643306268389, 1.0003615950549094],
    ]
)
KNOWN += [
    Divergence(
        name,
        "batch_norm",
        "BN.D15",
        "Keras keeps its moving statistics in float32 variables, float64 inputs too",
        lambda case, dtype: (
            dtype == "float64" and case.params.get("state") is not None and case.params.get("training", True)
        ),
        lambda: (
            Case(
                "batch_norm",
                _NEARLY_CONSTANT_BATCH,
                {
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "running_var": "biased",
                    "momentum": 0.01,
                    "training": True,
                    "state": __import__("normconf").reference.RunningStats.initial(3),
                },
                "tiny_spread",
            ),
            "float64",
        ),
        "state",
    )
    for name in ("keras[jax]", "keras[torch]", "keras[numpy]")
] + [
    Divergence(
        "equinox",
        "group_norm",
        "LN.D10",
        "JAX differentiates rsqrt as -rsqrt(v)/(2v): it underflows in float32 for v > ~2e25",
        _rsqrt_jvp_underflows,
        lambda: (
            Case(
                "group_norm",
                _HUGE_ROW.reshape(1, 1, 3),
                {"groups": 1, "channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=np.array([[[0.7, 0.3, 0.3]]]),
            ),
            "float32",
        ),
        "gradient",
    ),
    Divergence(
        "tf.nn",
        "batch_norm",
        "LN.D10",
        "TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        _rsqrt_jvp_underflows,
        lambda: (
            Case(
                "batch_norm",
                np.array(
                    [
                        [8.928809573238702e17, -1.5008069836351734e18, -2.9924863714923643e18],
                        [-3.151854259746636e18, 2.042272067532882e18, 2.6908372805573673e18],
                    ]
                ),
                {"channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=np.array(
                    [
                        [0.1257302165031433, -0.13210485875606537, 0.6404226422309875],
                        [0.10490011423826218, -0.5356693863868713, 0.3615950644016266],
                    ]
                ),
            ),
            "float32",
        ),
        "gradient",
    ),
]


def _half_sum_overflows(case: Case, dtype: str) -> bool:
    """BN.D14 (mlx): a float16 sum over one statistic's values beyond float16's range."""
    from .checks import statistic_view

    if dtype != "float16" or not case.x.size or not _batch_stats(case):
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    return float(np.max(np.abs(view.sum(axis=axes)))) > _huge(dtype)


def _half_squares_overflow(case: Case, dtype: str) -> bool:
    return dtype == "float16" and _max_abs(case) > 255.9


KNOWN += [
    Divergence(
        "mlx.nn",
        "batch_norm",
        "BN.D14",
        "mlx.nn.BatchNorm's float16 mean divides a float16 sum: past 65504 it is inf",
        _half_sum_overflows,
        lambda: (
            Case(
                "batch_norm",
                np.full((12, 1), 1e4),
                {"channel_axis": -1, "eps": 1.0, "training": True},
                "offset",
            ),
            "float16",
        ),
    ),
    Divergence(
        "haiku",
        "rms_norm",
        "RMS.D4",
        "haiku squares in the input dtype: float16 x*x overflows for |x| > 255.9",
        _half_squares_overflow,
        lambda: (
            Case("rms_norm", np.array([[300.0, 400.0]]), {"axes": (-1,), "eps": 1.0}, "large"),
            "float16",
        ),
    ),
    Divergence(
        "tf.nn",
        "local_response_norm",
        "LRN.D3",
        "TF's float16 LRN squares in float16: x*x overflows for |x| > 255.9",
        _half_squares_overflow,
        lambda: (
            Case(
                "local_response_norm",
                np.full((1, 1, 1, 3), 1e3),
                {"size": 3, "channel_axis": 3, "alpha_over_size": False},
                "large",
            ),
            "float16",
        ),
    ),
]


def _keras_torch_manual_layer_norm(case: Case, dtype: str) -> bool:
    """BN.D4 for Keras' torch LayerNorm over non-contiguous axes: there it takes ops.moments (one pass,
    in float32, float64 inputs too) instead of F.layer_norm."""
    return (
        _non_trailing(case)
        and not _contiguous_non_trailing(case)
        and _keras_one_pass(case, "float32" if dtype == "float64" else dtype)
    )


KNOWN.append(
    Divergence(
        "keras[torch]",
        "layer_norm",
        "BN.D4",
        "Keras' torch backend takes one-pass moments for non-contiguous LayerNorm axes",
        _keras_torch_manual_layer_norm,
        lambda: (
            Case("layer_norm", _KERAS_ROWS.reshape(2, 1, 8), {"axes": (0, 2), "eps": 2.0**-20}, "offset"),
            "float32",
        ),
    )
)

# TF picks its oneDNN half-precision kernels by the CPU's own features, not by ONEDNN_MAX_CPU_ISA: with oneDNN
# capped below the ISA those kernels need, FusedBatchNormV3 raises "could not create a primitive descriptor"
KNOWN += [
    Divergence(
        "tf.fused_batch_norm",
        "batch_norm",
        "BN.D20",
        f"TF routes {dtype} FusedBatchNorm to oneDNN by the CPU's features, but oneDNN is capped below them: "
        "it raises",
        lambda case, dtype, half=dtype: dtype == half,
        lambda dtype=dtype: (
            Case(
                "batch_norm",
                np.array([[[[0.5, -1.0]]], [[[2.0, 0.25]]]]),
                {"channel_axis": -1, "training": True},
                "standard",
            ),
            dtype,
        ),
        cpu=CpuDependency("onednn", feature, present=False, on_cpu=True),
    )
    for dtype, feature in (("bfloat16", "avx512f"), ("float16", "avx512_fp16"))
]
