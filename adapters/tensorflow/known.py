"""TensorFlow's known divergences (tf.nn, tf.fused_batch_norm), sorted by clause: each a model of what the
framework does instead, checked by conformance/meta/test_divergences.py."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    HALF_SQUARE_LIMIT,
    HUGE_2X3,
    LP_GRADIENT_OUT_OF_RANGE,
    SAFETY,
    SMALL_COTANGENT,
    Bounded,
    Case,
    Computes,
    CpuDependency,
    Divergence,
    Envelope,
    OneOf,
    Raises,
    Reference,
    Simulated,
    batch_stats,
    dtype_of,
    eps_in,
    eps_underflows,
    groups_where,
    groups_where_var_below,
    half_rsqrt_jvp_groups,
    half_squares_overflow,
    huge,
    lp_in_dtype,
    lrn_base_power,
    lrn_power_derivative_underflows,
    max_abs,
    offset_along,
    param,
    power_sum_out_of_range,
    rounded,
    rows_out_of_range,
    rsqrt_jvp_underflows,
    scale_along,
    squares_overflow,
    statistic_held,
    statistic_view,
    tf_moments_sums,
    underflowing_derivative_windows,
)


def _folded_overflow(case: Case, dtype: str) -> bool:
    """BN.D18: in float16, x*rsqrt(var + eps) or rsqrt's derivative -inv^3/2 leaves the range."""
    if dtype != "float16" or not batch_stats(case) or not case.x.size:
        return False
    view, axes, _ = statistic_view(case.norm, case.x, case.params)
    floor = float(np.min(view.var(axis=axes))) + param(case, "eps")
    return max_abs(case) / np.sqrt(floor) > huge(dtype) or floor**-1.5 / 2 > huge(dtype)


def _lrn_log_amplification(case: Case) -> bool:
    """LRN.D9: exp(-beta*log(base)) amplifies rounding by |beta| ln(base); the budget allows |beta| + 1."""
    beta = abs(param(case, "beta"))
    return beta * np.log(max(lrn_base_power(case) ** (1.0 / (beta + 1.0)), 1.0)) > SAFETY * (beta + 1.0)


# The models: what TF computes where each divergence holds (vocabulary/models.py).
def _folded_in_half(case: Case, dtype: str, which: str):
    """BN.D18: tf.nn.batch_normalization in the input dtype on float32 moments rounded to it:
    inv = rsqrt(var + eps) * scale, y = x * inv + (offset - mean * inv), each step rounded."""
    if which != "y" or not case.x.size:
        return None
    view, axes, back = statistic_view(case.norm, case.x, case.params)
    mean = rounded(back(view.mean(axis=axes, keepdims=True)), dtype)
    var = rounded(back(view.var(axis=axes, keepdims=True)), dtype)
    inv = rounded(1.0 / np.sqrt(rounded(var + rounded(param(case, "eps"), dtype), dtype)), dtype)
    if case.params.get("scale") is not None:
        inv = rounded(inv * rounded(scale_along(case), dtype), dtype)
    shift = rounded(rounded(offset_along(case), dtype) - rounded(mean * inv, dtype), dtype)
    return rounded(rounded(case.x * inv, dtype) + shift, dtype)


def _log_amplified(case: Case, dtype: str) -> float:
    """LRN.D9: exp(-beta log(base)) in float32 carries log(base)'s rounding times |beta| ln(base)."""
    beta = abs(param(case, "beta"))
    base = max(lrn_base_power(case) ** (1.0 / (beta + 1.0)), 1.0)
    return SAFETY * float(np.finfo(np.float32).eps) * (beta * np.log(base) + 1.0)


def _samples_with_non_finite(case: Case, dtype: str, which: str):
    """LRN.D10: every channel at a position where some channel's input is NaN or ±inf."""
    axis = param(case, "channel_axis") % case.x.ndim
    return np.broadcast_to(np.any(~np.isfinite(case.x), axis=axis, keepdims=True), case.x.shape)


def _half_window_overflows(case: Case, dtype: str) -> bool:
    """LRN.D3 on TF's float16 path: a square, or a window's sum of squares, past float16's range."""
    return half_squares_overflow(case, dtype) or (
        dtype == "float16" and bool(np.any(_overflowing_windows(case)))
    )


def _overflowing_windows(case: Case):
    """The channels whose window's float16 squares may sum past float16's range: to 65520 (where rounding
    gives inf) or within the sum's own float16 rounding of it, size u per term."""
    from normconf.reference.local_response_norm import window, window_sum

    with np.errstate(all="ignore"):
        squares = rounded(rounded(case.x, "float16") ** 2, "float16")
        finite = np.where(np.isfinite(squares), squares, 0.0)
        axis = param(case, "channel_axis") % case.x.ndim
        size = int(case.params["size"])
        sums = window_sum(finite, axis, *window(size, param(case, "extra")))
    return sums * (1 + size * 2.0**-11) >= huge("float16") * (1 + 2.0**-12)


def _band_matrix_rows(case: Case, dtype: str, which: str):
    """LRN.D3 on TF's float16 path: the squares of a position's channels times a depth x depth band
    matrix (lrn_op.cc) - an inf square times the band's zeros is NaN in every channel of that position,
    not only in its own window: the whole channel row where any |x| squares past float16; and a channel
    whose window's squares sum past it has an inf base, so y = x rsqrt(inf) = ±0 there."""
    axis = param(case, "channel_axis") % case.x.ndim
    overflows = np.any(np.abs(case.x) > HALF_SQUARE_LIMIT, axis=axis, keepdims=True)
    return np.broadcast_to(overflows, case.x.shape) | _overflowing_windows(case)


# TF's CPU LRN slides a running sum along the channels instead of the band-matrix product when the
# depth exceeds this and beta is 0.5 or 1 (compared in the input dtype): lrn_op.cc, SingleThreadedLRN
_SINGLE_THREADED_DEPTH = 384


def _slides_its_window_sum(case: Case, dtype: str) -> bool:
    """LRN.D6 on TF: the kernel's single-threaded path (depth > 384, beta 0.5 or 1 in the input dtype)."""
    if dtype not in ("float16", "float32") or case.x.ndim != 4:
        return False
    beta = float(rounded(param(case, "beta"), dtype))
    return case.x.shape[-1] > _SINGLE_THREADED_DEPTH and beta in (0.5, 1.0)


def _running_window_sum(case: Case, dtype: str, which: str):
    """LRN.D6 on TF: SingleThreadedLRN as lrn_op.cc computes it, in the input dtype throughout: the squares
    times alpha (both rounded to it), a running sum that adds the square entering a window and subtracts
    the one leaving it, bias plus that sum, then x times its reciprocal (beta 1) or its rsqrt (beta 0.5).
    In float16 the sum stalls where its spacing passes the squares and can end at or below zero, so y is
    inf or NaN at the channels whose window has been drained (measured bit for bit against TF 2.21)."""
    if which != "y" or case.norm != "local_response_norm":
        return None
    kind = dtype_of(dtype)
    depth = case.x.shape[-1]
    radius = (int(case.params["size"]) - 1) // 2
    rows = case.x.astype(kind).reshape(-1, depth)
    alpha, bias = kind.type(param(case, "alpha")), kind.type(param(case, "k"))
    with np.errstate(all="ignore"):
        padded = np.zeros((rows.shape[0], depth + 2 * radius), kind)
        padded[:, radius : radius + depth] = rows * rows * alpha
        running = np.zeros(rows.shape[0], kind)
        for i in range(2 * radius):
            running = running + padded[:, i]
        base = np.empty_like(rows)
        for i in range(depth):
            running = running + padded[:, i + 2 * radius]
            base[:, i] = bias + running
            running = running - padded[:, i]
        if float(rounded(param(case, "beta"), dtype)) == 1.0:
            y = rows * (kind.type(1) / base)
        else:
            y = rows * (1 / np.sqrt(base.astype(np.float32))).astype(kind)
        return y.reshape(case.x.shape).astype(np.float64)


KNOWN: list[Divergence] = [
    Divergence(
        adapters="tf.nn",
        norm="batch_norm",
        clause="BN.D14",
        reason="float16 statistics: eps below ~3e-8 rounds to 0 and a zero variance gives 0/0",
        applies=eps_underflows,
        example=lambda: (
            Case(
                "batch_norm",
                np.array([[0.5, 0.5]]),
                {"eps": 1e-12, "channel_axis": -1, "training": True},
                "constant_channel",
            ),
            "float16",
        ),
        model=OneOf(
            (
                Reference(eps_in(), kind="special"),
                Envelope(groups_where_var_below(lambda dtype: 2.0**-24)),
            )
        ),
    ),
    Divergence(
        adapters="tf.nn",
        norm="batch_norm",
        clause="BN.D18",
        reason="tf.nn.batch_normalization computes x*inv + (offset - mean*inv) in float16: "
        "x*inv (and rsqrt's derivative) overflow",
        applies=_folded_overflow,
        example=lambda: (
            Case(
                "batch_norm", np.array([[[1e4, 1e4]]]), {"eps": 2.0**-20, "running_var": "biased"}, "offset"
            ),
            "float16",
        ),
        # the output folded in float16; its gradient through rsqrt's derivative overflows there too
        model=OneOf((Simulated(_folded_in_half), Envelope(groups_where(half_rsqrt_jvp_groups)))),
    ),
    # TF picks its oneDNN half-precision kernels by the CPU's own features, not by ONEDNN_MAX_CPU_ISA: with
    # oneDNN capped below the ISA those kernels need, FusedBatchNormV3 raises "could not create a primitive
    # descriptor"
    *(
        Divergence(
            adapters="tf.fused_batch_norm",
            norm="batch_norm",
            clause="BN.D20",
            reason=f"TF routes {dtype} FusedBatchNorm to oneDNN by the CPU's features, "
            "but oneDNN is capped below them: it raises",
            applies=lambda case, dtype, half=dtype: dtype == half,
            example=lambda dtype=dtype: (
                Case(
                    "batch_norm",
                    np.array([[[[0.5, -1.0]]], [[[2.0, 0.25]]]]),
                    {"channel_axis": -1, "training": True},
                    "standard",
                ),
                dtype,
            ),
            cpu=CpuDependency("onednn", feature, present=False, on_cpu=True),
            model=Raises(pattern="could not create a primitive"),
        )
        for dtype, feature in (("bfloat16", "avx512f"), ("float16", "avx512_fp16"))
    ),
    Divergence(
        adapters="tf.nn",
        norm="batch_norm",
        clause="LN.D10",
        reason="TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        applies=rsqrt_jvp_underflows,
        example=lambda: (
            Case(
                "batch_norm",
                HUGE_2X3,
                {"channel_axis": 1, "eps": 1e-12},
                "large",
                cotangent=SMALL_COTANGENT,
            ),
            "float32",
        ),
        shows_in="gradient",
        model=Computes(statistic_held, either=True),
    ),
    Divergence(
        adapters="tf.nn",
        norm="lp_normalize",
        clause="LP.D4",
        reason=(
            "TF's l2_normalize sums x^2 in the input dtype: float16 rows of norm above 256 overflow, squares "
            "below float16's normal range lose their digits"
        ),
        applies=lambda case, dtype: power_sum_out_of_range(case, dtype, norm_power=2),
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([[300.0, 400.0]]),
                {"axes": (-1,), "eps": 0.0, "eps_placement": "max_power_sum"},
                "large",
            ),
            "float16",
        ),
        model=OneOf(
            (Simulated(lp_in_dtype), Envelope(rows_out_of_range(norm_power=2), LP_GRADIENT_OUT_OF_RANGE))
        ),
    ),
    Divergence(
        adapters="tf.nn",
        norm="lp_normalize",
        clause="LP.D6",
        reason="TF's l2_normalize gradient underflows in float32 at huge |x|",
        applies=lambda case, dtype: dtype != "float64" and max_abs(case) > 1e15,
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([[3.8e18, 1.0]]),
                {"axes": (-1,), "eps": 1e-12, "eps_placement": "max_power_sum"},
                "large",
            ),
            "float32",
        ),
        shows_in="gradient",
        model=Computes(statistic_held, either=True),
    ),
    Divergence(
        adapters="tf.nn",
        norm="local_response_norm",
        clause="LRN.D3",
        reason=(
            "TF's float16 LRN squares and sums them in float16: x*x overflows for |x| > 255.9, a window's "
            "sum past 65504"
        ),
        applies=_half_window_overflows,
        example=lambda: (
            Case(
                "local_response_norm",
                np.full((1, 1, 1, 3), 1e3),
                {"size": 3, "channel_axis": 3, "alpha_over_size": False},
                "large",
            ),
            "float16",
        ),
        model=Envelope(_band_matrix_rows, allowed="non_finite_or_zero", kind="precision"),
    ),
    Divergence(
        adapters="tf.nn",
        norm="local_response_norm",
        clause="LRN.D6",
        reason=(
            "TF's CPU LRN slides a running window sum in the input dtype for depths past 384 (beta 0.5 or 1)"
        ),
        applies=_slides_its_window_sum,
        example=lambda: (
            Case(
                "local_response_norm",
                np.full((1, 1, 1, 4001), 100.0),
                {
                    "size": 4001,
                    "channel_axis": 3,
                    "alpha": 1e-4,
                    "beta": 0.5,
                    "k": 1.0,
                    "alpha_over_size": False,
                },
                "offset",
            ),
            "float16",
        ),
        model=Simulated(_running_window_sum),
    ),
    Divergence(
        adapters="tf.nn",
        norm="local_response_norm",
        clause="LRN.D9",
        reason="TF's LRN computes base^-beta through exp and log in float32: error grows with ln(base)",
        applies=lambda case, dtype: dtype != "float64" and _lrn_log_amplification(case),
        example=lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1.2627243707536507e18]]]]),
                {"size": 1, "channel_axis": 3, "alpha_over_size": False},
                "large",
            ),
            "float32",
        ),
        shows_in="gradient",
        model=Bounded(rel=_log_amplified),
    ),
    Divergence(
        adapters="tf.nn",
        norm="local_response_norm",
        clause="LRN.D10",
        reason="TF's CPU LRN multiplies the squares by a 0/1 band matrix: "
        "a NaN or ±inf makes NaN of channels outside its window",
        applies=lambda case, dtype: not np.all(np.isfinite(case.x)),
        example=lambda: (
            Case(
                "local_response_norm",
                np.array([[[[1.0, np.nan, 2.0, 3.0, 1.0, 2.0]]]]),
                {"size": 1, "channel_axis": 3, "alpha": 1.0, "beta": 0.5, "k": 1.0, "alpha_over_size": False},
                "standard",
            ),
            "float32",
        ),
        non_finite=True,
        model=Envelope(_samples_with_non_finite),
    ),
]

# NUM.D1: squares summed beyond float32 (float16) - every family's statistics, as measured
KNOWN += [
    *squares_overflow("tf.fused_batch_norm", ("batch_norm",)),
    *squares_overflow("tf.nn", ("batch_norm",), half_in_half=True),
    *squares_overflow(
        "tf.nn", ("local_response_norm",), half_in_half=True, channel_axis=-1, alpha_over_size=False
    ),
]

# NUM.D3: tf.nn.moments reduces the axes before the channel axis as one running sum (Eigen's
# outer-dimension reduction), measured bit for bit against TF 2.21 (divergences.outer_sequential_mean)
KNOWN += [
    tf_moments_sums("tf.nn"),
]


# LRN.D5 for TF's LRN: its gradient kernel forms base^(-beta - 1) in float32 (through exp and log,
# LRN.D9), which underflows for large |x|: the default profile's seed 1 drew values ~1e18 with alpha 0.1
# and a size-1 window, dx 27 x its budget; the term keeps few or no digits there
_LRN_HUGE_X = np.array(
    [
        [
            [
                [1.2627243707536507e18, -2.1224616495698412e18, -4.232015032629592e18],
                [-4.457394850236465e18, 2.8882089635919954e18, 3.8054182649478513e18],
            ],
            [
                [9.831332697782354e17, 2.1158537221258609e18, 4.022025560313037e17],
                [4.011169600975667e18, 2.9120257598391583e18, -4.5845245078085304e18],
            ],
            [
                [3.295104681927246e18, -4.3001284035807805e18, 2.1173185464919654e18],
                [-2.990307414324019e18, 3.3483441344557875e18, 3.822535668127498e17],
            ],
        ],
        [
            [
                [-1.8465651825416602e18, -7.127885805560791e17, -4.3486778892610437e18],
                [-3.463937166273413e18, 1.573079394757378e18, 1.3570202746581156e18],
            ],
            [
                [1.0637981844357775e18, -1.0724399335132365e18, 4.584049243907424e18],
                [4.433082724000989e18, 1.7106126313514598e18, 1.3871659972737106e18],
            ],
            [
                [1.7373930237523395e18, -1.0240938574841119e18, -3.3642438972271493e18],
                [2.042021653759656e18, 2.337552958918492e17, -1.7494835284892713e18],
            ],
        ],
    ]
)
_LRN_HUGE_G = np.array(
    [
        [
            [
                [0.1257302165031433, -0.13210485875606537, 0.6404226422309875],
                [0.10490011423826218, -0.5356693863868713, 0.3615950644016266],
            ],
            [
                [1.3040000200271606, 0.9470809698104858, -0.7037352323532104],
                [-1.2654215097427368, -0.6232744455337524, 0.04132597893476486],
            ],
            [
                [-2.32503080368042, -0.218791663646698, -1.2459110021591187],
                [-0.7322673797607422, -0.5442590117454529, -0.3163001537322998],
            ],
        ],
        [
            [
                [0.4116305410861969, 1.042513370513916, -0.12853465974330902],
                [1.3664634227752686, -0.6651946902275085, 0.35151007771492004],
            ],
            [
                [0.9034701585769653, 0.0940122976899147, -0.7434992790222168],
                [-0.9217253923416138, -0.4577258229255676, 0.22019512951374054],
            ],
            [
                [-1.0096181631088257, -0.20917557179927826, -0.15922501683235168],
                [0.5408455729484558, 0.21465912461280823, 0.35537269711494446],
            ],
        ],
    ]
)
KNOWN += [
    Divergence(
        adapters="tf.nn",
        norm="local_response_norm",
        clause="LRN.D5",
        reason=(
            "TF's derivative of base^-beta, -beta base^(-beta-1), underflows in the input dtype for large |x|"
        ),
        applies=lrn_power_derivative_underflows,
        example=lambda: (
            Case(
                "local_response_norm",
                _LRN_HUGE_X,
                {"size": 1, "channel_axis": 3, "alpha": 0.1, "beta": 1.0, "k": 1.0, "alpha_over_size": False},
                "large",
                cotangent=_LRN_HUGE_G,
            ),
            "float32",
        ),
        shows_in="gradient",
        model=Envelope(underflowing_derivative_windows, allowed="any", kind="precision"),
    ),
]
