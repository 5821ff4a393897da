"""``bncore.experiments.batched_mlp``: K MLPs at once are K independent MLPs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore.experiments.batched_mlp import BatchedMLP, batched_accuracy, train_batched
from bncore.experiments.data import digits
from bncore.norm.torch_bn import batch_norm


@pytest.fixture(scope="module")
def data():
    return digits()


def test_each_model_is_normalized_by_its_own_statistics():
    net = BatchedMLP(3, 5, 4, 1, 2, norm="bn", seed=0)
    x = torch.randn(3, 16, 5)
    pre: list[torch.Tensor] = []
    net(x, pre=pre)
    for k in range(3):
        z = x[k] @ net.weights[0][k] + net.biases[0][k]
        expected = batch_norm(z, None, None, training=True)
        torch.testing.assert_close(pre[0][k], expected, rtol=1e-5, atol=1e-5)


def test_ghost_batches_normalize_each_group_separately():
    net = BatchedMLP(2, 5, 4, 1, 2, norm="bn", ghost=4, seed=0)
    x = torch.randn(2, 12, 5)
    pre: list[torch.Tensor] = []
    net(x, pre=pre)
    z = x[1, 4:8] @ net.weights[0][1] + net.biases[0][1]
    torch.testing.assert_close(pre[0][1, 4:8], batch_norm(z, None, None, training=True),
                               rtol=1e-5, atol=1e-5)


def test_ghost_size_must_divide_the_batch():
    net = BatchedMLP(1, 5, 4, 1, 2, ghost=4)
    with pytest.raises(ValueError, match="does not divide"):
        net(torch.randn(1, 10, 5))


def test_eval_needs_calibrated_statistics_then_uses_them():
    net = BatchedMLP(2, 5, 4, 2, 3, seed=0)
    x = torch.randn(64, 5)
    net.eval()
    with pytest.raises(RuntimeError, match="calibrate"):
        net(x)
    net.calibrate(x)
    net.train()
    train_out = net(x)
    net.eval()  # on the calibration set itself, eval ≈ train mode (unbiased vs biased var)
    torch.testing.assert_close(net(x), train_out, rtol=0.05, atol=0.05)


def test_training_lowers_the_loss_and_a_huge_rate_is_marked_diverged(data):
    net = BatchedMLP(2, data.in_dim, 16, 2, 10, norm="none", init_scale=[1.0, 1.0], seed=0)
    hist = train_batched(net, data, steps=40, lr=[0.1, 1e4], batch_size=32)
    assert hist.loss[-5:, 0].mean() < hist.loss[:5, 0].mean()
    assert list(hist.diverged) == [False, True]
    assert hist.test_acc.shape == (1, 2) and hist.gap.shape == (2,)


def test_weight_decay_norms_are_recorded_per_layer(data):
    net = BatchedMLP(2, data.in_dim, 8, 2, 10, seed=0)
    hist = train_batched(net, data, steps=5, lr=0.1, weight_decay=[0.0, 0.5],
                         track_norms=True)
    assert hist.weight_sq.shape == (5, 2, 2) and hist.grad_sq.shape == (5, 2, 2)
    assert np.all(hist.weight_sq[-1, 1] < hist.weight_sq[-1, 0])
    acc = batched_accuracy(net, data.x_test, data.y_test)
    np.testing.assert_allclose(acc.numpy(), hist.final_test_acc)
