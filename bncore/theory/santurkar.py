"""Santurkar et al. (2018): gradient and Hessian bounds through batch norm (Thm 4.1, 4.2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _santurkar_check(grad_out: Tensor, yhat: Tensor, gamma: Tensor, sigma: Tensor) -> int:
    """Validate the (m, C) / (C,) shapes shared by the Thm 4.1 and 4.2 bounds; return m."""
    if grad_out.dim() != 2 or grad_out.shape != yhat.shape:
        raise ValueError(
            "grad_out and yhat must both have shape (m, C) (batch, channels), got "
            f"{tuple(grad_out.shape)} and {tuple(yhat.shape)}"
        )
    m, c = grad_out.shape
    if m < 2:
        raise ValueError(f"the bounds need a batch of m >= 2 values per channel, got m = {m}")
    for name, t in (("gamma", gamma), ("sigma", sigma)):
        if t.shape != (c,):
            raise ValueError(f"{name} must have shape (C,) = ({c},), got {tuple(t.shape)}")
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be positive in every channel")
    return m


def santurkar_grad_bound(
    grad_out: Tensor,
    yhat: Tensor,
    gamma: Tensor,
    sigma: Tensor,
    *,
    misprint: bool = False,
) -> Tensor:
    r"""Right-hand side of Santurkar et al. (2018), Theorem 4.1, per channel j.

    .. math::

        \|\nabla_{x_j}\hat\ell\|^2 \le \frac{\gamma_j^2}{\sigma_j^2}\Big(\|\delta_j\|^2
        - \tfrac1m\langle \mathbf 1, \delta_j\rangle^2
        - \tfrac1m\langle \delta_j, \hat x_j\rangle^2\Big),

    in the book's notation: x_j ∈ R^m is channel j's pre-BN activation over the batch,
    x̂_j = (x_j − μ_B 1)/σ_j its normalized value, σ_j = √(σ_B² + ε) the batch standard
    deviation BN divides by, ℓ̂ the loss of the BN network, and δ_j = ∇_{y_j} ℓ the gradient of
    the loss downstream of the BN output y_j = γ_j x̂_j + β_j. (The paper writes y_j for our
    x_j, ŷ_j for x̂_j, z_j for y_j, L for ℓ and g_j for δ_j, the ∇_{y_j} L of the "identical
    non-BN network".)

    Parameters
    ----------
    grad_out: (m, C) the downstream gradient δ.
    yhat: (m, C) the normalized activations x̂.
    gamma, sigma: (C,) BN's scale γ and the standard deviation σ_j it divides by.
    misprint: use 1/√m instead of 1/m in front of ⟨δ, x̂⟩², as some copies of the paper
        print it. That version is *not* a bound (it undercuts the exact value whenever
        ⟨δ, x̂⟩ ≠ 0 and m > 1).

    Returns
    -------
    (C,) the bound on ‖∇_{x_j} ℓ̂‖² for each channel. For ε = 0 it holds with equality (BN's
    backward is γ/σ times the orthogonal projection onto {1, x̂}^⊥).
    """
    m = _santurkar_check(grad_out, yhat, gamma, sigma)
    coef = 1.0 / math.sqrt(m) if misprint else 1.0 / m
    sq = grad_out.square().sum(0)
    mean_term = grad_out.sum(0).square() / m
    yhat_term = coef * (grad_out * yhat).sum(0).square()
    return gamma.square() / sigma.square() * (sq - mean_term - yhat_term)


def santurkar_grad_gap(
    grad_out: Tensor, yhat: Tensor, gamma: Tensor, var: Tensor, eps: float
) -> Tensor:
    r"""Exact slack of Theorem 4.1 for BN with ε > 0 (derived in the smoothing chapter).

    With σ_j² = σ_B² + ε, BN's backward is (γ/σ_j)·P with P = I − 11ᵀ/m − x̂x̂ᵀ/m, whose
    eigenvalue along x̂ is 1 − ρ = ε/σ_j² instead of 0, so P² ⪯ P and

    .. math::

        \text{bound} - \|\nabla_{x_j}\hat\ell\|^2
        = \frac{\gamma_j^2\,\epsilon\,\langle \delta_j, \hat x_j\rangle^2}
               {m\,(\sigma_{B,j}^2+\epsilon)^2}.

    Parameters
    ----------
    grad_out, yhat: (m, C) as in :func:`santurkar_grad_bound`.
    gamma: (C,) BN's scale; var: (C,) the biased batch variance σ_B² (without ε); eps: ε ≥ 0.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    m = _santurkar_check(grad_out, yhat, gamma, torch.sqrt(var + eps))
    return gamma.square() * eps * (grad_out * yhat).sum(0).square() / (m * (var + eps).square())


def santurkar_hessian_bound(
    grad_in: Tensor,
    grad_out: Tensor,
    yhat: Tensor,
    quad_out: Tensor,
    gamma: Tensor,
    sigma: Tensor,
) -> Tensor:
    r"""Right-hand side of Santurkar et al. (2018), Theorem 4.2, per channel j.

    .. math::

        v^\top \frac{\partial^2\hat\ell}{\partial x_j\partial x_j} v
        \le \frac{\gamma^2}{\sigma^2}\, v^\top H_{jj} v
        - \frac{\gamma}{m\sigma^2}\langle \delta_j, \hat x_j\rangle \|v\|^2,
        \qquad v = \nabla_{x_j}\hat\ell,

    with δ_j = ∇_{y_j} ℓ and H_jj = ∂²ℓ/∂y_j∂y_j the downstream gradient and Hessian at BN's
    output y_j (the paper's ĝ_j and H_jj, "gradient and Hessian of the loss with respect to the
    layer outputs"; notation as in :func:`santurkar_grad_bound`), γ, β held constant. For ε = 0
    it is an identity: the quadratic form has exactly these two parts, the downstream
    curvature seen through BN's Jacobian and BN's own curvature along x̂.

    Parameters
    ----------
    grad_in: (m, C) v = ∇_x ℓ̂, the gradient through BN.
    grad_out: (m, C) δ = ∇_y ℓ. yhat: (m, C) x̂.
    quad_out: (C,) v_jᵀ H_jj v_j, the downstream Hessian's quadratic form along channel j's v.
    gamma, sigma: (C,) γ and σ_j = √(σ_B² + ε).
    """
    m = _santurkar_check(grad_out, yhat, gamma, sigma)
    if grad_in.shape != grad_out.shape or quad_out.shape != gamma.shape:
        raise ValueError("grad_in must be (m, C) like grad_out and quad_out (C,) like gamma")
    s2 = sigma.square()
    return gamma.square() / s2 * quad_out - gamma / (m * s2) * (grad_out * yhat).sum(
        0
    ) * grad_in.square().sum(0)
