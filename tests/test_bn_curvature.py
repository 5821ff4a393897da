"""Gradient and curvature through one batch-norm layer, the terms of Santurkar et al. (2018),
Thm 4.1 and 4.2 (bncore.experiments.bn_curvature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bncore.experiments.bn_curvature import bn_layer_terms, smooth_downstream

DT = torch.float64


def test_bn_layer_terms_match_torch_reference_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    m, c = 10, 2
    y = torch.randn(m, c, generator=gen, dtype=DT) * 2 + 1
    gamma = torch.tensor([0.7, 1.9], dtype=DT)
    beta = torch.tensor([0.1, -0.3], dtype=DT)
    labels = torch.randint(0, 3, (m,), generator=gen)
    f = smooth_downstream(c, 3, labels, seed=4, dtype=DT)
    eps = 1e-3
    t = bn_layer_terms(y, f, gamma, beta, eps)

    def ref(yy: torch.Tensor) -> torch.Tensor:
        return f(F.batch_norm(yy, None, None, gamma, beta, training=True, eps=eps))

    yy = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ref(yy), yy)
    torch.testing.assert_close(t.grad_in, grad)
    hess = torch.autograd.functional.hessian(ref, y).reshape(m * c, m * c)
    for j in range(c):
        d = torch.zeros(m, c, dtype=DT)
        d[:, j] = grad[:, j]
        torch.testing.assert_close(t.quad_in[j], d.reshape(-1) @ hess @ d.reshape(-1))
    torch.testing.assert_close(t.var, y.var(0, unbiased=False))
    torch.testing.assert_close(t.yhat.mean(0), torch.zeros(c, dtype=DT), atol=1e-12, rtol=0)


def test_bn_layer_terms_handles_a_linear_downstream_loss() -> None:
    # L(z) = ⟨z, c⟩ has zero Hessian: quad_out = 0, and quad_in is BN's own curvature only.
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(8, 1, generator=gen, dtype=DT)
    c = torch.randn(8, 1, generator=gen, dtype=DT)
    one, zero = torch.ones(1, dtype=DT), torch.zeros(1, dtype=DT)
    t = bn_layer_terms(y, lambda z: (z * c).sum(), one, zero, 1e-3)
    torch.testing.assert_close(t.grad_out, c)
    assert float(t.quad_out.abs().max()) == 0.0
    assert float(t.quad_in.abs().max()) > 0.0
