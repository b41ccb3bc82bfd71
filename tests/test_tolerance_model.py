"""NUM-clauses: the tolerance model's pieces behave as spec/numerics.md says, and its budgets separate
honest rounding from a changed formula."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from normconf import reference as R
from normconf.vocabulary import tolerances as T

RNG = np.random.default_rng(11)


@pytest.mark.clause("NUM.N1")
def test_unit_roundoff_of_each_dtype():
    assert [T.unit_roundoff(d) for d in (np.float64, np.float32, np.float16)] == [
        2.0**-53,
        2.0**-24,
        2.0**-11,
    ]


@pytest.mark.clause("NUM.N2")
def test_growth_depends_on_reduction_length_not_array_size():
    assert T.growth(1) == 2.0
    assert T.growth(10_000) == 101.0
    assert all(T.growth(n) >= math.log2(n) for n in (2, 16, 1024, 2**20))


@pytest.mark.clause("NUM.N5", "NUM.N3")
def test_budget_admits_honest_float32_and_rejects_a_changed_formula():
    x = RNG.normal(50.0, 1.0, size=(16, 256))
    reference = R.layer_norm(x, eps=1e-5)
    kappa = T.conditioning(x, (1,))
    budget = T.standardizing_budget(
        acc_dtype=np.float32,
        out_dtype=np.float32,
        n=256,
        kappa=kappa,
        xhat=reference,
        scale=None,
        y_ref=reference,
    )
    honest = T.standardized_in_dtype(x, (1,), 1e-5, np.float32)
    assert T.compare(honest, reference, budget, np.float32).passed
    unbiased = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + 1e-5)
    assert not T.compare(unbiased, reference, budget, np.float32).passed
    small = 1e-3 * RNG.normal(size=(16, 256))  # variance 1e-6 against eps 1e-5
    ref_small = R.layer_norm(small, eps=1e-5)
    budget_small = T.standardizing_budget(
        acc_dtype=np.float32,
        out_dtype=np.float32,
        n=256,
        kappa=T.conditioning(small, (1,)),
        xhat=ref_small,
        scale=None,
        y_ref=ref_small,
    )
    eps_outside = (small - small.mean(1, keepdims=True)) / (small.std(1, keepdims=True) + 1e-5)
    assert not T.compare(eps_outside, ref_small, budget_small, np.float32).passed


@pytest.mark.clause("NUM.N5")
def test_conditioning_grows_with_offset_over_spread():
    x = RNG.normal(size=(1, 100))
    assert T.conditioning(x + 1e6, (1,)).item() > 1e5 * T.conditioning(x, (1,)).item() / 10
    assert T.conditioning(np.full((1, 4), 3.0), (1,)).item() == np.inf


@pytest.mark.clause("NUM.N6")
def test_honest_float16_arithmetic_can_exceed_the_first_order_budget_on_offsets():
    """Why NUM.N6 exists: at kappa*u*growth ~ 1 the first-order model says nothing useful."""
    x = RNG.normal(200.0, 0.5, size=(2, 64))
    reference = R.layer_norm(x, eps=1e-5)
    honest16 = T.standardized_in_dtype(x, (1,), 1e-5, np.float16)
    assert T.relative_error(honest16, reference) > 1e-2


@pytest.mark.clause("NUM.N7")
def test_comparison_records_worst_element_budget_and_ulps():
    expected = np.array([1.0, 2.0, 4.0])
    actual = expected + np.array([0.0, 2.0**-22, 2.0**-21])
    result = T.compare(actual, expected, np.array([1e-6, 1e-6, 1e-6]), np.float32)
    assert result.index == (2,) and result.worst_error == 2.0**-21 and result.budget == 1e-6
    assert result.ulps == pytest.approx(1.0) and result.passed
    nan_mismatch = T.compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), 1.0, np.float32)
    assert not nan_mismatch.passed
    assert T.compare(np.array([np.nan]), np.array([np.nan]), 0.0, np.float32).passed


def test_a_wrongly_shaped_answer_fails_everywhere():
    """NUM.N7: an output of the wrong shape is a failed comparison (worst error inf), never broadcast."""
    from normconf.vocabulary import tolerances as T

    verdict = T.compare(np.zeros((3, 3)), np.zeros((3, 1)), np.ones((3, 1)), "float64")
    assert not verdict.passed and verdict.worst_error == np.inf


@pytest.mark.clause("NUM.N7")
def test_a_reference_beyond_the_dtype_range_is_matched_by_its_infinity_only():
    """A float16 answer of 1.3e5 rounds to +inf: inf of that sign matches, -inf, NaN and the largest
    finite do not."""
    expected = np.array([128906.25, -128906.25])
    budget = np.full(2, T.unit_roundoff("float16") * 128906.25)
    assert T.compare(np.array([np.inf, -np.inf]), expected, budget, "float16").passed
    assert not T.compare(np.array([-np.inf, -np.inf]), expected, budget, "float16").passed
    assert not T.compare(np.array([np.nan, -np.inf]), expected, budget, "float16").passed
    assert not T.compare(np.array([65504.0, -np.inf]), expected, budget, "float16").passed
    assert not T.compare(
        np.array([np.inf, -np.inf]), expected, budget, "float32"
    ).passed  # representable there


@pytest.mark.clause("NUM.N7")
def test_a_reference_within_its_budget_of_the_overflow_threshold_may_round_to_its_infinity():
    """A float16 dx of 65503.4 with a budget of 8258 (mlx's LayerNorm near eps): a result within the
    budget may reach 65520 and round to +inf, so +inf passes; -inf and NaN do not, and neither does +inf
    where the budget stops short of 65520 (50000 with the same budget, or 65400 with a budget of 15,
    floored to its spacing of 32)."""
    expected, budget = np.array([65503.43359375]), np.array([8258.0])
    assert T.compare(np.array([np.inf]), expected, budget, "float16").passed
    assert T.compare(np.array([65504.0]), expected, budget, "float16").passed
    assert not T.compare(np.array([-np.inf]), expected, budget, "float16").passed
    assert not T.compare(np.array([np.nan]), expected, budget, "float16").passed
    assert not T.compare(np.array([np.inf]), np.array([50000.0]), budget, "float16").passed
    assert not T.compare(np.array([np.inf]), np.array([65400.0]), np.array([15.0]), "float16").passed


@pytest.mark.clause("NUM.N7")
def test_no_budget_is_below_the_rounding_of_the_reference_value_itself():
    """The running mean a float16 layer blends in float16 (0.99 * 0 + 0.01 * m for m among float16's
    subnormals, 5e-9 landing on 0) passes a budget far below a float16 spacing, as does the same blend
    rounded to each float dtype; an answer two spacings (or budgets) off still fails."""
    batch_mean = np.array([5.066394805908203e-07, 1.1920928955078125e-07, 3.0e-4, 1.5])
    expected = 0.01 * batch_mean
    tight = np.full(expected.shape, 2e-11)  # the running-statistics budget such a step had
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        kind = (
            np.float32 if dtype == "bfloat16" else np.dtype(dtype).type
        )  # bfloat16: float32's spacing bound
        blended = (kind(0.99) * kind(0.0) + kind(0.01) * batch_mean.astype(kind)).astype(np.float64)
        if dtype == "bfloat16":
            import ml_dtypes

            blended = blended.astype(ml_dtypes.bfloat16).astype(np.float64)
        assert T.compare(blended, expected, tight, dtype).passed, dtype
        wrong = expected + 2 * np.maximum(T.spacing(expected, dtype), tight)  # beyond both
        assert not T.compare(wrong, expected, tight, dtype).passed, dtype
    assert T.spacing(np.array([0.0, 5e-9]), "float16").tolist() == [2.0**-24, 2.0**-24]


@pytest.mark.clause("NUM.N5")
def test_an_output_computed_in_coarser_statistics_carries_their_last_rounding():
    """An eval BatchNorm computed in float32 and cast to float64 (Keras on jax/torch/numpy: its y is
    float32(y_ref), 0.26 of a float32 ulp past the budget before NUM.N5's u_out) passes the float64
    output's budget with float32 statistics (SAFETY times half a float32 spacing); eight float32
    spacings off (1e-6 relative) fails, and a float64
    implementation is still held to float64's own rounding."""
    from normconf.conformance import checks

    x = np.array([[0.1257302210933933], [-0.1321048632913019]])
    state = R.RunningStats(np.array([0.0]), np.array([1.0]), 0)
    params = {"channel_axis": 1, "eps": 1e-12, "training": False, "momentum": 0.0, "running_var": "biased"}
    params |= {
        "state": state,
        "scale": np.array([0.05245554953651832]),
        "offset": np.array([-0.8804418056614121]),
    }
    y_ref = R.batch_norm(x, **params).y
    bound, _ = checks.budget("batch_norm", x, params, y_ref, acc_dtype="float32", out_dtype="float64")
    in_float32 = y_ref.astype(np.float32).astype(np.float64)  # what that Keras computes, exactly
    assert T.compare(in_float32, y_ref, bound, "float64").passed
    wrong = y_ref + 8 * T.spacing(y_ref, "float32")
    assert not T.compare(wrong, y_ref, bound, "float64").passed
    exact, _ = checks.budget("batch_norm", x, params, y_ref, acc_dtype="float64", out_dtype="float64")
    assert not T.compare(in_float32, y_ref, exact, "float64").passed


@pytest.mark.clause("MP.N1", "NUM.N8")
def test_a_parameter_gradient_held_in_float32_is_held_to_float32_rounding():
    """Under a mixed policy the parameters' gradients are float32 (MP.N1): a bfloat16 RMSNorm's dscale
    as float32 arithmetic gives it passes, and the same dscale rounded to bfloat16 (MP.D11's Keras,
    its gradient cast back from the half type) fails - the budget is not the input dtype's."""
    from normconf.conformance import checks

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 8)).astype(ml_dtypes.bfloat16).astype(np.float64)
    g = rng.normal(size=(6, 8)).astype(ml_dtypes.bfloat16).astype(np.float64)
    scale = (1.0 + 0.1 * rng.normal(size=8)).astype(np.float32).astype(np.float64)
    params = {"axes": (-1,), "eps": 1e-6, "scale": scale}
    want = R.rms_norm_vjp(g, x, **params).scale
    budgets = checks.gradient_budget(
        "rms_norm",
        x,
        params,
        g,
        {"scale": want},
        acc_dtype="float32",
        out_dtype="bfloat16",
        parameter_dtype="float32",
    )
    in_float32 = want.astype(np.float32).astype(np.float64)
    assert T.compare(in_float32, want, budgets["scale"], "float32").passed
    in_half = want.astype(ml_dtypes.bfloat16).astype(np.float64)
    assert not T.compare(in_half, want, budgets["scale"], "float32").passed
    # without the policy the same rounding is the input dtype's own: the bfloat16 budget takes it
    plain = checks.gradient_budget(
        "rms_norm", x, params, g, {"scale": want}, acc_dtype="float32", out_dtype="bfloat16"
    )
    assert T.compare(in_half, want, plain["scale"], "bfloat16").passed


@pytest.mark.clause("NUM.N11")
@pytest.mark.parametrize("dtype, magnitude", [("float64", 1e29), ("float32", 1e12), ("float32", 1e-12)])
def test_an_unscaled_pow_lp_norm_passes_and_a_wrong_one_fails(dtype, magnitude):
    """S^(1/p) unscaled, in the dtype, with 1/3 rounded to it (as PyTorch's F.normalize computes) passes
    the Lp budget; the same with the norm moved by ten times that rounding, or with p = 3.01, fails.
    Without NUM.N11's term the float64 one would fail (as PyTorch's did)."""
    from normconf.conformance import checks

    kind = np.dtype(dtype).type
    x = (magnitude * np.array([[1.3, -0.7, 2.1], [0.4, 1.9, -1.2]])).astype(kind).astype(np.float64)
    params = {"p": 3.0, "axes": (1,), "eps": 0.0}
    y_ref = R.lp_normalize(x, **params)
    bound, basis = checks.budget("lp_normalize", x, params, y_ref, acc_dtype=dtype, out_dtype=dtype)
    xd = x.astype(kind)
    norm = np.sum(np.abs(xd) ** kind(3), axis=1, keepdims=True) ** kind(1.0 / 3.0)
    honest = (xd / norm).astype(np.float64)
    assert basis == "NUM.N11" and T.compare(honest, y_ref, bound, dtype).passed
    first_order = T.standardizing_budget(
        acc_dtype=dtype, out_dtype=dtype, n=3, kappa=1.0, xhat=y_ref, scale=None, y_ref=y_ref
    )
    if dtype == "float64":  # PyTorch's case: 17 ulps, past NUM.N5's first-order budget
        assert not T.compare(honest, y_ref, first_order, dtype).passed
    log_sum = np.log(np.sum(np.abs(x) ** 3, axis=1, keepdims=True))
    moved = y_ref * (1 + 10 * T.SAFETY * T.unit_roundoff(dtype) * np.abs(log_sum) / 3)
    assert not T.compare(moved, y_ref, bound, dtype).passed
    assert not T.compare(R.lp_normalize(x, **{**params, "p": 3.01}), y_ref, bound, dtype).passed
