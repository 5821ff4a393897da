r"""Scale invariance inside a network: plain SGD on a linear layer followed by batch norm.

With batch norm after it, the loss of a linear layer is invariant to rescaling each weight row,
ℓ(a·w_k) = ℓ(w_k) for a > 0 (Ioffe & Szegedy 2015, §3.3), the decoupling of length and direction
that Kohler et al. (2019) exploit. Differentiating the invariance,

.. math::

    \frac{\partial \ell}{\partial w_k} \perp w_k,\qquad
    \frac{\partial \ell}{\partial (a w_k)} = \frac1a\,\frac{\partial \ell}{\partial w_k},

so an SGD step w ← w − η∇ℓ never shrinks a row: ‖w_k‖² grows by η²‖∂ℓ/∂w_k‖², and the row turns
by an angle ∝ η/‖w_k‖². :func:`bn_classifier_loss_grad` computes the loss and gradient of the
classifier γ·BN(X Wᵀ) with :func:`bncore.norm.torch_bn.batch_norm`, and
:func:`scale_invariant_sgd` records norms, cosines and angles along an SGD run (PyTorch,
float64 recommended).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bncore.norm.torch_bn import batch_norm

__all__ = ["SGDTrace", "bn_classifier_loss_grad", "scale_invariant_sgd"]


def bn_classifier_loss_grad(
    W: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    gamma: float = 1.0,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cross-entropy of the scale-invariant classifier logits = γ·BN(X Wᵀ), and its gradient in W.

    BN is :func:`bncore.norm.torch_bn.batch_norm` in training mode (batch statistics, no β). Each
    row w_k of W feeds one BN channel, so up to eps the loss is invariant to w_k → a·w_k
    (Ioffe & Szegedy 2015, §3.3). Hence ∂ℓ/∂w_k ⟂ w_k and ∂ℓ/∂(a w_k) = (1/a) ∂ℓ/∂w_k.

    Parameters
    ----------
    W
        ``(C, d)`` weights (C classes), float64 recommended.
    X
        ``(n, d)`` inputs; ``y``: ``(n,)`` integer labels in [0, C).

    Returns
    -------
    loss, grad
        A scalar tensor and the ``(C, d)`` gradient (both detached).
    """
    if W.dim() != 2 or X.dim() != 2 or W.shape[1] != X.shape[1]:
        raise ValueError(f"need W (C, d) and X (n, d), got {tuple(W.shape)} and {tuple(X.shape)}")
    Wp = W.detach().clone().requires_grad_(True)
    h = X @ Wp.T  # (n, C)
    weight = torch.full((W.shape[0],), float(gamma), dtype=W.dtype)
    logits = batch_norm(h, None, None, weight=weight, training=True, eps=eps)
    loss = torch.nn.functional.cross_entropy(logits, y)
    (grad,) = torch.autograd.grad(loss, Wp)
    return loss.detach(), grad.detach()


@dataclass(frozen=True)
class SGDTrace:
    """What :func:`scale_invariant_sgd` records.

    Attributes
    ----------
    row_norms
        ``(T+1, C)`` ‖w_k‖ of each row before step t.
    grad_norms
        ``(T, C)`` ‖∂ℓ/∂w_k‖ at step t.
    cosines
        ``(T, C)`` cos(w_k, ∂ℓ/∂w_k) at step t (zero for a scale-invariant loss).
    angle_steps
        ``(T, C)`` the angle (radians) by which each row turns at step t.
    losses
        ``(T,)`` minibatch loss at step t.
    W
        ``(C, d)`` final weights.
    """

    row_norms: np.ndarray
    grad_norms: np.ndarray
    cosines: np.ndarray
    angle_steps: np.ndarray
    losses: np.ndarray
    W: torch.Tensor


def scale_invariant_sgd(
    W0: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    gamma: float = 1.0,
    eps: float = 1e-12,
) -> SGDTrace:
    r"""Plain SGD (no momentum, no weight decay) on :func:`bn_classifier_loss_grad`.

    Minibatches are drawn without replacement from a ``torch.Generator`` seeded with ``seed``,
    so two runs with the same seed see the same batches. Because each step moves w_k along a
    vector orthogonal to it, ‖w_k‖² grows by exactly lr²‖∂ℓ/∂w_k‖² per step, and the angle it
    turns is arctan(lr‖∂ℓ/∂w_k‖/‖w_k‖) ∝ lr/‖w_k‖² (since ‖∂ℓ/∂w_k‖ ∝ 1/‖w_k‖).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    n = X.shape[0]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [2, {n}], got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    gen = torch.Generator().manual_seed(seed)
    W = W0.detach().clone()
    C = W.shape[0]
    row_norms = np.empty((steps + 1, C))
    grad_norms = np.empty((steps, C))
    cosines = np.empty((steps, C))
    angles = np.empty((steps, C))
    losses = np.empty(steps)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for t in range(steps + 1):
        row_norms[t] = W.norm(dim=1).numpy()
        if t == steps:
            break
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        loss, grad = bn_classifier_loss_grad(W, X[idx], y[idx], gamma=gamma, eps=eps)
        W_new = W - lr * grad
        gn = grad.norm(dim=1)
        grad_norms[t] = gn.numpy()
        cosines[t] = ((W * grad).sum(dim=1) / (W.norm(dim=1) * gn)).numpy()
        along = (W * W_new).sum(dim=1) / W.norm(dim=1)  # component of w_new along w
        across = (W_new.norm(dim=1) ** 2 - along**2).clamp(min=0.0).sqrt()
        angles[t] = torch.atan2(across, along).numpy()
        losses[t] = float(loss)
        W = W_new
    return SGDTrace(
        row_norms=row_norms,
        grad_norms=grad_norms,
        cosines=cosines,
        angle_steps=angles,
        losses=losses,
        W=W,
    )
