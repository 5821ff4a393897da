r"""The phases of batch norm in PyTorch, one formula each, composed by :mod:`.torch_bn`.

The shape is ``torch.nn.SyncBatchNorm``'s, so that a later norm is "these phases, other
reduction axes, and something between them" (Ioffe & Szegedy 2015, §3):

======================  =================================================  ======================
phase                   formula                                            function
======================  =================================================  ======================
statistics              m, μ, σ² over the reduction axes;                  :func:`mean_var`,
                        s = 1/√(σ² + ε)                                    :func:`invstd`
(combine)               across devices: Chan's merge, :mod:`.stats`
normalize               y = γ·(x − μ)·s + β                                :func:`normalize`
running update          running ← (1 − τ)·running + τ·batch                :func:`update_running`
backward reduce         Σδ and Σδ·x̂ over the reduction axes                :func:`backward_reduce`
(combine)               across devices: a sum
backward elementwise    dx = γs/m·(mδ − Σδ − x̂·Σδx̂)                         :func:`backward_elemt`
======================  =================================================  ======================

The reduction axes ``dims`` are a parameter of every phase that reduces or broadcasts a statistic;
they default to batch norm's, all axes but the channel axis 1, which gives one statistic per
channel, shape ``(C,)``. Another choice gives statistics of the shape that ``x`` has without those
axes (instance norm's ``dims = (2, …)``: one per sample and channel, ``(N, C)``), put back against
``x`` by :func:`expand`. The affine γ, β is always per channel (axis 1), and the backward's
factor γ assumes γ constant over each reduction set, as it is when axis 1 is not reduced.

The "(combine)" rows are the identity on one process: ``torch.nn.SyncBatchNorm`` all-gathers
(m, μ, σ²) and merges them with :func:`bncore.norm.stats.chan_merge` in the forward, and
all-reduces the two sums in the backward. The NumPy twins carry the same names (``axes`` for
``dims``) in :mod:`bncore.norm.numpy_bn`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bncore.norm import stats

__all__ = [
    "backward_elemt",
    "backward_reduce",
    "expand",
    "invstd",
    "mean_var",
    "normalize",
    "update_running",
]


def _bcast(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-channel vector ``(C,)`` to ``(1, C, 1, ...)`` for broadcasting."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and the affine map are computed in at least float32."""
    return torch.promote_types(dtype, torch.float32)


def _dims(ndim: int, dims: tuple[int, ...] | None) -> tuple[int, ...]:
    """The reduction axes: ``dims``, or batch norm's (all but axis 1)."""
    return stats.reduce_axes(ndim) if dims is None else dims


def expand(stat: Tensor, ndim: int, dims: tuple[int, ...] | None = None) -> Tensor:
    """A statistic reduced over ``dims`` with those axes put back as size 1, to broadcast on x.

    Per channel, ``(C,)`` becomes ``(1, C, 1, …)``.
    """
    for d in sorted(_dims(ndim, dims)):
        stat = stat.unsqueeze(d)
    return stat


# --- the phases ---


def mean_var(x: Tensor, dims: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor]:
    """Statistics phase: mean μ and biased variance σ² = mean((x − μ)²) over ``dims``, two-pass.

    ``dims`` defaults to batch norm's axes, all but the channel axis 1 (the torch twin of
    :func:`bncore.norm.stats.mean_var`); the count m is
    :func:`bncore.norm.stats.count_per_channel`. Differentiable; two ``(C,)`` tensors by default.
    (``torch.var``'s one-pass Welford reads x once but, on the CPU over these axes, runs
    several times slower than the two passes.)
    """
    dims = _dims(x.dim(), dims)
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square_().mean(dim=dims)  # squared in place: one input-sized temporary
    return mean.squeeze(dims), var


def invstd(var: Tensor, eps: float) -> Tensor:
    """Statistics phase, its last step: s = 1/√(σ² + ε), elementwise."""
    return torch.rsqrt(var + eps)


def normalize(
    x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None,
    dims: tuple[int, ...] | None = None, out: Tensor | None = None,
) -> Tensor:
    r"""Elementwise phase: y = γ·(x − μ)·s + β, μ and s reduced over ``dims``, γ and β per channel.

    ``None`` for γ or β means 1 or 0. One new tensor, x − μ (or ``out``, a tensor of x's shape
    whose memory is reused, outside autograd), then scaled and shifted in place; μ is subtracted
    before scaling, which keeps x̂ accurate when \|μ\| ≫ σ.
    """
    nd = x.dim()
    scale = expand(invstd, nd, dims)
    if weight is not None:
        scale = scale * _bcast(weight.to(x.dtype), nd)
    y = (x - expand(mean, nd, dims) if out is None else
         torch.sub(x, expand(mean, nd, dims), out=out)).mul_(scale)
    return y if bias is None else y.add_(_bcast(bias.to(x.dtype), nd))


def update_running(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: int,
    momentum: float,
) -> None:
    """Running-statistics phase, in place: the rules of :mod:`bncore.norm.stats`.

    running ← (1 − τ)·running + τ·batch, with the unbiased m/(m − 1)·σ_B² for the variance.
    """
    with torch.no_grad():
        unbiased = var * stats.bessel(count)
        running_mean.copy_(stats.running_update(running_mean, mean, momentum))
        running_var.copy_(stats.running_update(running_var, unbiased, momentum))


def backward_reduce(
    dy: Tensor, xhat: Tensor, dims: tuple[int, ...] | None = None, overwrite_xhat: bool = False,
) -> tuple[Tensor, Tensor]:
    """Backward reduction phase: Σδ and Σδ·x̂ over ``dims`` (per channel, they are dβ and dγ).

    The products δ·x̂ are one new tensor; with ``overwrite_xhat`` they are formed in x̂'s memory
    instead, which leaves x̂ overwritten (for a first-order backward that forms x̂ again).
    """
    dims = _dims(dy.dim(), dims)
    products = xhat.mul_(dy) if overwrite_xhat else dy * xhat
    return dy.sum(dim=dims), products.sum(dim=dims)


def backward_elemt(
    dy: Tensor, xhat: Tensor, invstd: Tensor, weight: Tensor | None, sum_dy: Tensor,
    sum_dy_xhat: Tensor, count: int, dims: tuple[int, ...] | None = None,
    overwrite_xhat: bool = False,
) -> Tensor:
    """Backward elementwise phase: dx = γs·(δ − Σδ/m − x̂·Σδx̂/m), from the reduced sums.

    ``count`` is m, the number of values in each reduction set; ``None`` for γ means 1.
    One new tensor, x̂·Σδx̂/m, then the rest in place (each in-place step's backward needs only
    the other operand, so this stays differentiable). With ``overwrite_xhat`` there is no new
    tensor: x̂'s memory becomes dx, for a caller that needs x̂ no more and does not
    differentiate this (a first-order backward).
    """
    nd = dy.dim()
    scale = expand(invstd, nd, dims)
    if weight is not None:
        scale = scale * _bcast(weight.to(dy.dtype), nd)
    mean_dy = expand(sum_dy / count, nd, dims)
    mean_dy_xhat = expand(sum_dy_xhat / count, nd, dims)
    dx = xhat.mul_(mean_dy_xhat) if overwrite_xhat else xhat * mean_dy_xhat
    return dx.sub_(dy).add_(mean_dy).mul_(-scale)
