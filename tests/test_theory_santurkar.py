"""Santurkar et al. (2018), Theorems 4.1 and 4.2, against autograd through bncore's BN."""

from __future__ import annotations

import pytest
import torch

from bncore.experiments.bn_curvature import bn_layer_terms, smooth_downstream
from bncore.theory import santurkar_grad_bound, santurkar_grad_gap, santurkar_hessian_bound

DT = torch.float64
TINY_EPS = 1e-14  # the library refuses eps = 0; in float64 this is eps -> 0 up to round-off


def _instance(seed: int, m: int = 12, c: int = 3, eps: float = TINY_EPS):
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(c, generator=gen, dtype=DT) * 3 + 0.2
    y = torch.randn(m, c, generator=gen, dtype=DT) * scale + 2.0
    gamma = torch.rand(c, generator=gen, dtype=DT) * 2 + 0.1
    beta = torch.randn(c, generator=gen, dtype=DT)
    labels = torch.randint(0, 4, (m,), generator=gen)
    f = smooth_downstream(c, 4, labels, seed=seed + 1000, dtype=DT)
    return bn_layer_terms(y, lambda z: 3.0 * f(z), gamma, beta, eps), gamma


@pytest.mark.parametrize("seed", range(5))
def test_grad_bound_is_an_equality_as_eps_goes_to_zero(seed: int) -> None:
    t, gamma = _instance(seed)
    lhs = t.grad_in.square().sum(0)
    rhs = santurkar_grad_bound(t.grad_out, t.yhat, gamma, t.sigma)
    torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("eps", [1e-3, 0.1, 1.0, 10.0])
def test_grad_bound_slack_matches_closed_form_for_positive_eps(eps: float) -> None:
    t, gamma = _instance(7, eps=eps)
    lhs = t.grad_in.square().sum(0)
    rhs = santurkar_grad_bound(t.grad_out, t.yhat, gamma, t.sigma)
    gap = santurkar_grad_gap(t.grad_out, t.yhat, gamma, t.var, eps)
    assert torch.all(gap > 0)
    assert torch.all(lhs <= rhs)
    torch.testing.assert_close(rhs - lhs, gap, rtol=1e-8, atol=1e-18)


@pytest.mark.parametrize("seed", range(5))
def test_sqrt_m_misprint_undercuts_the_exact_gradient(seed: int) -> None:
    t, gamma = _instance(seed)
    lhs = t.grad_in.square().sum(0)
    wrong = santurkar_grad_bound(t.grad_out, t.yhat, gamma, t.sigma, misprint=True)
    assert torch.all(wrong < lhs)


def test_batch_of_two_has_zero_gradient_through_bn() -> None:
    # m = 2: ŷ = (±1, ∓1) and 1 span R², so the projection and both sides vanish (by hand).
    g = torch.tensor([[0.3], [-1.7]], dtype=DT)
    yhat = torch.tensor([[1.0], [-1.0]], dtype=DT)
    one = torch.ones(1, dtype=DT)
    bound = santurkar_grad_bound(g, yhat, one, one)
    torch.testing.assert_close(bound, torch.zeros(1, dtype=DT), atol=1e-15, rtol=0)
    y = torch.tensor([[0.0], [5.0]], dtype=DT)
    t = bn_layer_terms(y, lambda z: (z**3).sum(), one, torch.zeros(1, dtype=DT), TINY_EPS)
    assert float(t.grad_in.abs().max()) < 1e-12


def test_grad_bound_hand_computed_value() -> None:
    # m = 4, γ = 2, σ = 1, g = (1, 2, 3, 4), ŷ = (−1, −1, 1, 1):
    # ‖g‖² = 30, ⟨1, g⟩²/4 = 25, ⟨g, ŷ⟩²/4 = 4²/4 = 4  →  (4/1)(30 − 25 − 4) = 4.
    g = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT).reshape(4, 1)
    yhat = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=DT).reshape(4, 1)
    bound = santurkar_grad_bound(g, yhat, torch.tensor([2.0], dtype=DT), torch.ones(1, dtype=DT))
    assert float(bound) == pytest.approx(4.0)
    wrong = santurkar_grad_bound(
        g, yhat, torch.tensor([2.0], dtype=DT), torch.ones(1, dtype=DT), misprint=True
    )
    assert float(wrong) == pytest.approx(4 * (30 - 25 - 16 / 2))


@pytest.mark.parametrize("seed", range(5))
def test_hessian_bound_is_an_identity_as_eps_goes_to_zero(seed: int) -> None:
    t, gamma = _instance(seed)
    rhs = santurkar_hessian_bound(t.grad_in, t.grad_out, t.yhat, t.quad_out, gamma, t.sigma)
    scale = float(t.quad_in.abs().max())
    torch.testing.assert_close(t.quad_in, rhs, rtol=1e-8, atol=1e-10 * scale)


def test_hessian_bound_can_fail_for_positive_eps() -> None:
    # With ε > 0 BN's Jacobian is no longer γ/σ times a projection and the identity breaks in
    # either direction: some random indefinite quadratic downstream losses exceed the "bound".
    violations = 0
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        m = 8
        y = torch.randn(m, 1, generator=gen, dtype=DT)
        a = torch.randn(m, m, generator=gen, dtype=DT)
        a = (a + a.T) / 2
        b = 3 * torch.randn(m, generator=gen, dtype=DT)
        one, zero = torch.ones(1, dtype=DT), torch.zeros(1, dtype=DT)
        eps = 0.5 * float(y.var(unbiased=False))
        t = bn_layer_terms(
            y, lambda z, a=a, b=b: 0.5 * z[:, 0] @ a @ z[:, 0] + b @ z[:, 0], one, zero, eps
        )
        rhs = santurkar_hessian_bound(t.grad_in, t.grad_out, t.yhat, t.quad_out, one, t.sigma)
        violations += int(t.quad_in.item() > rhs.item() + 1e-12)
    assert violations > 0


def test_bounds_validate_their_inputs() -> None:
    g = torch.zeros(4, 2, dtype=DT)
    one = torch.ones(2, dtype=DT)
    with pytest.raises(ValueError, match="shape"):
        santurkar_grad_bound(g, torch.zeros(4, 3, dtype=DT), one, one)
    with pytest.raises(ValueError, match="m >= 2"):
        santurkar_grad_bound(torch.zeros(1, 2), torch.zeros(1, 2), one, one)
    with pytest.raises(ValueError, match="gamma"):
        santurkar_grad_bound(g, g, torch.ones(3, dtype=DT), one)
    with pytest.raises(ValueError, match="positive"):
        santurkar_grad_bound(g, g, one, torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="eps"):
        santurkar_grad_gap(g, g, one, one, -1.0)
