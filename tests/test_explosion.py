"""The gradient-explosion simulation: shapes, determinism, a per-network reference, theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bncore.experiments.data import gaussian_mixture
from bncore.experiments.depth_sweep import depth_sweep, mlp_weight_grad_sq
from bncore.experiments.explosion import GradientProfile, fit_rate, simulate
from bncore.experiments.nets import MLP
from bncore.experiments.train import loss_fn
from bncore.theory import gradient_explosion_rate, gradient_explosion_rate_large_eps


def _reference(seed: int, b: int, n: int, depth: int, act: str, eps: float, scale: float):
    """One network, written plainly: torch.nn.functional.batch_norm, W as a leaf, autograd.

    Draws in the order :func:`simulate` documents: input, readout, then W^1 … W^L.
    """
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    x = torch.randn(b, n, generator=g, dtype=dt).requires_grad_(True)
    readout = torch.randn(b, n, generator=g, dtype=dt)
    z, zs, ws = x, [x], []
    for _ in range(depth):
        u = torch.nn.functional.batch_norm(z, None, None, training=True, eps=eps)
        h = torch.relu(u) if act == "relu" else u
        w = (torch.randn(n, n, generator=g, dtype=dt) * scale / math.sqrt(n)).requires_grad_(True)
        z = h @ w.T
        z.retain_grad()
        zs.append(z)
        ws.append(w)
    (readout * z).sum().backward()
    gz = np.array([float(t.grad.square().sum()) for t in zs])
    gw = np.array([float(w.grad.square().sum()) for w in ws])
    return gz, gw


@pytest.mark.parametrize("act", ["linear", "relu"])
def test_stacked_networks_match_a_plain_per_network_reference(act: str) -> None:
    b, n, depth, eps, scale = 6, 20, 5, 1e-3, 1.7
    prof = simulate(b, activation=act, width=n, depth=depth, eps=eps, weight_scale=scale,
                    seeds=[3, 11], dtype=torch.float64, device="cpu")
    for row, seed in enumerate((3, 11)):
        gz, gw = _reference(seed, b, n, depth, act, eps, scale)
        np.testing.assert_allclose(prof.grad_z_sq[row], gz, rtol=1e-10)
        np.testing.assert_allclose(prof.grad_w_sq[row], gw, rtol=1e-10)


def test_shapes_and_recorded_setting() -> None:
    prof = simulate(5, activation="relu", width=16, depth=7, seeds=range(3), device="cpu")
    assert isinstance(prof, GradientProfile)
    assert prof.grad_z_sq.shape == (3, 8) and prof.grad_w_sq.shape == (3, 7)
    assert prof.act_var.shape == (3, 8)
    assert prof.seeds == (0, 1, 2) and prof.depth == 7 and prof.width == 16
    layers, sq = prof.norms("weight")
    assert list(layers) == list(range(1, 8)) and sq is prof.grad_w_sq
    layers, sq = prof.norms("preact")
    assert list(layers) == list(range(0, 8))
    assert np.all(np.isfinite(prof.grad_w_sq)) and np.all(prof.grad_w_sq > 0)
    deeper, ratio = prof.local_rate("preact")
    assert list(deeper) == list(range(1, 8)) and ratio.shape == (7,)


def test_deterministic_and_independent_of_chunking_and_grouping() -> None:
    kw = {"activation": "relu", "width": 24, "depth": 6, "device": "cpu"}
    a = simulate(8, seeds=[0, 1, 2], **kw)
    b = simulate(8, seeds=[0, 1, 2], **kw)
    np.testing.assert_array_equal(a.grad_w_sq, b.grad_w_sq)
    one_by_one = simulate(8, seeds=[0, 1, 2], max_chunk_bytes=1, **kw)  # chunks of one network
    np.testing.assert_allclose(one_by_one.grad_w_sq, a.grad_w_sq, rtol=1e-5)
    alone = simulate(8, seeds=[2], **kw)
    np.testing.assert_allclose(alone.grad_z_sq[0], a.grad_z_sq[2], rtol=1e-5)
    other = simulate(8, seeds=[5], **kw)
    assert not np.allclose(other.grad_z_sq[0], a.grad_z_sq[0])


def test_fit_rate_recovers_an_exact_geometric_profile() -> None:
    layers = np.arange(1, 21)
    lam = 1.37
    sq = np.stack([3.0 * lam ** (20 - layers), 0.5 * lam ** (20 - layers)])
    fit = fit_rate(layers, sq, (5, 15))
    assert fit.rate == pytest.approx(lam, rel=1e-12)
    assert fit.stderr == pytest.approx(0.0, abs=1e-12)
    assert fit.fit_layers == (5, 15) and fit.per_seed.shape == (2,)
    with pytest.raises(ValueError, match="fewer than two"):
        fit_rate(layers, sq, (5, 5))
    with pytest.raises(ValueError, match="layers"):
        fit_rate(layers[:-1], sq, (5, 15))
    with pytest.raises(ValueError, match="finite"):
        fit_rate(layers, np.zeros_like(sq), (5, 15))


# Small, fast cases against Yang et al.'s λ. Width 256 and depth 40 (fit over layers 10–30)
# with 8 networks give a standard error of ≈0.5% on λ; the tolerance is 4 standard errors
# plus 2% for the finite-width bias (≈1% at width 500 in the chapter, shrinking with width).
@pytest.mark.parametrize("act, b", [("linear", 8), ("relu", 8), ("relu", 32)])
def test_measured_rate_matches_mean_field_theory(act: str, b: int) -> None:
    prof = simulate(b, activation=act, width=256, depth=40, seeds=range(8), device="cpu")
    fit = prof.fit("weight", skip=(9, 10))
    theory = gradient_explosion_rate(b, act)
    assert fit.stderr / theory < 0.01
    assert abs(fit.rate - theory) <= 4 * fit.stderr + 0.02 * theory
    # the pre-activation gradients grow at the same rate (stationary forward pass)
    assert prof.fit("preact").rate == pytest.approx(fit.rate, rel=0.01)


def test_weight_scale_does_not_change_the_rate_with_bn() -> None:
    kw = {"activation": "relu", "width": 64, "depth": 20, "seeds": range(2), "device": "cpu",
          "dtype": torch.float64, "eps": 1e-12}
    rates = [simulate(8, weight_scale=s, **kw).fit(skip=(4, 4)).rate for s in (0.1, 1.0, 10.0)]
    # BN(aWx) = BN(Wx) up to eps: the same forward pass, the same per-layer gradient ratios
    assert max(rates) / min(rates) - 1 < 1e-6


def test_without_bn_the_preactivation_rate_is_sigma_w_squared_over_two() -> None:
    # plain ReLU net: E‖g^{l−1}‖² = (σ_w²/2)·E‖g^l‖² (He et al. 2015); σ_w = √2 is the He init
    for scale in (1.0, math.sqrt(2.0), 2.0):
        prof = simulate(16, activation="relu", width=256, depth=20, normalize=False,
                        weight_scale=scale, seeds=range(4), dtype=torch.float64, device="cpu")
        assert prof.fit("preact", skip=(3, 3)).rate == pytest.approx(scale**2 / 2, rel=0.05)


def test_large_eps_removes_the_explosion_of_a_linear_bn_network() -> None:
    prof = simulate(8, activation="linear", width=128, depth=30, eps=100.0, seeds=range(4),
                    dtype=torch.float64, device="cpu")
    assert prof.fit("weight", skip=(5, 5)).rate == pytest.approx(1.0, abs=0.02)
    assert prof.act_var[:, -1].max() < 1e-30  # the forward signal has collapsed
    assert gradient_explosion_rate(8, "linear") == pytest.approx(1.2)


def test_large_eps_relu_rate_matches_the_centring_only_prediction() -> None:
    # ε ≫ σ_B²: BN only centres, and ReLU keeps exploding at λ_∞ (same tolerance rule as above)
    prof = simulate(8, activation="relu", width=256, depth=40, eps=100.0, seeds=range(4),
                    dtype=torch.float64, device="cpu")
    fit = prof.fit("weight", skip=(8, 8))
    theory = gradient_explosion_rate_large_eps(8, "relu")
    assert abs(fit.rate - theory) <= 4 * fit.stderr + 0.02 * theory
    assert fit.rate > 1.3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "gelu"}, "activation"),
        ({"eps": 0.0}, "eps"),
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"weight_scale": -1.0}, "weight_scale"),
        ({"seeds": []}, "seeds"),
    ],
)
def test_invalid_settings_raise_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate(8, **{"width": 8, "depth": 2, **kwargs})


def test_batch_size_must_be_an_int_of_at_least_two() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        simulate(1, width=8, depth=2)
    with pytest.raises(TypeError, match="batch_size"):
        simulate(8.0, width=8, depth=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="which"):
        simulate(4, width=8, depth=2).norms("bias")


def test_mlp_weight_grad_sq_matches_autograd_and_leaves_running_stats() -> None:
    data = gaussian_mixture(64, 16, dim=5, num_classes=3, seed=0)
    torch.manual_seed(0)
    model = MLP(5, 12, 3, 3, norm="bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.x_train[:16], data.y_train[:16]
    sq = mlp_weight_grad_sq(model, x, y)
    assert sq.shape == (3,)
    for k, v in model.state_dict().items():  # running statistics and weights untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    loss_fn(model(x), y).backward()
    expected = [float(b.linear.weight.grad.square().sum()) for b in model.blocks]
    np.testing.assert_allclose(sq, expected, rtol=1e-6)


def test_depth_sweep_shapes_and_determinism() -> None:
    data = gaussian_mixture(64, 32, dim=4, num_classes=3, seed=1)
    kw = {"batch_size": 8, "lr": 0.05, "steps": 6, "width": 8, "seeds": (0, 1),
          "init_seeds": (0, 1, 2), "device": "cpu"}
    a = depth_sweep(data, [1, 3], **kw)
    b = depth_sweep(data, [1, 3], **kw)
    assert a.test_acc.shape == (2, 2) and a.train_loss.shape == (2, 2)
    assert [g.shape for g in a.init_grad_sq] == [(3, 1), (3, 3)]
    np.testing.assert_array_equal(a.test_acc, b.test_acc)
    np.testing.assert_array_equal(a.init_grad_sq[1], b.init_grad_sq[1])
    assert np.all((a.test_acc >= 0) & (a.test_acc <= 1)) and not a.diverged.any()
    with pytest.raises(ValueError, match="depths"):
        depth_sweep(data, [], **kw)
