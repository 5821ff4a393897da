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

        \|\nabla_{y_j}\hat L\|^2 \le \frac{\gamma_j^2}{\sigma_j^2}\Big(\|g_j\|^2
        - \tfrac1m\langle \mathbf 1, g_j\rangle^2 - \tfrac1m\langle g_j, \hat y_j\rangle^2\Big),

    where y_j ∈ R^m is channel j's pre-BN activation over the batch, ŷ_j = (y_j − μ_j)/σ_j its
    normalized value, σ_j = √(σ_B² + ε) the batch standard deviation BN divides by, and
    g_j = ∇_{z_j} L the gradient of the loss downstream of the BN output z_j = γ_j ŷ_j + β_j
    (the paper's ∇_{y_j} L of the "identical non-BN network").

    Parameters
    ----------
    grad_out: (m, C) the downstream gradient g.
    yhat: (m, C) the normalized activations ŷ.
    gamma, sigma: (C,) BN's scale γ and the standard deviation σ_j it divides by.
    misprint: use 1/√m instead of 1/m in front of ⟨g, ŷ⟩², as some copies of the paper
        print it. That version is *not* a bound (it undercuts the exact value whenever
        ⟨g, ŷ⟩ ≠ 0 and m > 1).

    Returns
    -------
    (C,) the bound on ‖∇_{y_j} L̂‖² for each channel. For ε = 0 it holds with equality (BN's
    backward is γ/σ times the orthogonal projection onto {1, ŷ}^⊥).
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

    With σ_j² = σ_B² + ε, BN's backward is (γ/σ_j)·P with P = I − 11ᵀ/m − ŷŷᵀ/m, whose
    eigenvalue along ŷ is λ = ε/σ_j² instead of 0, so P² ⪯ P and

    .. math::

        \text{bound} - \|\nabla_{y_j}\hat L\|^2
        = \frac{\gamma_j^2\,\epsilon\,\langle g_j, \hat y_j\rangle^2}
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

        (\nabla_{y_j}\hat L)^\top \frac{\partial^2\hat L}{\partial y_j\partial y_j}
        (\nabla_{y_j}\hat L) \le \frac{\gamma^2}{\sigma^2}
        (\nabla_{y_j}\hat L)^\top H_{jj} (\nabla_{y_j}\hat L)
        - \frac{\gamma}{m\sigma^2}\langle \hat g_j, \hat y_j\rangle
        \|\nabla_{y_j}\hat L\|^2,

    with ĝ_j = ∇_{z_j} L and H_jj = ∂²L/∂z_j∂z_j the downstream gradient and Hessian (the
    paper's "gradient and Hessian of the loss with respect to the layer outputs"), γ, β held
    constant. For ε = 0 it is an identity: the quadratic form has exactly these two parts,
    the downstream curvature seen through BN's Jacobian and BN's own curvature along ŷ.

    Parameters
    ----------
    grad_in: (m, C) v = ∇_y L̂, the gradient through BN.
    grad_out: (m, C) ĝ = ∇_z L. yhat: (m, C) ŷ.
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
