"""Tests of bncore.experiments.nets: shapes, determinism, initialization, and the noise of noisy
BN.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bncore.experiments.nets import (
    MLP,
    ConvNet,
    NoisyBatchNorm,
    layer_groups,
    layer_weights,
    make_activation,
    make_norm,
    probe_mode,
)
from bncore.norm.torch_bn import BatchNorm1d, BatchNorm2d


@pytest.mark.parametrize("norm", ["none", "bn", "noisy_bn"])
def test_mlp_shapes_and_collect(norm):
    torch.manual_seed(0)
    net = MLP(64, 20, 3, 10, norm=norm, activation="tanh")
    x = torch.randn(16, 64)
    logits, pre = net.forward_collect(x)
    assert logits.shape == (16, 10)
    assert [z.shape for z in pre] == [(16, 20)] * 3
    torch.testing.assert_close(net(x).shape, logits.shape)
    assert len(net.blocks) == 3 and all(hasattr(b, "linear") for b in net.blocks)


def test_mlp_forward_collect_matches_forward_and_flattens_images():
    torch.manual_seed(0)
    net = MLP(64, 8, 2, 3, norm="bn").eval()
    x = torch.randn(5, 1, 8, 8)
    logits, pre = net.forward_collect(x)
    torch.testing.assert_close(logits, net(x))
    # the collected pre-activation is the input of the activation: act(pre[0]) feeds block 1
    torch.testing.assert_close(pre[1], net.blocks[1].forward_pre(torch.relu(pre[0])))


@pytest.mark.parametrize("norm", ["none", "bn", "noisy_bn"])
def test_convnet_shapes(norm):
    torch.manual_seed(0)
    net = ConvNet(1, (4, 8, 16), 10, norm=norm)
    x = torch.randn(6, 1, 8, 8)
    logits, pre = net.forward_collect(x)
    assert logits.shape == (6, 10)
    assert [tuple(z.shape) for z in pre] == [(6, 4, 8, 8), (6, 8, 4, 4), (6, 16, 2, 2)]
    with pytest.raises(ValueError, match="N, C, H, W"):
        net(torch.randn(6, 64))


def test_construction_is_deterministic_given_seed():
    torch.manual_seed(3)
    a = MLP(10, 7, 2, 3, norm="bn")
    torch.manual_seed(3)
    b = MLP(10, 7, 2, 3, norm="bn")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_make_norm_kinds_and_errors():
    assert isinstance(make_norm("none", 4), nn.Identity)
    assert isinstance(make_norm("bn", 4), BatchNorm1d)
    assert isinstance(make_norm("bn", 4, dims=2), BatchNorm2d)
    assert isinstance(make_norm("noisy_bn", 4, dims=2).bn, BatchNorm2d)
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("layer", 4)
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("gelu")
    with pytest.raises(ValueError, match="unknown init"):
        MLP(3, 3, 1, 2, init="orthogonal")
    with pytest.raises(ValueError, match="width"):
        MLP(3, 0, 1, 2)
    with pytest.raises(ValueError, match="std_scale"):
        NoisyBatchNorm(3, std_scale=0.5)


@pytest.mark.parametrize(
    ("init", "activation", "expected"),
    [("kaiming", "relu", math.sqrt(2 / 400)), ("kaiming", "tanh", 5 / 3 / 20),
     ("lecun", "relu", 1 / 20), ("xavier", "relu", math.sqrt(2 / 800))],
)
def test_init_std(init, activation, expected):
    torch.manual_seed(0)
    net = MLP(400, 400, 1, 3, norm="none", activation=activation, init=init)
    w = net.blocks[0].linear.weight
    # 160 000 Gaussian draws: the sample std has relative s.e. 1/sqrt(2·160000) ≈ 0.18 %
    assert abs(float(w.detach().std()) / expected - 1) < 0.01
    assert float(net.blocks[0].linear.bias.detach().abs().max()) == 0.0


def test_weight_std_overrides_init():
    torch.manual_seed(0)
    net = MLP(400, 400, 1, 3, norm="none", weight_std=3.0)
    assert abs(float(net.blocks[0].linear.weight.detach().std()) / (3.0 / 20) - 1) < 0.01


def test_layer_weights_and_groups():
    net = MLP(5, 4, 2, 3, norm="bn")
    ws = layer_weights(net)
    assert [tuple(w.shape) for w in ws] == [(4, 5), (4, 4), (3, 4)]
    groups = layer_groups(net)
    assert len(groups) == 3 and len(groups[0]) == 4  # weight, bias, γ, β
    assert sum(len(g) for g in groups) == len(list(net.parameters()))


def test_shared_noisy_bn_output_is_scaled_shifted_bn():
    torch.manual_seed(0)
    noisy = NoisyBatchNorm(6, mean_scale=0.7, std_scale=3.0, seed=1, per_example=False)
    plain = BatchNorm1d(6)
    x = torch.randn(32, 6) * 2 + 1
    y = noisy(x)
    expected = plain(x) * noisy.last_scale + noisy.last_shift
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(noisy.bn.running_mean, plain.running_mean)


def test_per_example_noise_is_iid_with_the_steps_mean_and_scale():
    """Santurkar et al. §2.1: y = BN(x) + ξ, ξ_ij ~ N(b_j, s_j²) i.i.d. over the examples."""
    torch.manual_seed(0)
    m, c = 4000, 5
    noisy = NoisyBatchNorm(c, mean_scale=1.0, std_scale=2.0, seed=3)
    plain = BatchNorm1d(c)
    x = torch.randn(m, c) * 2 + 1
    xi = (noisy(x) - plain(x)).double()  # (m, C): the noise alone
    b, s = noisy.last_shift.double(), noisy.last_scale.double()
    # 5 standard errors of a mean (s/√m) and of a Gaussian sample sd (s/√(2m))
    assert torch.all((xi.mean(0) - b).abs() < 5 * s / math.sqrt(m))
    assert torch.all((xi.std(0) - s).abs() < 5 * s / math.sqrt(2 * m))
    # independent over examples: the lag-1 correlation is within 5/√m of 0
    z = (xi - xi.mean(0)) / xi.std(0)
    assert torch.all((z[1:] * z[:-1]).mean(0).abs() < 5 / math.sqrt(m))
    # a new distribution at the next step
    noisy(x)
    assert not torch.equal(noisy.last_shift.double(), b)


def test_per_example_noise_in_probe_mode_is_the_steps_noise():
    torch.manual_seed(0)
    net = MLP(4, 6, 2, 2, norm="noisy_bn")
    x = torch.randn(8, 4)
    y0 = net(x)
    with probe_mode(net):
        torch.testing.assert_close(net(x), y0)  # the same batch shape reuses the step's noise
        big = torch.randn(64, 4)
        torch.testing.assert_close(net(big), net(big))  # other shapes: one draw per step


def test_noisy_bn_noise_statistics_match_configuration():
    a, k, c, steps = 0.8, 2.5, 50, 400
    noisy = NoisyBatchNorm(c, mean_scale=a, std_scale=k, seed=0)
    x = torch.randn(8, c)
    shifts, scales = [], []
    for _ in range(steps):
        noisy(x)
        shifts.append(noisy.last_shift)
        scales.append(noisy.last_scale)
    b, s = torch.stack(shifts).double(), torch.stack(scales).double()
    n = b.numel()  # 20 000 i.i.d. uniform draws of each
    assert float(b.min()) >= -a and float(b.max()) <= a
    assert float(s.min()) >= 1 and float(s.max()) <= k
    # U(-a, a): mean 0, std a/√3; U(1, k): mean (1+k)/2, std (k-1)/√12. Tolerance 5 s.e.
    sd_b, sd_s = a / math.sqrt(3), (k - 1) / math.sqrt(12)
    assert abs(float(b.mean())) < 5 * sd_b / math.sqrt(n)
    assert abs(float(s.mean()) - (1 + k) / 2) < 5 * sd_s / math.sqrt(n)
    # the sample std of a uniform has s.e. ≈ σ·sqrt((κ−1)/(4n)), κ = 1.8 → ≈ 0.45σ/√n
    assert abs(float(b.std()) - sd_b) < 5 * 0.45 * sd_b / math.sqrt(n)
    assert abs(float(s.std()) - sd_s) < 5 * 0.45 * sd_s / math.sqrt(n)
    # the noise changes at every step
    assert all(not torch.equal(shifts[i], shifts[i + 1]) for i in range(steps - 1))


def test_noisy_bn_eval_is_plain_bn():
    torch.manual_seed(0)
    noisy = NoisyBatchNorm(4, dims=2, mean_scale=1.0, std_scale=2.0)
    plain = BatchNorm2d(4)
    for _ in range(5):
        x = torch.randn(8, 4, 3, 3) * 3 - 1
        noisy(x)
        plain(x)
    noisy.eval()
    plain.eval()
    x = torch.randn(8, 4, 3, 3)
    torch.testing.assert_close(noisy(x), plain(x))


def test_noisy_bn_seed_makes_noise_reproducible():
    x = torch.randn(8, 3)
    a, b = NoisyBatchNorm(3, seed=5), NoisyBatchNorm(3, seed=5)
    torch.testing.assert_close(a(x), b(x))
    assert not torch.equal(NoisyBatchNorm(3, seed=6)(x), a(x))


def test_mlp_gives_each_noisy_layer_its_own_stream():
    net = MLP(4, 5, 2, 2, norm="noisy_bn", noise={"seed": 1})
    net(torch.randn(8, 4))
    n0, n1 = net.blocks[0].norm, net.blocks[1].norm
    assert n0.seed != n1.seed and not torch.equal(n0.last_shift, n1.last_shift)


def test_probe_mode_freezes_noise_and_restores_buffers():
    torch.manual_seed(0)
    net = MLP(4, 5, 2, 2, norm="noisy_bn")
    x = torch.randn(8, 4)
    y0 = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    shift = net.blocks[0].norm.last_shift.clone()
    with probe_mode(net):
        y1 = net(x)
        net(torch.randn(8, 4) * 5)
    torch.testing.assert_close(y1, y0)  # same noise, same batch statistics
    assert torch.equal(net.blocks[0].norm.last_shift, shift)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert net.blocks[0].norm.resample
