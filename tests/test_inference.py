"""Tests for bncore.norm.inference (running estimates, E[σ_B²], conventions, train/eval gap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bncore import theory
from bncore.norm import numpy_bn, torch_bn
from bncore.norm.inference import (
    ema_chains,
    loglog_slope,
    normalize,
    recalibrate_bn,
    running_trace,
    simulate_batch_variance,
    textbook_running_stats,
    train_eval_gap,
)


def _stream(seed: int = 0, t: int = 30, m: int = 8, c: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(2.0, 1.5, size=(m, c)) for _ in range(t)]


@pytest.mark.parametrize("momentum", [0.01, 0.1, 0.5, None])
def test_running_trace_same_for_numpy_bncore_and_torch(momentum):
    batches = _stream()
    traces = [
        running_trace(numpy_bn.BatchNorm(3, momentum=momentum), batches),
        running_trace(torch_bn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64), batches),
        running_trace(nn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64), batches),
    ]
    for mean, var in traces[1:]:
        np.testing.assert_allclose(mean, traces[0][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(var, traces[0][1], rtol=0, atol=1e-12)


def test_cumulative_average_when_momentum_is_none():
    batches = _stream()
    mean, var = running_trace(torch_bn.BatchNorm1d(3, momentum=None, dtype=torch.float64), batches)
    t = np.arange(1, len(batches) + 1)[:, None]
    batch_means = np.stack([b.mean(0) for b in batches])
    batch_vars = np.stack([b.var(0, ddof=1) for b in batches])  # unbiased
    np.testing.assert_allclose(mean, np.cumsum(batch_means, 0) / t, rtol=1e-12)
    np.testing.assert_allclose(var, np.cumsum(batch_vars, 0) / t, rtol=1e-12)


def test_running_trace_requires_running_stats():
    with pytest.raises(ValueError, match="track_running_stats"):
        running_trace(numpy_bn.BatchNorm(3, track_running_stats=False), _stream())


def test_ema_chains_constant_input_closed_form():
    values = np.full((50, 2), 3.0)
    out = ema_chains(values, 0.1, init=np.array([0.0, 10.0]))
    t = np.arange(1, 51)[:, None]
    expected = 3.0 + (np.array([0.0, 10.0]) - 3.0) * 0.9**t  # geometric forgetting of init
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_ema_chains_none_is_cumulative_mean():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 5))
    np.testing.assert_allclose(
        ema_chains(v, None, init=7.0), np.cumsum(v, 0) / np.arange(1, 41)[:, None], rtol=1e-12
    )


def test_ema_stationary_variance_matches_simulation():
    rng = np.random.default_rng(2)
    alpha, k = 0.2, 20000
    out = ema_chains(rng.normal(size=(100, k)), alpha)  # (1 − α)^100 ≈ 2e-10: stationary
    var, theory_var = out[-1].var(ddof=1), theory.ema_stationary_variance(alpha, 1.0)
    se = theory_var * np.sqrt(2 / (k - 1))  # Gaussian chains: SE of a sample variance
    assert abs(var - theory_var) < 4 * se


def test_ema_chains_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ema_chains(np.zeros(5), 0.1)
    with pytest.raises(ValueError, match="momentum"):
        ema_chains(np.zeros((5, 2)), 1.5)


@pytest.mark.parametrize("distribution", ["normal", "exponential", "uniform"])
def test_batch_variance_is_biased_by_m_minus_1_over_m(distribution):
    sim = simulate_batch_variance([2, 3, 5, 16], 40000, np.random.default_rng(3), distribution)
    pop = sim.population_var
    expected = np.array([theory.expected_batch_variance(int(m), pop) for m in sim.ms])
    z = (sim.mean - expected) / sim.sem
    assert np.all(np.abs(z) < 4), z  # 4 standard errors: P(|z| > 4) ≈ 6e-5 per entry


def test_batch_variance_simulation_is_deterministic_and_validates():
    a = simulate_batch_variance([2, 4], 100, np.random.default_rng(9))
    b = simulate_batch_variance([2, 4], 100, np.random.default_rng(9))
    np.testing.assert_array_equal(a.mean, b.mean)
    with pytest.raises(ValueError, match=">= 2"):
        simulate_batch_variance([1, 4], 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="distribution"):
        simulate_batch_variance([2], 100, np.random.default_rng(0), "cauchy")  # type: ignore[arg-type]


def test_expected_batch_variance_validates():
    assert theory.expected_batch_variance(4, 2.0) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        theory.expected_batch_variance(1)


def test_textbook_old_weight_09_equals_pytorch_01():
    batches = _stream(4)
    new = textbook_running_stats(batches, 0.1, momentum_weights="new")
    old = textbook_running_stats(batches, 0.9, momentum_weights="old")
    np.testing.assert_allclose(new[0], old[0], rtol=1e-13)
    np.testing.assert_allclose(new[1], old[1], rtol=1e-13)
    # and PyTorch's own layer agrees with the "new"/"unbiased" convention
    mean, var = running_trace(torch_bn.BatchNorm1d(3, dtype=torch.float64), batches)
    np.testing.assert_allclose(new[0], mean, rtol=1e-12)
    np.testing.assert_allclose(new[1], var, rtol=1e-12)


def test_textbook_biased_variance_is_scaled_by_m_minus_1_over_m():
    batches = _stream(5, m=8)
    _, unb = textbook_running_stats(batches, 0.1, init_var=0.0)
    _, bia = textbook_running_stats(batches, 0.1, variance="biased", init_var=0.0)
    np.testing.assert_allclose(bia, unb * 7 / 8, rtol=1e-12)  # the recursion is linear


def test_textbook_running_stats_validates():
    with pytest.raises(ValueError, match="momentum_weights"):
        textbook_running_stats(_stream(), 0.1, momentum_weights="newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance"):
        textbook_running_stats(_stream(), 0.1, variance="sample")  # type: ignore[arg-type]


def test_normalize_eps_placements_hand_computed():
    x, mean, var = np.array([[3.0]]), np.array([1.0]), np.array([4.0])
    assert normalize(x, mean, var, 5.0)[0, 0] == pytest.approx(2.0 / 3.0)  # 2/√9
    assert normalize(x, mean, var, 1.0, "std")[0, 0] == pytest.approx(2.0 / 3.0)  # 2/(2+1)
    with pytest.raises(ValueError, match="eps_placement"):
        normalize(x, mean, var, 1.0, "outside")  # type: ignore[arg-type]


def _tiny_model(norm: bool) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 8)]
    if norm:
        layers.append(torch_bn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def test_train_eval_gap_restores_state_and_is_zero_without_bn():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    model = _tiny_model(norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train_eval_gap(model, x, y, [4, 16, 64], batches_per_size=8)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.training
    assert np.all(res.gap > 0)
    plain = train_eval_gap(_tiny_model(norm=False), x, y, [4, 64], batches_per_size=8)
    np.testing.assert_allclose(plain.gap, 0.0, atol=1e-6)
    np.testing.assert_allclose(plain.acc_train[-1], plain.acc_eval)  # B = n: every example


def test_train_eval_gap_deterministic_and_validates():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 5, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    a = train_eval_gap(_tiny_model(True), x, y, [2, 8], seed=3)
    b = train_eval_gap(_tiny_model(True), x, y, [2, 8], seed=3)
    np.testing.assert_array_equal(a.gap, b.gap)
    with pytest.raises(ValueError, match="batch sizes"):
        train_eval_gap(_tiny_model(True), x, y, [1, 8])
    with pytest.raises(ValueError, match="disagree"):
        train_eval_gap(_tiny_model(True), x, y[:10], [2])


def test_loglog_slope_of_exact_power_law():
    b = np.array([2.0, 4, 8, 16, 32])
    assert loglog_slope(b, 3 * b**-0.5) == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        loglog_slope([1.0], [1.0])


def test_recalibrate_bn_gives_alg2_population_statistics():
    """First BN's input Linear(x) does not depend on the batch, so Alg. 2's E_B[μ_B] and
    m/(m−1)·E_B[σ_B²] can be computed directly from the batches.
    """
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(100, 5, generator=gen, dtype=torch.float64) * 2 + 1
    model = _tiny_model(norm=True).double()
    model.train()
    with torch.no_grad():
        model(x[:10] * 5)  # some unrelated running statistics to be replaced
    nb = recalibrate_bn(model, x, 16, seed=3)
    assert nb == 6 and not model.training
    assert model[1].momentum == 0.1  # restored
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = torch.stack([model[0](x[perm[i * 16:(i + 1) * 16]]) for i in range(6)])  # (6, 16, 8)
    torch.testing.assert_close(model[1].running_mean, z.mean(1).mean(0))
    torch.testing.assert_close(model[1].running_var, z.var(1, unbiased=True).mean(0))
    with pytest.raises(ValueError, match="no BN"):
        recalibrate_bn(_tiny_model(norm=False), x, 16)
    with pytest.raises(ValueError, match="batch_size"):
        recalibrate_bn(model, x, 1)
