r"""The Jacobian of batch norm on one channel: by autograd, in closed form, and its spectrum.

For one channel's m values in training mode, y = γx̂ + β with x̂ = (x − μ_B)/√(σ_B² + ε), and

.. math::

    J = \frac{\partial y}{\partial x} = \gamma s
    \Big(I - \tfrac1m \mathbf 1\mathbf 1^\top - \tfrac1m \hat x\hat x^\top\Big),
    \qquad s = \frac{1}{\sqrt{\sigma_B^2+\epsilon}},

the compact backward of the backprop chapter written as a symmetric matrix.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bncore.norm import torch_bn

__all__ = ["bn_jacobian", "bn_jacobian_formula", "bn_jacobian_spectrum"]


def _check_channel(x: Tensor) -> None:
    if x.dim() != 1 or x.shape[0] < 2:
        raise ValueError(
            f"expected one channel's m >= 2 values as a 1-D tensor, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")


def bn_jacobian(x: Tensor, gamma: float = 1.0, eps: float = 1e-5) -> Tensor:
    """The Jacobian ∂y/∂x ``(m, m)`` of training-mode BN on one channel, by autograd.

    ``x`` holds one channel's m values (shape ``(m,)``); BN is
    :func:`bncore.norm.torch_bn.batch_norm` on the ``(m, 1)`` input with weight γ and no bias
    (β does not enter the Jacobian). Uses ``torch.autograd.functional.jacobian``, i.e. m
    backward passes through the hand-written backward.
    """
    _check_channel(x)
    m = x.shape[0]
    weight = torch.full((1,), float(gamma), dtype=x.dtype, device=x.device)
    return torch.autograd.functional.jacobian(
        lambda v: torch_bn.batch_norm(v.reshape(m, 1), None, None, weight, None, True, 0.1, eps)
        .reshape(m),
        x.detach(),
    )


def bn_jacobian_formula(x: Tensor, gamma: float = 1.0, eps: float = 1e-5) -> Tensor:
    r"""The same Jacobian in closed form, the compact backward written as a matrix.

    .. math::

        J = \frac{\partial y}{\partial x} = \frac{\gamma}{\sqrt{\sigma_B^2+\epsilon}}
        \Big(I - \tfrac1m \mathbf 1\mathbf 1^\top - \tfrac1m \hat x\hat x^\top\Big),

    with σ_B² the biased batch variance and x̂ the normalized values. J is symmetric.
    """
    _check_channel(x)
    x = x.detach()
    m = x.shape[0]
    mean = x.mean()
    var = (x - mean).square().mean()
    invstd = torch.rsqrt(var + eps)
    xhat = (x - mean) * invstd
    eye = torch.eye(m, dtype=x.dtype, device=x.device)
    ones = torch.full((m, m), 1.0 / m, dtype=x.dtype, device=x.device)
    return gamma * invstd * (eye - ones - torch.outer(xhat, xhat) / m)


def bn_jacobian_spectrum(m: int, var: float, gamma: float = 1.0, eps: float = 1e-5) -> np.ndarray:
    r"""The eigenvalues of :func:`bn_jacobian_formula`, ascending, predicted by theory.

    With s = 1/√(σ²+ε), J = γs·(I − 11ᵀ/m − x̂x̂ᵀ/m). Because Σx̂ = 0 the vectors 1 and x̂ are
    orthogonal, and ‖x̂‖² = m·σ²/(σ²+ε). So J has eigenvalue 0 on 1, γs·ε/(σ²+ε) on x̂, and
    γs on the (m − 2)-dimensional complement. Returns ``(m,)`` values for γ ≥ 0.
    """
    if m < 2:
        raise ValueError(f"bn_jacobian_spectrum: need m >= 2 values per channel, got {m}")
    if var < 0 or eps <= 0:
        raise ValueError(f"bn_jacobian_spectrum: need var >= 0 and eps > 0, got {var}, {eps}")
    s = 1.0 / np.sqrt(var + eps)
    values = np.array([0.0, gamma * s * eps / (var + eps)] + [gamma * s] * (m - 2))
    return np.sort(values)
