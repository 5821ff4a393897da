r"""Gradient and curvature through one batch-norm layer: Santurkar et al. (2018), Thm 4.1 and 4.2.

In the book's notation: BN maps its input x to y = γ·x̂ + β, x̂ = (x − μ_B)/σ_B (training mode),
a loss ℓ(y) sits above it, ℓ̂(x) = ℓ(BN(x)) is the loss of the BN network, δ = ∇_y ℓ is the
gradient arriving at BN's output and v = ∇_x ℓ̂ the one leaving its input. (Santurkar et al.,
and this module's argument names, write y for x, z for y, ŷ for x̂ and ĝ for δ.) They bound,
per channel j,

.. math::

    \|\nabla_{x_j} \hat\ell\|^2 \le \frac{\gamma_j^2}{\sigma_j^2}\Big(\|\delta_j\|^2
    - \frac1m\langle 1, \delta_j\rangle^2 - \frac1m\langle \delta_j, \hat x_j\rangle^2\Big),

and the Hessian's quadratic form along the gradient, v_jᵀ(∂²ℓ̂/∂x_j∂x_j)v_j, by
(γ_j²/σ_j²)·(v_jᵀ H_jj v_j − (1/(mγ_j))⟨δ_j, x̂_j⟩‖v_j‖²), with H_jj = ∂²ℓ/∂y_j∂y_j.
:func:`bn_layer_terms` measures the left-hand sides and the ingredients of the right-hand sides by
autograd through :func:`bncore.norm.torch_bn.batch_norm` (twice, for the Hessian-vector products);
the right-hand sides are closed forms in :mod:`bncore.theory.santurkar`.
:func:`random_bn_instance` draws a layer to test them on, and :func:`network_bn_layer_terms`
measures a layer inside a trained :class:`bncore.experiments.nets.MLP`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.nets import is_block_net
from bncore.norm.torch_bn import batch_norm, mean_var
from bncore.theory.santurkar import (
    santurkar_grad_bound,
    santurkar_grad_gap,
    santurkar_hessian_bound,
)

__all__ = [
    "BNLayerTerms",
    "SanturkarSlack",
    "bn_layer_terms",
    "network_bn_layer_terms",
    "random_bn_instance",
    "santurkar_slack",
    "smooth_downstream",
]


@dataclass
class BNLayerTerms:
    """Measured gradient and curvature through one BN layer, per channel j.

    For the loss ℓ̂(x) = ℓ(y) with y = BN(x) = γ·x̂ + β (training mode, γ and β constants):

    Attributes
    ----------
    grad_in: (m, C) v = ∇_x ℓ̂, the gradient through BN.
    grad_out: (m, C) δ = ∇_y ℓ, the gradient just above BN.
    yhat: (m, C) x̂ = (x − μ_B)/√(σ_B² + ε).
    var: (C,) the biased batch variance σ_B².
    sigma: (C,) √(σ_B² + ε), what BN divides by.
    quad_in: (C,) v_jᵀ (∂²ℓ̂/∂x_j∂x_j) v_j, the loss Hessian's quadratic form along the
        gradient (channel j's part of v, the others held at 0).
    quad_out: (C,) v_jᵀ H_jj v_j with H_jj = ∂²ℓ/∂y_j∂y_j.
    """

    grad_in: Tensor
    grad_out: Tensor
    yhat: Tensor
    var: Tensor
    sigma: Tensor
    quad_in: Tensor
    quad_out: Tensor


def _hvp(grad: Tensor, wrt: Tensor, direction: Tensor) -> Tensor:
    """Hessian-vector product ∇(grad · direction) by double backward; 0 for a linear loss."""
    if not grad.requires_grad:  # the gradient is constant: zero Hessian
        return torch.zeros_like(wrt)
    (hv,) = torch.autograd.grad(grad, wrt, grad_outputs=direction, retain_graph=True,
                                allow_unused=True)
    return torch.zeros_like(wrt) if hv is None else hv


def bn_layer_terms(
    y: Tensor,
    downstream: Callable[[Tensor], Tensor],
    gamma: Tensor,
    beta: Tensor,
    eps: float,
) -> BNLayerTerms:
    """Gradient and Hessian quadratic forms through a BN layer, by autograd.

    ``z = bncore.norm.torch_bn.batch_norm(y, None, None, γ, β, training=True, eps=eps)`` (BN's
    output, the book's y, of its input ``y``, the book's x) and ℓ̂ = ``downstream(z)``. The
    Hessian quadratic forms are Hessian-vector products by double backward through BN's
    hand-written backward (which is itself differentiable).

    Parameters
    ----------
    y: (m, C) pre-BN activations x (use float64 for checks at round-off level).
    downstream: maps z (m, C) to a scalar loss; must be twice differentiable.
    gamma, beta: (C,) BN's scale and shift, held constant.
    eps: ε > 0 (the library refuses ε = 0; use a tiny ε in float64 to approach it).
    """
    if y.dim() != 2:
        raise ValueError(f"y must have shape (m, C), got {tuple(y.shape)}")
    c = y.shape[1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(f"gamma and beta must have shape ({c},)")
    y = y.detach().clone().requires_grad_(True)
    gamma, beta = gamma.detach(), beta.detach()
    z = batch_norm(y, None, None, gamma, beta, training=True, eps=eps)
    loss_hat = downstream(z)
    (v,) = torch.autograd.grad(loss_hat, y, create_graph=True)

    z0 = z.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(downstream(z0), z0, create_graph=True)

    quad_in = torch.empty(c, dtype=y.dtype, device=y.device)
    quad_out = torch.empty(c, dtype=y.dtype, device=y.device)
    for j in range(c):
        direction = torch.zeros_like(y)
        direction[:, j] = v[:, j].detach()
        quad_in[j] = (_hvp(v, y, direction) * direction).sum()
        quad_out[j] = (_hvp(g, z0, direction) * direction).sum()

    with torch.no_grad():
        mean, var = mean_var(y)
        sigma = torch.sqrt(var + eps)
        yhat = (y - mean) / sigma
    return BNLayerTerms(
        grad_in=v.detach(),
        grad_out=g.detach(),
        yhat=yhat,
        var=var,
        sigma=sigma,
        quad_in=quad_in.detach(),
        quad_out=quad_out.detach(),
    )


def smooth_downstream(
    num_channels: int, num_classes: int, labels: Tensor, *, seed: int, dtype: torch.dtype
) -> Callable[[Tensor], Tensor]:
    """A random, twice-differentiable loss on top of a BN layer's output, for theorem checks.

    ℓ(z) = cross_entropy(tanh(z) W, labels) with W ~ N(0, 1/C) drawn from ``seed``: a small
    smooth "rest of the network" with a non-trivial Hessian.
    """
    if num_channels < 1 or num_classes < 2:
        raise ValueError("need num_channels >= 1 and num_classes >= 2")
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(num_channels, num_classes, generator=gen, dtype=dtype) / math.sqrt(
        num_channels
    )

    def loss(z: Tensor) -> Tensor:
        return F.cross_entropy(torch.tanh(z) @ w, labels)

    return loss


def random_bn_instance(
    seed: int, m: int = 16, num_channels: int = 4, eps: float = 1e-14, num_classes: int = 4
) -> tuple[BNLayerTerms, Tensor]:
    """A random float64 BN layer with a smooth loss on top, measured by :func:`bn_layer_terms`.

    Channel j has pre-activations y_j ~ N(2, s_j²) with s_j ~ U(0.2, 3.2), γ_j ~ U(0.1, 2.1),
    β_j ~ N(0, 1); the loss above is 3·:func:`smooth_downstream`. Returns ``(terms, gamma)``.
    ``eps = 1e-14`` stands for ε → 0 (the library refuses ε = 0).
    """
    if m < 2 or num_channels < 1:
        raise ValueError(f"need m >= 2 and num_channels >= 1, got m={m}, C={num_channels}")
    dt = torch.float64
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(num_channels, generator=gen, dtype=dt) * 3 + 0.2
    y = torch.randn(m, num_channels, generator=gen, dtype=dt) * scale + 2.0
    gamma = torch.rand(num_channels, generator=gen, dtype=dt) * 2 + 0.1
    beta = torch.randn(num_channels, generator=gen, dtype=dt)
    labels = torch.randint(0, num_classes, (m,), generator=gen)
    f = smooth_downstream(num_channels, num_classes, labels, seed=seed + 1000, dtype=dt)
    return bn_layer_terms(y, lambda z: 3.0 * f(z), gamma, beta, eps), gamma


@dataclass(frozen=True)
class SanturkarSlack:
    """Thm 4.1 and 4.2 measured against their right-hand sides on one random layer, per channel.

    Attributes
    ----------
    eps: the ε of the layer.
    var: (C,) the biased batch variance σ_B².
    grad_slack: (C,) Thm 4.1's right-hand side minus ‖∇_{x_j} ℓ̂‖² (autograd).
    grad_slack_predicted: (C,) the exact slack γ_j²ε⟨δ_j, x̂_j⟩²/(m(σ_j² + ε)²)
        (:func:`~bncore.theory.santurkar.santurkar_grad_gap`).
    quad_in: (C,) v_jᵀ (∂²ℓ̂/∂x_j∂x_j) v_j (autograd).
    quad_bound: (C,) Thm 4.2's right-hand side.
    """

    eps: float
    var: Tensor
    grad_slack: Tensor
    grad_slack_predicted: Tensor
    quad_in: Tensor
    quad_bound: Tensor


def santurkar_slack(
    eps: float, *, seed: int, relative: bool = False, m: int = 16, num_channels: int = 4
) -> SanturkarSlack:
    """Santurkar et al.'s Thm 4.1 and 4.2 on :func:`random_bn_instance` (``seed``) with ``eps``.

    ``relative=True`` reads ``eps`` as a multiple of the instance's first-channel batch
    variance, ε = eps·σ_B,1² (σ_B² does not depend on ε).
    """
    if relative:
        eps = eps * float(random_bn_instance(seed, m, num_channels)[0].var[0])
    t, gamma = random_bn_instance(seed, m, num_channels, eps=eps)
    measured = t.grad_in.square().sum(0)
    return SanturkarSlack(
        eps=eps,
        var=t.var,
        grad_slack=santurkar_grad_bound(t.grad_out, t.yhat, gamma, t.sigma) - measured,
        grad_slack_predicted=santurkar_grad_gap(t.grad_out, t.yhat, gamma, t.var, eps),
        quad_in=t.quad_in,
        quad_bound=santurkar_hessian_bound(t.grad_in, t.grad_out, t.yhat, t.quad_out, gamma,
                                           t.sigma),
    )


class _AffineNorm(Protocol):
    """A normalization layer with an ``eps`` and an affine ``weight`` (γ) and ``bias`` (β)."""

    weight: Tensor
    bias: Tensor
    eps: float


def _is_affine_norm(norm: nn.Module) -> TypeGuard[_AffineNorm]:
    return hasattr(norm, "eps") and getattr(norm, "weight", None) is not None


def network_bn_layer_terms(
    model: nn.Module, xb: Tensor, yb: Tensor, layer: int
) -> tuple[BNLayerTerms, Tensor]:
    """:func:`bn_layer_terms` for BN layer ``layer`` of a :class:`bncore.experiments.nets.MLP` in
    place.

    A float64 copy of the model is cut at block ``layer``: y = the block's linear output on the
    batch ``xb`` (blocks before it run in training mode), and the downstream loss is the rest of
    the network, ℓ(z) = cross_entropy(head(blocks[layer+1:](act(z))), yb), with BN's own γ, β
    and ε. The model itself is not changed. Returns ``(terms, gamma)``.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "head"):
        raise TypeError("network_bn_layer_terms needs a bncore.experiments.nets.MLP")
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer must be in [0, {len(blocks)}), got {layer}")
    net = copy.deepcopy(model).double().train()
    assert is_block_net(net)  # a copy of the model, whose .blocks and .head were checked above
    norm = net.blocks[layer].norm
    if not _is_affine_norm(norm):
        raise ValueError(f"block {layer}'s norm is not an affine batch norm: {norm}")
    with torch.no_grad():
        h = xb.double().flatten(1)
        for block in net.blocks[:layer]:
            h = block(h)
        y = net.blocks[layer].linear(h)
    act, rest, head = net.blocks[layer].act, net.blocks[layer + 1:], net.head

    def downstream(z: Tensor) -> Tensor:
        h = act(z)
        for block in rest:
            h = block(h)
        return F.cross_entropy(head(h), yb)

    gamma = norm.weight.detach()
    terms = bn_layer_terms(y, downstream, gamma, norm.bias.detach(), norm.eps)
    return terms, gamma
