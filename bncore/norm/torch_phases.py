r"""The phases of batch norm in PyTorch, one formula each, composed by :mod:`.torch_bn`.

The shape is ``torch.nn.SyncBatchNorm``'s, so that a later norm is "these phases, other
reduction axes, and something between them" (Ioffe & Szegedy 2015, §3):

======================  ================================================  =====================
phase                   formula                                           function
======================  ================================================  =====================
statistics              μ, σ² per channel over the reduction axes         :func:`mean_var`
(combine)               across devices: Chan's merge, :mod:`.stats`
normalize               y = γ·(x − μ)·s + β, s = 1/√(σ² + ε)              :func:`normalize`
running update          running ← (1 − α)·running + α·batch               :func:`update_running`
backward reduce         Σδ and Σδ·x̂ per channel                           :func:`backward_reduce`
(combine)               across devices: a sum
backward elementwise    dx = γs/m·(mδ − Σδ − x̂·Σδx̂)                      :func:`backward_elemt`
======================  ================================================  =====================

The NumPy twins carry the same names in :mod:`bncore.norm.numpy_bn`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bncore.norm import stats

__all__ = ["backward_elemt", "backward_reduce", "mean_var", "normalize", "update_running"]


def _bcast(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-channel vector ``(C,)`` to ``(1, C, 1, ...)`` for broadcasting."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and the affine map are computed in at least float32."""
    return torch.promote_types(dtype, torch.float32)


# --- the phases ---


def mean_var(x: Tensor, dims: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor]:
    """Statistics phase: mean μ and biased variance σ² = mean((x − μ)²) over ``dims``, two-pass.

    ``dims`` defaults to batch norm's axes, all but the channel axis 1 (the torch twin of
    :func:`bncore.norm.stats.mean_var`). Differentiable; returns two ``(C,)`` tensors.
    """
    dims = stats.reduce_axes(x.dim()) if dims is None else dims
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims)
    return mean.reshape(-1), var


def normalize(
    x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    """Elementwise phase: y = γ·(x − μ)·s + β with per-channel μ, s = 1/√(σ² + ε), γ, β."""
    nd = x.dim()
    y = (x - _bcast(mean, nd)) * _bcast(invstd, nd)
    if weight is not None:
        y = y * _bcast(weight.to(x.dtype), nd)
    if bias is not None:
        y = y + _bcast(bias.to(x.dtype), nd)
    return y


def backward_reduce(dy: Tensor, xhat: Tensor) -> tuple[Tensor, Tensor]:
    """Backward reduction phase: Σδ and Σδ·x̂ per channel (also dβ and dγ)."""
    dims = stats.reduce_axes(dy.dim())
    return dy.sum(dim=dims), (dy * xhat).sum(dim=dims)


def backward_elemt(
    dy: Tensor, xhat: Tensor, invstd: Tensor, gamma: Tensor, sum_dy: Tensor,
    sum_dy_xhat: Tensor, count: int,
) -> Tensor:
    """Backward elementwise phase: dx = γs/m·(m·δ − Σδ − x̂·Σδx̂), from the reduced sums."""
    nd = dy.dim()
    return _bcast(gamma * invstd / count, nd) * (
        count * dy - _bcast(sum_dy, nd) - xhat * _bcast(sum_dy_xhat, nd)
    )


def update_running(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: int,
    momentum: float,
) -> None:
    """Running-statistics phase, in place: the rules of :mod:`bncore.norm.stats`.

    running ← (1 − α)·running + α·batch, with the unbiased m/(m − 1)·σ_B² for the variance.
    """
    with torch.no_grad():
        unbiased = var * stats.bessel(count)
        running_mean.copy_(stats.running_update(running_mean, mean, momentum))
        running_var.copy_(stats.running_update(running_var, unbiased, momentum))
