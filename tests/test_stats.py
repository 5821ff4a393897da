"""``bncore.norm.stats``: per-channel statistics, running-average rules, and float32 numerics when
|mean| ≫ std, where E[x²] − E[x]² breaks down and the two-pass, Welford and Chan forms do not.

Rounding scale used below: float32's unit roundoff is u = 2⁻²⁴ ≈ 6e-8, so values near 1e4 are
stored to ≈ 6e-4 and their squares near 1e8 to ≈ 6, six times the variance (1) itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bn_testing import IMPLS, bcast, normalize, random_batch

from bncore.norm import stats, torch_bn

SHAPE = (64, 16, 4, 4)  # 16 channels, m = 1024 values each


@pytest.fixture(scope="module")
def far_from_zero() -> np.ndarray:
    """float32 data with mean 1e4 and std 1 per channel."""
    rng = np.random.default_rng(0)
    return (1e4 + rng.standard_normal(SHAPE)).astype(np.float32)


def _reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance of the same float32 values, computed in float64."""
    return stats.mean_var(x.astype(np.float64))


def _var_rel_error(var: np.ndarray, x: np.ndarray) -> float:
    _, ref = _reference(x)
    return float(np.max(np.abs(var.astype(np.float64) - ref) / ref))


# --- numerics at mean 1e4, std 1, float32 ------------------------------------------------------


def test_naive_variance_fails_in_float32_far_from_zero(far_from_zero):
    _, var = stats.naive_mean_var(far_from_zero)
    assert var.dtype == np.float32
    # E[x²] ≈ 1e8 carries an error of several units, larger than the variance itself ...
    assert _var_rel_error(var, far_from_zero) > 1.0
    # ... so that some channels even come out with a negative variance
    assert np.any(var < 0)


@pytest.mark.parametrize(
    "method, bound",
    [
        # two passes: the mean's error δ ≈ 1e-3 enters only as δ² ≈ 1e-6
        ("two-pass", 1e-4),
        # each Welford step rounds the running mean by ≈ 6e-4/2 relative to σ = 1; M₂ inherits
        # errors of that order (measured ≈ 6e-4), an order of magnitude below the bound
        ("welford", 5e-3),
        # Chan's merge of two two-pass halves: δ = μ_b − μ_a is off by ≈ 1e-3, entering as
        # δ²·n_a·n_b/n relative to M₂ ≈ n: ≈ 1e-4 measured
        ("chan-merge-of-halves", 1e-3),
    ],
)
def test_stable_variances_agree_with_float64_in_float32(far_from_zero, method, bound):
    x = far_from_zero
    if method == "two-pass":
        mean, var = stats.mean_var(x)
    elif method == "welford":
        mean, var = stats.welford_mean_var(x)
    else:
        halves = x[: len(x) // 2], x[len(x) // 2:]
        parts = []
        for half in halves:
            n = stats.count_per_channel(half.shape)
            m, v = stats.mean_var(half)
            parts += [n, m, v * n]
        n, mean, m2 = stats.chan_merge(*parts)
        assert n == stats.count_per_channel(x.shape)
        var = m2 / n
    assert var.dtype == np.float32 and np.all(var > 0)
    assert _var_rel_error(var, x) < bound
    # the mean is good to a few float32 units of 1e4 (≈ 6e-4 each)
    ref_mean, _ = _reference(x)
    assert np.max(np.abs(mean - ref_mean)) < 1e-2


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_far_from_zero_normalizes_close_to_float64(far_from_zero, impl):
    c = SHAPE[1]
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    y = normalize(impl, far_from_zero, gamma, beta, 1e-5)
    assert y.dtype == np.float32
    y_ref = normalize("numpy", far_from_zero.astype(np.float64), gamma * 1.0, beta * 1.0, 1e-5)
    # x̂ inherits the mean's error ≈ 1e-3 (a few units of 1e4 in float32) divided by σ = 1
    assert np.max(np.abs(y - y_ref)) < 1e-2


def test_normalizing_with_naive_variance_fails_far_from_zero(far_from_zero):
    # the same normalization with E[x²] − E[x]² gives NaN or errors of order one
    mean, var = stats.naive_mean_var(far_from_zero)
    with np.errstate(invalid="ignore"):
        y = (far_from_zero - bcast(mean, 4)) / np.sqrt(bcast(var, 4) + np.float32(1e-5))
    y_ref = normalize("numpy", far_from_zero.astype(np.float64), np.ones(16), np.zeros(16), 1e-5)
    err = np.abs(y - y_ref)
    assert np.isnan(err).any() or np.nanmax(err) > 0.1


# --- exact arithmetic and the running-average rules --------------------------------------------


@pytest.mark.parametrize("ndim, axes", [(2, (0,)), (3, (0, 2)), (4, (0, 2, 3)), (5, (0, 2, 3, 4))])
def test_reduce_axes_are_all_but_the_channel_axis(ndim, axes):
    assert stats.reduce_axes(ndim) == axes


@pytest.mark.parametrize("shape, m", [((7, 3), 7), ((4, 3, 5), 20), ((2, 3, 4, 5), 40),
                                      ((1, 3, 1, 1), 1)])
def test_count_per_channel_is_batch_times_spatial(shape, m):
    assert stats.count_per_channel(shape) == m


def test_bessel_correction_is_m_over_m_minus_one():
    assert stats.bessel(2) == 2.0 and stats.bessel(10) == pytest.approx(10 / 9, rel=1e-15)
    assert stats.bessel(1) == math.inf  # one value has no sample variance


def test_momentum_factor_is_momentum_or_one_over_t():
    assert stats.momentum_factor(0.1, 7) == 0.1
    assert [stats.momentum_factor(None, t) for t in (1, 2, 4)] == [1.0, 0.5, 0.25]


@pytest.mark.parametrize("array", [np.asarray, torch.as_tensor], ids=["numpy", "torch"])
def test_running_update_weights_the_new_batch_by_the_factor(array):
    running, batch = array([0.0, 10.0]), array([1.0, 20.0])
    np.testing.assert_allclose(np.asarray(stats.running_update(running, batch, 0.1)), [0.1, 11.0])
    np.testing.assert_allclose(np.asarray(stats.running_update(running, batch, 1.0)), [1.0, 20.0])


def test_cumulative_running_update_is_the_average_of_batches():
    batches = np.random.default_rng(1).standard_normal((5, 3))
    running = np.zeros(3)
    for t, batch in enumerate(batches, start=1):
        running = stats.running_update(running, batch, stats.momentum_factor(None, t))
    np.testing.assert_allclose(running, batches.mean(axis=0), rtol=1e-14)


@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
def test_all_variances_agree_in_float64_on_well_conditioned_data(ndim):
    x = random_batch((6, 3, 3, 2, 2)[:ndim], seed=ndim)
    axes = stats.reduce_axes(ndim)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    for method in (stats.mean_var, stats.naive_mean_var, stats.welford_mean_var):
        m, v = method(x)
        np.testing.assert_allclose(m, mean, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(v, var, rtol=1e-12)
    m, v = torch_bn.mean_var(torch.from_numpy(x))
    np.testing.assert_allclose(m.numpy(), mean, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(v.numpy(), var, rtol=1e-12)


@pytest.mark.parametrize("split", [1, 2, 5])
def test_chan_merge_equals_statistics_of_the_whole(split):
    x = random_batch((6, 3, 4), seed=2)
    a, b = x[:split], x[split:]
    (ma, va), (mb, vb) = stats.mean_var(a), stats.mean_var(b)
    na, nb = stats.count_per_channel(a.shape), stats.count_per_channel(b.shape)
    n, mean, m2 = stats.chan_merge(na, ma, va * na, nb, mb, vb * nb)
    whole_mean, whole_var = stats.mean_var(x)
    assert n == 24
    np.testing.assert_allclose(mean, whole_mean, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(m2 / n, whole_var, rtol=1e-12)


def test_mean_var_accumulates_float16_input_in_float32():
    x = random_batch((8, 3, 4), seed=3).astype(np.float16)
    mean, var = stats.mean_var(x)
    assert mean.dtype == np.float32 and var.dtype == np.float32
    ref_mean, ref_var = stats.mean_var(x.astype(np.float64))
    np.testing.assert_allclose(var, ref_var, rtol=1e-5)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)


def test_chunked_mean_var_merges_chunks_to_the_two_pass_result():
    x = np.random.default_rng(5).standard_normal((96, 4)) * 3.0 + 7.0
    mean, var = stats.chunked_mean_var(x, n_chunks=8)
    ref_mean, ref_var = stats.mean_var(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-13)
    np.testing.assert_allclose(var, ref_var, rtol=1e-12)
