"""Signal-propagation statistics: hand-computed cases, shapes and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore.experiments.resnets import ResNet
from bncore.experiments.runtime import seed_everything
from bncore.experiments.signal_prop import (
    SignalProp,
    channel_stats,
    gradient_profile,
    overall_growth,
    signal_propagation,
    signal_propagation_seeds,
)


def test_channel_stats_hand_computed_2d() -> None:
    # channel 0: (1, 3): mean 2, biased var 1; channel 1: (2, 6): mean 4, var 4.
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    sq_mean, var = channel_stats(x)
    assert sq_mean == pytest.approx((4 + 16) / 2)
    assert var == pytest.approx((1 + 4) / 2)


def test_channel_stats_pools_batch_and_space() -> None:
    # (N=2, C=1, 1, 2): the channel's four values 0, 2, 4, 6: mean 3, var (9+1+1+9)/4 = 5.
    x = torch.tensor([[[[0.0, 2.0]]], [[[4.0, 6.0]]]])
    assert channel_stats(x) == pytest.approx((9.0, 5.0))


def test_channel_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="N, C"):
        channel_stats(torch.zeros(3))
    with pytest.raises(TypeError):
        channel_stats(np.zeros((2, 2)))  # type: ignore[arg-type]


def test_branch_fraction_and_second_moment() -> None:
    sp = SignalProp(sq_mean=np.array([0.0, 1.0]), var=np.array([1.0, 3.0]),
                    branch_sq_mean=np.array([1.0]), branch_var=np.array([1.0]))
    np.testing.assert_allclose(sp.second_moment, [1.0, 4.0])
    np.testing.assert_allclose(sp.branch_fraction, [0.5])


def test_signal_propagation_matches_direct_computation_and_restores_mode() -> None:
    seed_everything(0)
    model = ResNet(8, 16, 3, 10, "bn").eval()
    x = torch.randn(64, 8)
    sp = signal_propagation(model, x)
    assert not model.training
    model.train()
    with torch.no_grad():
        _, streams, branches = model.forward_collect(x)
    assert sp.var[-1] == pytest.approx(float(streams[-1].var(dim=0, unbiased=False).mean()))
    assert sp.branch_sq_mean[0] == pytest.approx(float(branches[0].mean(dim=0).square().mean()))
    assert sp.sq_mean.shape == (4,) and sp.branch_var.shape == (3,)


def test_signal_propagation_seeds_is_deterministic_and_stacked() -> None:
    a = signal_propagation_seeds("nf", [0, 1], width=16, depth=3, batch_size=32)
    b = signal_propagation_seeds("nf", [0, 1], width=16, depth=3, batch_size=32)
    assert a.var.shape == (2, 4) and a.branch_var.shape == (2, 3)
    np.testing.assert_array_equal(a.var, b.var)
    conv = signal_propagation_seeds("bn", [0], width=4, depth=2, batch_size=8, dims=2)
    assert conv.sq_mean.shape == (1, 3)


def test_fixup_and_skipinit_streams_are_constant() -> None:
    for variant in ("fixup", "skipinit"):
        sp = signal_propagation_seeds(variant, [0], width=16, depth=4, batch_size=32)
        np.testing.assert_array_equal(sp.second_moment[0], sp.second_moment[0, 0])
        assert np.all(sp.branch_var == 0.0)


def test_overall_growth_hand_computed() -> None:
    total, per_layer = overall_growth(np.array([[8.0, 4.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(total, [8.0, 1.0])
    np.testing.assert_allclose(per_layer, [2.0, 1.0])
    with pytest.raises(ValueError):
        overall_growth(np.array([[1.0, 0.0]]))


def test_gradient_profile_shapes_and_determinism() -> None:
    a = gradient_profile([0, 1], width=16, depth=3, batch_size=16)
    b = gradient_profile([0, 1], width=16, depth=3, batch_size=16)
    assert a.grad_w_sq.shape == (2, 6) and a.grad_x_sq.shape == (2, 4)
    np.testing.assert_array_equal(a.grad_w_sq, b.grad_w_sq)
    assert np.all(a.grad_w_sq > 0)
    # The loss is linear in x_L with readout R, so ∂L/∂x_L = R: ‖R‖² ≈ B·width = 256.
    assert 128 < a.grad_x_sq[0, -1] < 512
