"""Tests for bncore.norm.gradcheck: finite differences, relative errors and BN's Jacobian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bncore.norm import gradcheck, jacobian, numpy_bn, torch_bn

F64 = torch.float64


# --- relative errors -------------------------------------------------------------------------


def test_rel_error_hand_computed():
    # entry-wise |a−b|/(|a|+|b|): 0 and 0.2/4.2; the worst is the second
    assert gradcheck.rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(
        0.2 / 4.2, rel=1e-12
    )


def test_rel_error_uses_floor_for_near_zero_entries():
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert gradcheck.rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-4)


def test_rel_error_accepts_numpy_and_torch_alike():
    a = np.array([[1.0, -3.0], [0.5, 2.0]])
    b = a * (1 + 1e-6)
    expected = gradcheck.rel_error(a, b)
    assert gradcheck.rel_error(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected)
    assert gradcheck.rel_error(a, torch.tensor(b)) == pytest.approx(expected)
    assert expected == pytest.approx(1e-6 / (2 + 1e-6), rel=1e-6)


def test_norm_rel_error_hand_computed():
    # ‖(0, 1)‖ / max(‖(3, 4)‖, ‖(3, 5)‖) = 1 / √34
    got = gradcheck.norm_rel_error(np.array([3.0, 4.0]), np.array([3.0, 5.0]))
    assert got == pytest.approx(1 / np.sqrt(34), rel=1e-12)
    assert gradcheck.norm_rel_error(np.zeros(2), np.zeros(2)) == 0.0


@pytest.mark.parametrize("fn", [gradcheck.rel_error, gradcheck.norm_rel_error])
def test_errors_reject_shape_mismatch(fn):
    with pytest.raises(ValueError, match="shapes differ"):
        fn(np.zeros(3), np.zeros(4))


def test_rel_error_rejects_nonpositive_floor():
    with pytest.raises(ValueError, match="floor"):
        gradcheck.rel_error(np.zeros(2), np.zeros(2), floor=0.0)


# --- finite differences ----------------------------------------------------------------------


def test_numerical_gradient_of_quadratic_is_exact_up_to_rounding():
    # centred differences have no truncation error for quadratics: f = Σ c·x², ∇f = 2c·x
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    grad = gradcheck.numerical_gradient(lambda z: np.sum(c * z**2), x)
    assert gradcheck.rel_error(grad, 2 * c * x) < 1e-8


def test_numerical_gradient_torch_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    w = torch.randn(5, 3, generator=gen, dtype=F64)
    grad = gradcheck.numerical_gradient(lambda z: (torch.sin(z) * w).sum(), x)
    assert isinstance(grad, torch.Tensor) and grad.shape == x.shape and grad.dtype == F64
    assert gradcheck.rel_error(grad, torch.cos(x) * w) < 1e-8


def test_numerical_gradient_error_is_second_order_in_h():
    # f = Σ exp(x): error ≈ h²/6·exp(x), so halving h divides the error by 4
    x = np.array([0.3, -0.2, 1.1])
    err = [
        np.abs(gradcheck.numerical_gradient(lambda z: np.sum(np.exp(z)), x, h) - np.exp(x)).max()
        for h in (1e-2, 5e-3)
    ]
    assert err[0] / err[1] == pytest.approx(4.0, rel=0.01)
    assert err[0] == pytest.approx(1e-4 / 6 * np.exp(1.1), rel=0.01)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_numerical_gradient_does_not_modify_input(backend):
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    if backend == "torch":
        x = torch.tensor(x)
    before = x.copy() if backend == "numpy" else x.clone()
    gradcheck.numerical_gradient(lambda z: (z**3).sum(), x)
    assert (x == before).all()


def test_numerical_gradient_handles_non_contiguous_input():
    x = np.arange(12, dtype=np.float64).reshape(3, 4).T  # a transposed view
    grad = gradcheck.numerical_gradient(lambda z: np.sum(z**2), x)
    assert gradcheck.rel_error(grad, 2 * x) < 1e-8


def test_numerical_gradient_array_is_the_vector_jacobian_product():
    # f(x) = A x is linear, so (∂f/∂x)ᵀ·dout = Aᵀ dout exactly up to rounding
    rng = np.random.default_rng(1)
    a, x, dout = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=4)
    got = gradcheck.numerical_gradient_array(lambda z: a @ z, x, dout)
    assert gradcheck.rel_error(got, a.T @ dout) < 1e-9


def test_numerical_gradient_array_rejects_mismatched_dout():
    with pytest.raises(ValueError, match="dout has shape"):
        gradcheck.numerical_gradient_array(lambda z: z * 2, np.zeros(3), np.zeros(4))


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (np.arange(3), TypeError, "floating dtype"),
        (torch.arange(3), TypeError, "floating dtype"),
        ([1.0, 2.0], TypeError, "NumPy array or a torch tensor"),
    ],
)
def test_numerical_gradient_rejects_bad_input(x, exc, match):
    with pytest.raises(exc, match=match):
        gradcheck.numerical_gradient(lambda z: z.sum(), x)


def test_numerical_gradient_rejects_nonpositive_step():
    with pytest.raises(ValueError, match="step h must be > 0"):
        gradcheck.numerical_gradient(lambda z: z.sum(), np.zeros(2), h=0.0)


# --- BN-specific checks ----------------------------------------------------------------------


def _batch(seed: int, shape=(4, 3, 2, 2)):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.normal(size=shape) * rng.uniform(0.5, 2.0, size=(1, c) + (1,) * (len(shape) - 2))
    return x, rng.normal(size=c), rng.normal(size=c), rng.normal(size=shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bn_fd_errors_small_for_correct_backward(seed, backend):
    # h = 1e-4 on O(1) data: truncation ~h² = 1e-8 relative, rounding ~u/h ≈ 1e-12
    batch = _batch(seed)
    if backend == "torch":
        batch = tuple(torch.tensor(a) for a in batch)
    errors = gradcheck.bn_fd_errors(*batch, metric="norm")
    assert set(errors) == {"dx", "dgamma", "dbeta"}
    assert max(errors.values()) < 1e-7


def test_bn_fd_errors_cs231n_metric_is_entrywise():
    # ‖a−b‖ ≤ e·‖|a|+|b|‖ ≤ 2e·max(‖a‖, ‖b‖) for the worst entry-wise error e (floor aside)
    batch = _batch(0)
    entrywise = gradcheck.bn_fd_errors(*batch)
    normwise = gradcheck.bn_fd_errors(*batch, metric="norm")
    assert all(entrywise[k] >= normwise[k] / 2 for k in entrywise)
    with pytest.raises(ValueError, match="metric"):
        gradcheck.bn_fd_errors(*batch, metric="max")


def test_bn_fd_errors_detect_a_wrong_backward(monkeypatch):
    correct = numpy_bn.batch_norm_backward

    def wrong_backward(dy, cache):  # forgets the −x̂·Σδx̂ term of the compact form
        dx, dgamma, dbeta = correct(dy, cache)
        scale = (cache.gamma * cache.invstd / cache.m).reshape(1, -1, 1, 1)
        return dx + scale * cache.xhat * dgamma.reshape(1, -1, 1, 1), dgamma, dbeta

    monkeypatch.setattr(numpy_bn, "batch_norm_backward", wrong_backward)
    errors = gradcheck.bn_fd_errors(*_batch(0))
    assert errors["dx"] > 1e-3
    assert errors["dgamma"] < 1e-7  # dγ and dβ are still right


def test_channel_norm_and_cosine_hand_computed():
    a = np.zeros((2, 2, 1))
    a[:, 0, 0] = [3.0, 4.0]  # channel 0: (3, 4)
    a[:, 1, 0] = [1.0, -1.0]  # channel 1: (1, −1)
    np.testing.assert_allclose(gradcheck.channel_norm(a), [5.0, np.sqrt(2)])
    # cosine with the all-ones vector: (3+4)/(5·√2), and 0 for (1, −1)
    np.testing.assert_allclose(gradcheck.channel_cosine(a, 1.0), [7 / (5 * np.sqrt(2)), 0.0],
                               atol=1e-15)
    np.testing.assert_allclose(gradcheck.channel_cosine(a, a), [1.0, 1.0])
    assert gradcheck.channel_cosine(np.zeros((2, 1)), 1.0)[0] == 0.0


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, (5, 3), elements=st.floats(-10, 10)),
    arrays(np.float64, (5, 3), elements=st.floats(-10, 10)),
)
def test_channel_cosine_is_symmetric_and_bounded(a, b):
    c_ab, c_ba = gradcheck.channel_cosine(a, b), gradcheck.channel_cosine(b, a)
    np.testing.assert_allclose(c_ab, c_ba, atol=1e-12)
    assert np.all(np.abs(c_ab) <= 1 + 1e-12)


def test_bn_linear_grads_exact_scale_identity_with_eps():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(16, 5, generator=gen, dtype=F64)
    w = torch.randn(3, 5, generator=gen, dtype=F64)
    r = torch.randn(16, 3, generator=gen, dtype=F64)
    eps = 1e-3
    for a in (1e-2, 0.3, 7.0):
        loss_a, y_a, gw_a, gu_a = gradcheck.bn_linear_grads(u, a * w, r, eps)
        loss_1, y_1, gw_1, gu_1 = gradcheck.bn_linear_grads(u, w, r, eps / a**2)
        assert loss_a == pytest.approx(loss_1, rel=1e-12)
        assert gradcheck.norm_rel_error(y_a, y_1) < 1e-13
        assert gradcheck.norm_rel_error(a * gw_a, gw_1) < 1e-13
        assert gradcheck.norm_rel_error(gu_a, gu_1) < 1e-13


def test_bn_linear_grads_gradient_is_orthogonal_to_each_weight_row():
    # L(..., a·W_c, ...) = L(W) for ε → 0, so ⟨W_c, ∇_{W_c}L⟩ = 0 (Euler); ε = 1e-12 leaves ~1e-12
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(16, 5, generator=gen, dtype=F64)
    w = torch.randn(3, 5, generator=gen, dtype=F64)
    r = torch.randn(16, 3, generator=gen, dtype=F64)
    _, _, gw, _ = gradcheck.bn_linear_grads(u, w, r, eps=1e-12)
    cos = (w * gw).sum(1) / (w.norm(dim=1) * gw.norm(dim=1))
    assert cos.abs().max().item() < 1e-9


def test_bn_linear_grads_rejects_bad_shapes():
    u, w = torch.zeros(4, 3, dtype=F64), torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="readout must have shape"):
        gradcheck.bn_linear_grads(u, w, torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="need u"):
        gradcheck.bn_linear_grads(u, torch.zeros(2, 4, dtype=F64), torch.zeros(4, 2, dtype=F64))


@pytest.mark.parametrize("m", [2, 3, 16])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_bn_jacobian_matches_formula_and_predicted_spectrum(m, eps):
    gen = torch.Generator().manual_seed(m)
    x = 2.0 * torch.randn(m, generator=gen, dtype=F64) + 1.0
    gamma = 1.7
    jac = jacobian.bn_jacobian(x, gamma, eps)
    assert jac.shape == (m, m)
    # round-off: J = γs/m·(mI − 11ᵀ − x̂x̂ᵀ) is a difference of terms of size γs, so its error
    # is a few units of round-off of those terms, relative to what is left of them
    xhat = (x - x.mean()) / (x.var(unbiased=False) + eps).sqrt()
    terms = gamma * (x.var(unbiased=False) + eps).rsqrt() * (
        torch.eye(m, dtype=F64) + (1 + xhat.abs()[:, None] * xhat.abs()) / m)
    bound = 8 * torch.finfo(F64).eps * (terms.norm() / jac.norm()).item()
    assert gradcheck.norm_rel_error(jac, jacobian.bn_jacobian_formula(x, gamma, eps)) < bound
    assert gradcheck.norm_rel_error(jac, jac.T) < 1e-14  # symmetric
    var = x.var(unbiased=False).item()
    predicted = jacobian.bn_jacobian_spectrum(m, var, gamma, eps)
    scale = gamma / np.sqrt(var + eps)
    eig = np.linalg.eigvalsh(jac.numpy())
    np.testing.assert_allclose(eig, predicted, rtol=0, atol=1e-13 * scale)
    # the all-ones vector is in the null space
    assert (jac @ torch.ones(m, dtype=F64)).abs().max().item() < 1e-13 * scale


def test_bn_jacobian_spectrum_hand_computed():
    # σ² = 1, ε = 1, γ = 2: s = 1/√2; eigenvalues 0, γs·ε/(σ²+ε) = √2/2, and γs = √2 (twice)
    expected = [0.0, np.sqrt(2) / 2, np.sqrt(2), np.sqrt(2)]
    np.testing.assert_allclose(jacobian.bn_jacobian_spectrum(4, 1.0, 2.0, 1.0), expected)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jacobian.bn_jacobian(torch.zeros(1, dtype=F64)), "m >= 2"),
        (lambda: jacobian.bn_jacobian(torch.zeros(3, 2, dtype=F64)), "1-D tensor"),
        (lambda: jacobian.bn_jacobian_formula(torch.arange(3)), "floating dtype"),
        (lambda: jacobian.bn_jacobian_spectrum(1, 1.0), "m >= 2"),
        (lambda: jacobian.bn_jacobian_spectrum(3, 1.0, eps=0.0), "eps > 0"),
    ],
)
def test_jacobian_helpers_reject_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_bn_autograd_checks_pass_for_torch_and_bncore():
    gen = torch.Generator().manual_seed(0)
    opts = {"generator": gen, "dtype": torch.float64}
    x = torch.randn(4, 2, 3, **opts).requires_grad_(True)
    w, b = (torch.randn(2, **opts).requires_grad_(True) for _ in range(2))
    rm, rv = torch.randn(2, **opts), torch.rand(2, **opts) + 0.5
    for fn in (F.batch_norm, torch_bn.batch_norm):
        results = gradcheck.bn_autograd_checks(fn, x, w, b, rm, rv)
        assert len(results) == 4 and all(results.values())


def test_bn_tanh_hvp_matches_finite_differences_of_the_gradient():
    gen = torch.Generator().manual_seed(1)
    opts = {"generator": gen, "dtype": torch.float64}
    x, r, v = (torch.randn(5, 2, **opts) for _ in range(3))
    w, b = torch.rand(2, **opts) + 0.5, torch.randn(2, **opts)
    hvp = gradcheck.bn_tanh_hvp(torch_bn.batch_norm, x, w, b, r, v)

    def grad(a: torch.Tensor) -> torch.Tensor:
        a = a.clone().requires_grad_(True)
        loss = (r * torch.tanh(torch_bn.batch_norm(a, None, None, w, b, True, 0.1, 1e-5))).sum()
        return torch.autograd.grad(loss, a)[0]

    h = 1e-6
    fd = (grad(x + h * v) - grad(x - h * v)) / (2 * h)
    assert gradcheck.norm_rel_error(hvp, fd) < 1e-7
