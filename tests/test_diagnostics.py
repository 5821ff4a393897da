"""Tests of bncore.experiments.diagnostics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore.experiments.diagnostics import (
    drift,
    ics_measure,
    ics_probe,
    ics_stack,
    layer_moments,
    moments_probe,
    moments_series,
    noise_drift_theory,
    noise_probe,
    percentile_probe,
    unit_percentiles,
)
from bncore.experiments.nets import MLP, ConvNet


def test_unit_percentiles_match_numpy():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(101, 5, generator=gen)
    got = unit_percentiles(z, 3, (15, 50, 85))
    np.testing.assert_allclose(got, np.percentile(z[:, 3].double().numpy(), [15, 50, 85]))
    # for conv maps the unit is a channel, pooled over batch and space
    z4 = torch.randn(4, 3, 2, 2, generator=gen)
    np.testing.assert_allclose(unit_percentiles(z4, 1, (50,)),
                               [np.median(z4[:, 1].double().numpy())])
    with pytest.raises(ValueError, match="out of range"):
        unit_percentiles(z, 5)


def test_layer_moments_match_numpy():
    z = torch.randn(20, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    mean, std = layer_moments(z)
    arr = z.double().numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(mean, arr.mean(1))
    np.testing.assert_allclose(std, arr.std(1))


def test_drift_hand_case():
    means = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 3.0]])
    stds = np.array([[1.0, 1.0], [2.0, 1.0], [2.0, 1.0]])
    d = drift(means, stds)
    assert d.mean_change == pytest.approx((1 + 0 + 0 + 2) / 4)
    assert d.std_change == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="T >= 2"):
        drift(means[:1], stds[:1])


def test_probes_record_model_pre_activations():
    torch.manual_seed(0)
    net = MLP(6, 7, 2, 3, norm="bn", activation="sigmoid")
    x = torch.randn(40, 6)
    _, pre = net.forward_collect(x)
    got = percentile_probe(x, layer=1, unit=2)(net, x, None, 0)
    np.testing.assert_allclose(got, np.percentile(pre[1][:, 2].detach().double().numpy(),
                                                  [15, 50, 85]), rtol=1e-6)
    moments = moments_probe(x, layers=[0])(net, x, None, 0)
    assert len(moments) == 1
    # BN output in training mode: per-unit mean 0 and std 1 (γ=1, β=0) up to eps
    np.testing.assert_allclose(moments[0][0], 0, atol=1e-6)
    np.testing.assert_allclose(moments[0][1], 1, atol=1e-3)


def test_noise_probe_returns_current_noise():
    net = MLP(3, 4, 2, 2, norm="noisy_bn")
    assert noise_probe()(net, None, None, 0) == []
    net(torch.randn(8, 3))
    out = noise_probe()(net, None, None, 0)
    assert len(out) == 2
    np.testing.assert_array_equal(out[1][0], net.blocks[1].norm.last_shift.numpy())


def test_ics_measure_matches_hand_computation_on_two_layer_linear_net():
    """f(x) = W2 W1 x, L = ½ Σ‖f(x) − y‖². G1 = (R W2)ᵀ X, G2 = Rᵀ (X W1ᵀ); only layer 2 has an
    earlier layer, so G′2 = R′ᵀ (X W1′ᵀ) with W1′ = W1 − η G1 and R′ = X W1′ᵀ W2ᵀ − Y.
    """
    torch.manual_seed(0)
    net = MLP(3, 4, 1, 2, norm="none", activation="linear", bias=False).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    lr = 0.05
    res = ics_measure(net, x, y, lr, loss=lambda out, t: 0.5 * ((out - t) ** 2).sum())

    w1 = net.blocks[0].linear.weight.detach().numpy().copy()
    w2 = net.head.weight.detach().numpy().copy()
    X, Y = x.numpy(), y.numpy()
    r = X @ w1.T @ w2.T - Y
    g1, g2 = (r @ w2).T @ X, r.T @ (X @ w1.T)
    w1n = w1 - lr * g1
    rn = X @ w1n.T @ w2.T - Y
    g2n = rn.T @ (X @ w1n.T)
    l2 = np.linalg.norm(g2 - g2n)
    cos = (g2 * g2n).sum() / (np.linalg.norm(g2) * np.linalg.norm(g2n))
    np.testing.assert_allclose(res.l2, [0.0, l2], atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(res.cosine, [1.0, cos], rtol=1e-10)
    np.testing.assert_allclose(res.grad_norm, [np.linalg.norm(g1), np.linalg.norm(g2)])
    assert l2 > 0.01 * np.linalg.norm(g2)  # the case is not trivially zero
    # the parameters are restored exactly
    np.testing.assert_array_equal(net.blocks[0].linear.weight.detach().numpy(), w1)


@pytest.mark.parametrize("norm", ["none", "bn", "noisy_bn"])
def test_ics_vanishes_linearly_with_lr_and_restores_state(norm):
    """G′ → G as η → 0, and ‖G − G′‖ = O(η): halving η halves it (to first order). For noisy
    BN this also checks that G and G′ see the same noise.
    """
    torch.manual_seed(0)
    net = MLP(6, 8, 3, 3, norm=norm, activation="tanh").double()
    x = torch.randn(16, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    net(x)  # draw a first noise
    state = {k: v.clone() for k, v in net.state_dict().items()}
    a, b = ics_measure(net, x, y, 1e-4), ics_measure(net, x, y, 5e-5)
    np.testing.assert_allclose(a.l2[1:] / b.l2[1:], 2.0, rtol=1e-2)
    assert np.all(a.cosine[1:] > 0.999)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_ics_measure_on_convnet_has_one_entry_per_layer():
    torch.manual_seed(0)
    net = ConvNet(1, (3, 4), 5, norm="bn")
    res = ics_measure(net, torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,)), 0.1)
    assert res.l2.shape == (3,) and res.l2[0] == 0 and np.all(res.l2[1:] > 0)
    with pytest.raises(ValueError, match="lr"):
        ics_measure(net, torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,)), 0.0)


def test_all_unit_percentiles_match_numpy():
    z = torch.randn(30, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    got = unit_percentiles(z, None, (15, 50, 85))
    assert got.shape == (3, 4)
    for c in range(4):
        np.testing.assert_allclose(got[:, c], unit_percentiles(z, c, (15, 50, 85)))


def test_noise_drift_theory_per_example_mean_is_two_thirds_a_std_below_shared():
    """Per-example noise: the mean drift is E|b − b′| = 2a/3 (Monte Carlo error ≈ 0.5/√draws),
    and the std √(γ² + s²) moves by less than s does, (k − 1)/3, since
    |√(γ² + s²) − √(γ² + s′²)| ≤ |s − s′|.
    """
    a, k = 1.5, 3.0
    th = noise_drift_theory(a, k, draws=400_000)
    assert abs(th.mean_change - 2 * a / 3) < 5 * 0.5 * 2 * a / np.sqrt(400_000)
    assert 0 < th.std_change < (k - 1) / 3
    probe = noise_drift_theory(a, k, probe_size=64, draws=400_000)
    assert probe.mean_change > th.mean_change  # the probe's sampling noise adds drift


def test_noise_drift_theory_matches_simulation():
    """E|U − U′| = w/3 for U, U′ ~ U(0, w): simulate 200 000 pairs (s.e. ≈ 0.24 % of w)."""
    rng = np.random.default_rng(0)
    a, k = 1.5, 3.0
    th = noise_drift_theory(a, k, per_example=False)
    b = rng.uniform(-a, a, size=(2, 200_000))
    s = rng.uniform(1, k, size=(2, 200_000))
    assert abs(np.abs(b[0] - b[1]).mean() - th.mean_change) < 0.01 * 2 * a
    assert abs(np.abs(s[0] - s[1]).mean() - th.std_change) < 0.01 * (k - 1)


def test_moments_series_and_ics_stack_shapes():
    recs = [[(np.zeros(3), np.ones(3)), (np.ones(2), np.ones(2))] for _ in range(4)]
    means, stds = moments_series(recs, 1)
    assert means.shape == stds.shape == (4, 2)
    torch.manual_seed(0)
    net = MLP(4, 5, 2, 3, norm="bn")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    probe = ics_probe(0.1, every=2)
    out = [probe(net, x, y, t) for t in range(4)]
    assert out[1] is None and out[3] is None
    st = ics_stack(out)
    assert st.l2.shape == st.cosine.shape == (2, 3)
