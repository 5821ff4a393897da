"""Scale invariance before batch norm in a network: the gradient is orthogonal to each
weight row, SGD grows the rows by Pythagoras (bncore.experiments.scale_invariant_sgd).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore.experiments.scale_invariant_sgd import bn_classifier_loss_grad, scale_invariant_sgd


@pytest.fixture(scope="module")
def classification() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(96, 8, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    W = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    return X, y, W


def test_bn_gradient_is_orthogonal_to_w_and_scales_inversely(classification) -> None:
    X, y, W = classification
    loss, grad = bn_classifier_loss_grad(W, X, y, gamma=2.0)
    cos = (W * grad).sum(1) / (W.norm(dim=1) * grad.norm(dim=1))
    assert cos.abs().max().item() < 1e-10
    loss5, grad5 = bn_classifier_loss_grad(5.0 * W, X, y, gamma=2.0)
    assert loss5.item() == pytest.approx(loss.item(), rel=1e-10)
    torch.testing.assert_close(5.0 * grad5, grad, rtol=1e-9, atol=1e-12)


def test_sgd_grows_norms_by_pythagoras_and_scaled_runs_coincide(classification) -> None:
    X, y, W = classification
    lr = 0.3
    tr = scale_invariant_sgd(W, X, y, lr=lr, steps=30, batch_size=32, seed=1, gamma=2.0)
    growth = tr.row_norms[1:] ** 2 - tr.row_norms[:-1] ** 2
    np.testing.assert_allclose(growth, lr**2 * tr.grad_norms**2, rtol=1e-8)
    assert np.all(np.diff(tr.row_norms, axis=0) > 0)
    a = 4.0
    tr_a = scale_invariant_sgd(
        a * W, X, y, lr=lr * a**2, steps=30, batch_size=32, seed=1, gamma=2.0
    )
    torch.testing.assert_close(tr_a.W, a * tr.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tr_a.losses, tr.losses, rtol=1e-9)
    tr_b = scale_invariant_sgd(W, X, y, lr=lr, steps=30, batch_size=32, seed=1, gamma=2.0)
    torch.testing.assert_close(tr_b.W, tr.W, rtol=0, atol=0)
