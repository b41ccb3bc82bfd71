"""S- and N-clauses the oracle comparison does not pin down on its own: running-state rules, identities
between norms, eps placement, estimators, conventions, ranges. Every comparison uses the tolerance
model's float64 reference budget (NUM.N4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normconf import reference as R
from normconf.vocabulary.tolerances import reference_budget, relative_error

RNG = np.random.default_rng(7)


def close(actual, expected, n):
    err = relative_error(actual, expected)
    assert err <= reference_budget(n), f"error {err:.3e} x scale over budget {reference_budget(n):.3e}"


def far(actual, expected, n):
    """The two differ by more than any rounding could explain: a different formula."""
    assert relative_error(actual, expected) > 1e6 * reference_budget(n)


# --- BatchNorm / InstanceNorm running statistics ------------------------------------------------


@pytest.mark.clause("BN.S2", "BN.N4")
def test_momentum_weights_the_new_batch():
    x = RNG.normal(3.0, 2.0, size=(6, 2))
    state = R.RunningStats(np.array([1.0, -1.0]), np.array([2.0, 0.5]), 4)
    new = R.batch_norm(x, state=state, momentum=0.25, running_var="biased").state
    close(new.mean, 0.75 * state.mean + 0.25 * x.mean(axis=0), 6)
    close(new.var, 0.75 * state.var + 0.25 * x.var(axis=0), 6)
    assert new.num_batches_tracked == 5


@pytest.mark.clause("BN.S3")
def test_eval_ignores_the_batch_statistics():
    state = R.RunningStats(np.array([2.0]), np.array([4.0]), 1)
    x = RNG.normal(size=(5, 1))
    out = R.batch_norm(x, training=False, state=state, eps=0.0)
    close(out.y, (x - 2.0) / 2.0, 1)
    assert (out.state.mean, out.state.var, out.state.num_batches_tracked) == (state.mean, state.var, 1)


@pytest.mark.clause("BN.S4")
def test_untracked_statistics_normalize_by_the_batch_in_eval_too():
    x = RNG.normal(size=(4, 3, 2))
    train, evaluate = R.batch_norm(x, training=True), R.batch_norm(x, training=False)
    np.testing.assert_array_equal(train.y, evaluate.y)
    assert train.state is None and evaluate.state is None


@pytest.mark.clause("BN.S5", "BN.D7")
def test_cumulative_average_is_the_plain_mean_of_batch_statistics():
    batches = [RNG.normal(k, 1.0 + k, size=(5, 3)) for k in range(4)]
    state = R.RunningStats(np.full(3, 100.0), np.full(3, 100.0), 0)  # overwritten by the first batch
    for b in batches:
        state = R.batch_norm(b, state=state, momentum=None).state
    close(state.mean, np.mean([b.mean(axis=0) for b in batches], axis=0), 5)
    close(state.var, np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0), 5)
    assert state.num_batches_tracked == 4


@pytest.mark.clause("BN.N3", "BN.P4", "BN.D1")
def test_running_variance_estimators_differ_by_bessel_factor():
    x = RNG.normal(size=(3, 2))  # n = 3 values per channel
    state = R.RunningStats.initial(2)
    unbiased = R.batch_norm(x, state=state, momentum=1.0, running_var="unbiased").state.var
    biased = R.batch_norm(x, state=state, momentum=1.0, running_var="biased").state.var
    close(unbiased, biased * 3 / 2, 3)
    close(biased, x.var(axis=0), 3)


@pytest.mark.clause("BN.D2")
def test_decay_convention_maps_to_one_minus_momentum():
    """Keras/flax `momentum=0.99` (weight on the old value) is canonical momentum 0.01."""
    x = RNG.normal(size=(8, 3))
    state = R.RunningStats.initial(3)
    canonical = R.batch_norm(x, state=state, momentum=0.01, running_var="biased").state
    decay = 0.99
    close(canonical.mean, state.mean * decay + x.mean(axis=0) * (1 - decay), 8)
    close(canonical.var, state.var * decay + x.var(axis=0) * (1 - decay), 8)
    wrong = R.batch_norm(x, state=state, momentum=0.99, running_var="biased").state
    far(wrong.mean, canonical.mean, 8)


@pytest.mark.clause("IN.S3", "IN.D2")
def test_instance_running_stats_average_per_instance_unbiased_variances():
    x = RNG.normal(size=(3, 2, 4))
    new = R.instance_norm(x, state=R.RunningStats.initial(2), momentum=1.0).state
    close(new.mean, x.mean(axis=2).mean(axis=0), 4)
    close(new.var, x.var(axis=2, ddof=1).mean(axis=0), 4)
    assert new.num_batches_tracked == 1


@pytest.mark.clause("IN.S2", "IN.P4")
def test_instance_norm_eval_uses_running_stats_only_when_tracked():
    x = RNG.normal(size=(2, 2, 5))
    state = R.RunningStats(np.array([0.5, -0.5]), np.array([2.0, 3.0]), 1)
    with_state = R.instance_norm(x, training=False, state=state, eps=0.0).y
    close(with_state, (x - state.mean[None, :, None]) / np.sqrt(state.var)[None, :, None], 5)
    without = R.instance_norm(x, training=False, eps=0.0).y
    close(without, (x - x.mean(axis=2, keepdims=True)) / x.std(axis=2, keepdims=True), 5)


@pytest.mark.clause("IN.D1", "IN.P3")
def test_instance_norm_affine_is_optional_and_per_channel():
    x = RNG.normal(size=(2, 3, 4))
    plain = R.instance_norm(x).y
    scale, offset = np.array([1.0, 2.0, -1.0]), np.array([0.0, 1.0, 5.0])
    affine = R.instance_norm(x, scale=scale, offset=offset).y
    close(affine, plain * scale[None, :, None] + offset[None, :, None], 4)


# --- eps placement, variance estimator ----------------------------------------------------------


@pytest.mark.clause("BN.N1", "LN.N1", "IN.N1", "GN.N1")
@pytest.mark.parametrize("norm", ["batch", "layer", "instance", "group"])
def test_eps_sits_inside_the_square_root(norm):
    """A row of variance 1e-4 with eps 1e-2: sqrt(var + eps) and sqrt(var) + eps differ by 10x."""
    row = np.array([1.0, 1.02, 0.98, 1.0])
    var, eps = row.var(), 1e-2
    x = {
        "batch": row[:, None],
        "layer": row[None, :],
        "instance": row[None, None, :],
        "group": row[None, None, :],
    }[norm]
    y = {
        "batch": lambda: R.batch_norm(x, eps=eps).y,
        "layer": lambda: R.layer_norm(x, eps=eps),
        "instance": lambda: R.instance_norm(x, eps=eps).y,
        "group": lambda: R.group_norm(x, groups=1, eps=eps),
    }[norm]()
    centred = (row - row.mean()).reshape(x.shape)
    close(y, centred / np.sqrt(var + eps), 4)
    far(y, centred / (np.sqrt(var) + eps), 4)


@pytest.mark.clause("BN.N2", "BN.S1", "LN.N1", "IN.N1")
def test_biased_variance_normalizes():
    """With eps = 0 the output has biased variance exactly 1; the unbiased estimator would give (n-1)/n."""
    x = RNG.normal(size=(4, 2))
    y = R.batch_norm(x, eps=0.0, state=R.RunningStats.initial(2)).y
    close(y.var(axis=0), np.ones(2), 4)
    close(R.layer_norm(x.T, eps=0.0).var(axis=1), np.ones(2), 4)
    unbiased = (x - x.mean(0)) / x.std(axis=0, ddof=1)
    far(y, unbiased, 4)


@pytest.mark.clause("BN.N5", "LN.N2", "RMS.N2", "NUM.N1", "NUM.N6")
def test_statistics_precision_sets_the_honest_error():
    """Why the accumulation dtype is part of an adapter's declaration: the same inputs normalized
    honestly in float16 and float32 statistics differ from the reference by u16/u32 = 2^13 apart."""
    from normconf.vocabulary.tolerances import standardized_in_dtype, unit_roundoff

    x = RNG.normal(0.0, 1.0, size=(8, 64))
    exact = R.layer_norm(x, eps=1e-5)
    err16 = relative_error(standardized_in_dtype(x, (1,), 1e-5, np.float16), exact)
    err32 = relative_error(standardized_in_dtype(x, (1,), 1e-5, np.float32), exact)
    assert unit_roundoff(np.float16) / 8 < err16 < 64 * unit_roundoff(np.float16)
    assert unit_roundoff(np.float32) / 8 < err32 < 64 * unit_roundoff(np.float32)


# --- GroupNorm ----------------------------------------------------------------------------------


@pytest.mark.clause("GN.S3", "GN.P4")
@pytest.mark.parametrize("assignment", ["contiguous", "interleaved"])
def test_group_norm_limits_are_instance_and_layer_norm(assignment):
    x = RNG.normal(size=(2, 4, 3))
    scale, offset = RNG.normal(size=4), RNG.normal(size=4)
    as_instance = R.group_norm(x, groups=4, scale=scale, offset=offset, assignment=assignment)
    close(as_instance, R.instance_norm(x, scale=scale, offset=offset).y, 3)
    as_layer = R.group_norm(x, groups=1, scale=scale, offset=offset, assignment=assignment)
    close(as_layer, R.layer_norm(x, axes=(1, 2)) * scale[None, :, None] + offset[None, :, None], 12)


@pytest.mark.clause("GN.D1", "GN.P5")
def test_group_assignments_normalize_different_channel_sets():
    x = RNG.normal(size=(1, 6, 2)) + np.arange(6)[None, :, None] * 10.0
    contiguous = R.group_norm(x, groups=2)
    interleaved = R.group_norm(x, groups=2, assignment="interleaved")
    far(contiguous, interleaved, 6)
    # interleaved on C equals contiguous on the channels reordered so each group is a block
    order = [0, 2, 4, 1, 3, 5]
    close(interleaved[:, order], R.group_norm(x[:, order], groups=2), 6)


@pytest.mark.clause("GN.D2", "GN.P1", "GN.P3", "BN.D3", "LN.D1", "RMS.D2", "BN.P2", "LN.P2", "IN.P2")
def test_default_eps_differences_matter_on_small_variance():
    """Ported with the other framework's default eps, a feature of variance 1e-3 changes visibly."""
    x = 0.03 * RNG.normal(size=(4, 16))
    torch_like, keras_like = R.layer_norm(x, eps=1e-5), R.layer_norm(x, eps=1e-3)
    assert relative_error(keras_like, torch_like) > 0.1


@pytest.mark.clause("GN.D3")
def test_per_group_affine_is_a_special_case_of_per_channel():
    """ONNX-18 per-group scale equals canonical per-channel scale repeated over each group's channels."""
    x = RNG.normal(size=(2, 6, 3))
    group_scale, group_offset = np.array([2.0, -1.0, 0.5]), np.array([1.0, 0.0, 3.0])
    per_channel = R.group_norm(
        x, groups=3, scale=np.repeat(group_scale, 2), offset=np.repeat(group_offset, 2)
    )
    plain = R.group_norm(x, groups=3)
    close(
        per_channel,
        plain * np.repeat(group_scale, 2)[None, :, None] + np.repeat(group_offset, 2)[None, :, None],
        6,
    )


# --- RMSNorm ------------------------------------------------------------------------------------


@pytest.mark.clause("RMS.N1", "RMS.P1", "RMS.P2")
@pytest.mark.parametrize("magnitude", [1e-300, 1e300])
def test_rms_norm_is_exact_across_the_float64_range(magnitude):
    x = np.array([[3.0, 4.0]]) * magnitude
    close(R.rms_norm(x, eps=0.0), np.array([[3.0, 4.0]]) / np.sqrt(12.5), 2)


@pytest.mark.clause("RMS.P3", "RMS.D1")
def test_rms_default_eps_rule():
    """PyTorch's eps=None: float32 machine epsilon for float32/float16/bfloat16, double's for float64."""
    from normconf.reference.rms_norm import default_eps

    assert default_eps(np.float32) == 2.0**-23
    assert default_eps(np.float64) == 2.0**-52
    assert default_eps(np.float16) == 2.0**-10  # what the docstring promises, and what PyTorch does not use
    x = np.full((1, 4), 1e-3)
    far(R.rms_norm(x, eps=default_eps(np.float16)), R.rms_norm(x, eps=default_eps(np.float32)), 4)


@pytest.mark.clause("LN.D2")
def test_variance_scaling_is_neither_layer_nor_rms_norm():
    """Keras `rms_scaling=True`: x * rsqrt(var(x) + eps) - no centring, but the centred variance."""
    x = RNG.normal(2.0, 1.0, size=(3, 8))
    keras_rms_scaling = x / np.sqrt(x.var(axis=1, keepdims=True) + 1e-3)
    far(keras_rms_scaling, R.rms_norm(x, eps=1e-3), 8)
    far(keras_rms_scaling, R.layer_norm(x, eps=1e-3), 8)


@pytest.mark.clause("LN.D3", "LN.P1", "LN.P3")
def test_trailing_axes_equal_normalized_shape():
    """PyTorch's normalized_shape=(4, 5) on a (2, 3, 4, 5) input is axes (-2, -1) = (2, 3)."""
    x = RNG.normal(size=(2, 3, 4, 5))
    scale = RNG.normal(size=(4, 5))
    close(R.layer_norm(x, axes=(-2, -1), scale=scale), R.layer_norm(x, axes=(2, 3), scale=scale), 20)
    flat = R.layer_norm(x.reshape(2, 3, 20), scale=scale.reshape(20)).reshape(x.shape)
    close(R.layer_norm(x, axes=(2, 3), scale=scale), flat, 20)


# --- LocalResponseNorm --------------------------------------------------------------------------


@pytest.mark.clause("LRN.N1", "LRN.N3", "LRN.P5", "LRN.D2")
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_window_holds_size_channels_placed_by_extra(size):
    """A one-hot channel j influences exactly the outputs whose window holds j."""
    channels, j = 9, 4
    for extra, before in (("before", size // 2), ("after", (size - 1) // 2)):
        x = np.ones((1, channels))
        y0 = R.local_response_norm(x, size=size, alpha=1.0, beta=1.0, extra=extra)
        x[0, j] = 2.0
        y1 = R.local_response_norm(x, size=size, alpha=1.0, beta=1.0, extra=extra)
        touched = {c for c in range(channels) if c != j and y1[0, c] != y0[0, c]}
        after = size - 1 - before
        assert touched == {c for c in range(j - after, j + before + 1) if c != j}


@pytest.mark.clause("LRN.N4", "LRN.P3")
def test_border_windows_count_missing_channels_as_zero_and_keep_divisor():
    x = np.array([[2.0, 0.0, 0.0]])
    y = R.local_response_norm(x, size=3, alpha=3.0, beta=1.0, k=1.0)
    close(y[0, 0], 2.0 / (1.0 + 3.0 / 3 * 4.0), 3)  # divisor 3, not the 2 channels that exist
    close(R.local_response_norm(x.T, size=3, alpha=3.0, beta=1.0, channel_axis=0), y.T, 3)


@pytest.mark.clause("LRN.N2", "LRN.P4", "LRN.D1", "LRN.P1", "LRN.P2")
def test_alpha_over_size_maps_between_tf_and_torch():
    """TF depth_radius=2, alpha=a equals PyTorch size=5, alpha=5a."""
    x = RNG.normal(size=(2, 7, 3))
    tf_like = R.local_response_norm(x, size=5, alpha=2e-2, beta=0.5, k=1.0, alpha_over_size=False)
    torch_like = R.local_response_norm(x, size=5, alpha=1e-1, beta=0.5, k=1.0)
    close(tf_like, torch_like, 5)


@pytest.mark.clause("LRN.D3")
def test_half_precision_squares_overflow_above_256():
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(300.0) * np.float16(300.0))
        assert np.isfinite(np.float16(255.0) * np.float16(255.0))
    x = np.array([[300.0, 1.0]])
    assert np.all(np.isfinite(R.local_response_norm(x, size=2)))


# --- Lp-normalize -------------------------------------------------------------------------------


@pytest.mark.clause("LP.N1", "LP.P4", "LP.P3", "LP.D1", "LP.D2")
def test_eps_placements_on_a_tiny_and_a_zero_vector():
    tiny = np.array([[1e-7, 0.0]])
    close(R.lp_normalize(tiny, eps_placement="max_norm"), [[1.0, 0.0]], 2)  # PyTorch, Keras
    close(R.lp_normalize(tiny, eps_placement="max_power_sum"), [[0.1, 0.0]], 2)  # TF
    zero = np.zeros((1, 2))
    assert np.all(R.lp_normalize(zero, eps_placement="max_norm") == 0)
    assert np.all(np.isnan(R.lp_normalize(zero, eps_placement="none")))
    assert np.all(R.lp_normalize(zero, eps_placement="none_or_zero") == 0)  # ONNX >= 1.21


@pytest.mark.clause("LP.N2")
def test_gradient_where_eps_takes_over_is_g_over_eps():
    x, g = np.array([[1e-14, -2e-14]]), np.array([[1.0, 3.0]])
    close(R.lp_normalize_vjp(g, x, eps=1e-12).x, g / 1e-12, 2)
    zero = R.lp_normalize_vjp(g, np.zeros((1, 2)), eps_placement="add_norm", eps=1e-3).x
    close(zero, g / 1e-3, 2)  # zero subgradient of the norm at 0


@pytest.mark.clause("LP.N3", "LP.P1", "LP.P2")
@pytest.mark.parametrize("magnitude", [1e-300, 1e300])
def test_lp_norm_is_exact_across_the_float64_range(magnitude):
    x = np.array([[3.0], [4.0]]) * magnitude
    close(R.lp_normalize(x, axes=(0,), eps=0.0), [[0.6], [0.8]], 2)
    close(R.lp_normalize(x, p=3.0, axes=(0,), eps=0.0), np.array([[3.0], [4.0]]) / 91.0 ** (1 / 3), 2)


# --- per-channel Normalize ----------------------------------------------------------------------


@pytest.mark.clause("CN.N1", "CN.P1", "CN.P2")
def test_subtract_then_divide_matches_reciprocal_form_to_rounding():
    x = RNG.uniform(0, 1, size=(3, 4, 4))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    folded = x * (1 / std)[:, None, None] + (-mean / std)[:, None, None]
    close(R.channel_normalize(x, mean=mean, std=std), folded, 1)


@pytest.mark.clause("CN.D2", "CN.P3")
def test_keras_variance_form_maps_to_std_floor():
    x = np.array([[1.0, 2.0, 3.0]])
    mean, variance = np.array([0.5, 1.0, 3.0]), np.array([4.0, 1e-20, 0.0])
    keras = (x - mean) / np.maximum(np.sqrt(variance), 1e-7)
    close(R.channel_normalize(x, mean=mean, std=np.sqrt(variance), channel_axis=-1, std_floor=1e-7), keras, 1)


@pytest.mark.clause("CN.D1")
def test_std_that_underflows_in_half_precision():
    """torchvision v1 casts std to the input dtype before its zero check: 1e-8 is 0 in float16."""
    assert np.float16(1e-8) == 0
    assert np.all(np.isfinite(R.channel_normalize(np.ones((1, 1, 1)), mean=[0.0], std=[1e-8])))


# --- divergences in the arithmetic of the statistics --------------------------------------------


def _one_pass_layer_norm(x, eps, dtype, clip):
    """E[x^2] - E[x]^2 in `dtype`, the formula BN.D4/BN.D8/LN.D4/GN.D4 name."""
    xd = x.astype(dtype)
    mean = xd.mean(axis=-1, keepdims=True, dtype=dtype)
    var = (xd * xd).mean(axis=-1, keepdims=True, dtype=dtype) - mean * mean
    var = np.maximum(var, 0) if clip else var
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((xd - mean) / np.sqrt(var + dtype(eps))).astype(np.float64)


@pytest.mark.clause("BN.D4", "BN.D8", "LN.D4", "GN.D4")
@pytest.mark.parametrize("clip", [True, False], ids=["clipped(flax)", "unclipped(haiku,onnx)"])
def test_one_pass_variance_fails_where_two_pass_float32_does_not(clip):
    from normconf.vocabulary.tolerances import standardized_in_dtype

    x = 1e4 + RNG.normal(size=(8, 64))
    reference = R.layer_norm(x, eps=1e-5)
    two_pass = relative_error(standardized_in_dtype(x, (1,), 1e-5, np.float32), reference)
    one_pass = _one_pass_layer_norm(x, 1e-5, np.float32, clip)
    one_pass_err = np.inf if np.any(np.isnan(one_pass)) else relative_error(one_pass, reference)
    assert two_pass < 1e-2 < one_pass_err


@pytest.mark.clause("BN.D5")
def test_folded_affine_form_loses_digits_on_offset_inputs():
    """x*inv + (offset - mean*inv) cancels two large terms; (x - mean)*inv does not."""
    x = (1e4 + RNG.normal(size=(256, 1))).astype(np.float32)
    mean, inv = (
        x.mean(dtype=np.float64).astype(np.float32),
        np.float32(1) / x.std(dtype=np.float64).astype(np.float32),
    )
    reference = R.batch_norm(x.astype(np.float64), eps=0.0).y
    centred = relative_error((x - mean) * inv, reference)
    folded = relative_error(x * inv + (np.float32(0) - mean * inv), reference)
    assert folded > 10 * centred


@pytest.mark.clause("BN.D6")
def test_one_value_per_channel_is_defined_without_unbiased_update():
    x = np.array([[3.0, -1.0]])
    offset = np.array([0.5, 2.0])
    y = R.batch_norm(x, offset=offset, eps=1e-5).y
    np.testing.assert_array_equal(y, offset[None, :])
    assert R.batch_norm(x, state=R.RunningStats.initial(2), running_var="biased").state.var.tolist() == [
        0.9,
        0.9,
    ]


@pytest.mark.clause("BN.D9")
def test_zero_debiased_average_is_canonical_update_with_step_momentum():
    decay, state = 0.9, R.RunningStats(np.array([7.0]), np.array([7.0]), 0)
    hidden_mean = hidden_var = 0.0
    for t in range(1, 5):
        batch = RNG.normal(t, 1.0, size=(6, 1))
        hidden_mean = decay * hidden_mean + (1 - decay) * batch.mean()
        hidden_var = decay * hidden_var + (1 - decay) * batch.var()
        state = R.batch_norm(
            batch, state=state, momentum=(1 - decay) / (1 - decay**t), running_var="biased"
        ).state
        close(state.mean, [hidden_mean / (1 - decay**t)], 6)
        close(state.var, [hidden_var / (1 - decay**t)], 6)


@pytest.mark.clause("BN.D10")
def test_training_with_running_averages_is_not_batch_normalization():
    batches = [RNG.normal(k, 1.0, size=(16, 2)) for k in range(3)]
    state = R.RunningStats.initial(2)
    for b in batches[:2]:
        state = R.batch_norm(b, state=state, momentum=0.01, running_var="biased").state
    with_batch_stats = R.batch_norm(batches[2], state=state).y
    with_running = R.batch_norm(batches[2], state=state, training=False).y  # what equinox "ema" trains with
    far(with_running, with_batch_stats, 16)


@pytest.mark.clause("LRN.D4")
def test_windowing_the_batch_axis_is_invisible_when_n_equals_c():
    def batch_axis_bug(x, size):
        """The loop of onnx.reference's LRN: channel indices range over x.shape[0]."""
        y = x.copy()
        before = (size - 1) // 2
        for c in range(x.shape[0]):
            lo, hi = max(0, c - before), min(x.shape[1], c + size - before)
            square_sum = (x[:, lo:hi] ** 2).sum(axis=1)
            y[:, c] = x[:, c] * (1.0 + 1e-4 / size * square_sum) ** -0.75
        for c in range(x.shape[0], x.shape[1]):
            y[:, c] = x[:, c]  # no window: square_sum stays 0
        return y

    def spec(x, size):
        return R.local_response_norm(x, size=size, extra="after", alpha=1e-4, beta=0.75, k=1.0)

    square = 30 * RNG.normal(size=(5, 5))
    close(batch_axis_bug(square, 3), spec(square, 3), 3)
    wide = 30 * RNG.normal(size=(2, 5))
    assert relative_error(batch_axis_bug(wide, 3), spec(wide, 3)) > 1e-6


@pytest.mark.clause("LP.D3")
def test_signed_sum_is_only_wrong_on_mixed_signs():
    def no_abs(x):
        return x / np.sum(x, axis=-1, keepdims=True)

    positive = RNG.uniform(0.1, 1.0, size=(3, 4))
    close(no_abs(positive), R.lp_normalize(positive, p=1.0, axes=(-1,)), 4)
    mixed = np.array([[1.0, -1.0, 2.0]])
    close(R.lp_normalize(mixed, p=1.0, axes=(-1,)), [[0.25, -0.25, 0.5]], 3)
    far(no_abs(mixed), R.lp_normalize(mixed, p=1.0, axes=(-1,)), 3)


@pytest.mark.clause("LRN.N1", "LRN.N4")
@pytest.mark.parametrize(
    "shape, axis, before, after",
    [((3, 200, 2), 1, 70, 0), ((2, 130), 1, 10, 120), ((1, 1, 1, 10001), 3, 5000, 5000), ((5003,), 0, 0, 99)],
)
def test_wide_windows_sum_exactly_the_channels_they_hold(shape, axis, before, after):
    """Windows wider than LONG_WINDOW are summed from block sums (O(n)): integer values sum exactly in
    float64, so every window must equal its exact sum; random squares stay within NUM.N4 of fsum."""
    from normconf.reference.local_response_norm import LONG_WINDOW, window_sum

    assert before + after + 1 > LONG_WINDOW
    whole = np.moveaxis(RNG.integers(0, 1000, size=shape), axis, 0).reshape(shape[axis], -1)
    prefix = np.concatenate([np.zeros((1, whole.shape[1]), dtype=np.int64), np.cumsum(whole, axis=0)])
    n = shape[axis]
    lo, hi = np.clip(np.arange(n) - before, 0, n), np.clip(np.arange(n) + after + 1, 0, n)
    exact = np.moveaxis((prefix[hi] - prefix[lo]).reshape((n, *np.delete(shape, axis))), 0, axis)
    values = np.moveaxis(whole.reshape((n, *np.delete(shape, axis))), 0, axis).astype(np.float64)
    assert np.array_equal(window_sum(values, axis, before, after), exact)
    if n <= 300:  # against math.fsum, window by window
        squares = RNG.normal(size=shape) ** 2
        moved = np.moveaxis(squares, axis, 0).reshape(n, -1)
        fsums = np.array(
            [[math.fsum(moved[lo[c] : hi[c], j]) for j in range(moved.shape[1])] for c in range(n)]
        )
        expected = np.moveaxis(fsums.reshape((n, *np.delete(shape, axis))), 0, axis)
        close(window_sum(squares, axis, before, after), expected, before + after + 1)
