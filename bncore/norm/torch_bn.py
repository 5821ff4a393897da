r"""Batch normalization in PyTorch with a hand-written, twice-differentiable backward.

:func:`batch_norm` has the signature and semantics of ``torch.nn.functional.batch_norm`` and
:class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d` are drop-ins for
``torch.nn``'s modules (same arguments, parameters, buffers and ``state_dict`` keys).

Layout is ``input: (N, C, *spatial)``. In training mode, per channel over m = N·∏spatial values,

.. math::

    y = \gamma\,\frac{x-\mu_B}{\sqrt{\sigma_B^2+\epsilon}} + \beta,\qquad
    \sigma_B^2 = \frac1m\sum (x-\mu_B)^2 \text{ (biased)},

and the running estimates move by running ← (1 − α)·running + α·batch, with the *unbiased*
m/(m−1)·σ_B² for ``running_var`` (see :mod:`bncore.norm.stats`). In eval mode the running estimates
replace μ_B, σ_B², so the layer is a fixed affine map whose backward is a per-channel scaling.

The gradient is :class:`BatchNormFunction`'s explicit formula (Ioffe & Szegedy 2015, §3)

.. math::

    \frac{\partial\ell}{\partial x} = \frac{\gamma}{m\sqrt{\sigma_B^2+\epsilon}}
    \Big(m\,\delta - \textstyle\sum\delta - \hat x\sum\delta\hat x\Big),

written with differentiable tensor operations on the saved input, so that autograd can
differentiate it again (``gradgradcheck``, Hessian-vector products).

Float16/bfloat16 inputs are normalized with float32 statistics and returned in their own dtype.
NaN or Inf in a channel's input makes that channel's output NaN, as in torch; other channels are
unaffected.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bncore.norm import stats
from bncore.norm.validate import check_dtype, check_input, check_rank

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormFunction", "batch_norm"]


def _bcast(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-channel vector ``(C,)`` to ``(1, C, 1, ...)`` for broadcasting."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics are accumulated in at least float32."""
    return torch.promote_types(dtype, torch.float32)


def mean_var(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean μ_B and biased variance σ_B², two-pass (the torch twin of
    :func:`bncore.norm.stats.mean_var`). Differentiable; returns two ``(C,)`` tensors.
    """
    dims = stats.reduce_axes(x.dim())
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims)
    return mean.reshape(-1), var


class BatchNormFunction(torch.autograd.Function):
    """y = γ·x̂ + β with x̂ normalized by batch (training) or given (eval) statistics.

    ``forward(x, weight, bias, mean, var, eps, training)`` takes ``mean``/``var`` only in eval
    mode (running estimates, treated as constants). In training mode it computes them and
    returns them as extra, non-differentiable outputs for the running-average update.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps, training):  # noqa: D102
        acc = x.to(_acc_dtype(x.dtype))
        if training:
            mean, var = mean_var(acc)
        nd = x.dim()
        xhat = (acc - _bcast(mean, nd)) * _bcast(torch.rsqrt(var + eps), nd)
        y = xhat
        if weight is not None:
            y = y * _bcast(weight.to(acc.dtype), nd)
        if bias is not None:
            y = y + _bcast(bias.to(acc.dtype), nd)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.training = eps, training
        ctx.mark_non_differentiable(mean, var)
        return y.to(x.dtype), mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):  # noqa: D102
        x, weight, mean, var = ctx.saved_tensors
        nd, dims = x.dim(), stats.reduce_axes(x.dim())
        acc = x.to(_acc_dtype(x.dtype))
        g = dy.to(acc.dtype)
        if ctx.training:  # recompute from x so that this backward is itself differentiable
            mean, var = mean_var(acc)
        invstd = torch.rsqrt(var + ctx.eps)
        xhat = (acc - _bcast(mean, nd)) * _bcast(invstd, nd)
        gamma = weight.to(acc.dtype) if weight is not None else torch.ones_like(invstd)
        sum_dy = g.sum(dim=dims)
        sum_dy_xhat = (g * xhat).sum(dim=dims)
        dx = None
        if ctx.needs_input_grad[0]:
            if ctx.training:
                m = stats.count_per_channel(x.shape)
                dx = _bcast(gamma * invstd / m, nd) * (
                    m * g - _bcast(sum_dy, nd) - xhat * _bcast(sum_dy_xhat, nd)
                )
            else:  # eval: a fixed affine map, so the backward is the plain scaling γ/√(σ̂²+ε)
                dx = g * _bcast(gamma * invstd, nd)
            dx = dx.to(x.dtype)
        dweight = sum_dy_xhat.to(weight.dtype) if ctx.needs_input_grad[1] else None
        dbias = sum_dy.to(weight.dtype if weight is not None else dy.dtype)
        dbias = dbias if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None, None


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.batch_norm``, differentiable twice.

    Parameters
    ----------
    input
        ``(N, C, *spatial)`` floating tensor.
    running_mean, running_var
        ``(C,)`` running estimates, or ``None``. In training mode, when given, they are updated
        in place: running ← (1 − momentum)·running + momentum·batch, with the unbiased batch
        variance for ``running_var``.
    weight, bias
        ``(C,)`` γ and β, or ``None`` for 1 and 0.
    training
        Use batch statistics (and update the running estimates) if ``True``; otherwise
        normalize with ``running_mean`` and ``running_var``.
    momentum
        The weight α of the new batch in the running average.
    eps
        Added to the variance inside the square root.
    """
    check_dtype(input.is_floating_point(), input.dtype)
    lengths = {
        name: None if t is None else t.numel()
        for name, t in [("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)]
    }
    check_input(input.shape, None, eps, training, lengths)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when training=False")
    mean_in = None if training else running_mean
    var_in = None if training else running_var
    y, mean, var = BatchNormFunction.apply(input, weight, bias, mean_in, var_in, eps, training)
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = var * stats.bessel(stats.count_per_channel(input.shape))
            running_mean.copy_(stats.running_update(running_mean, mean, momentum))
            running_var.copy_(stats.running_update(running_var, unbiased, momentum))
    return y


class _BatchNorm(nn.Module):
    """Shared state and forward of :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d`.

    Parameters ``weight`` (γ, init 1) and ``bias`` (β, init 0) exist when ``affine`` (``bias``
    only if also ``bias=True``, as in torch ≥ 2.13); buffers
    ``running_mean`` (init 0), ``running_var`` (init 1) and ``num_batches_tracked`` exist when
    ``track_running_stats``; the names match ``torch.nn.BatchNorm*`` so state dicts load both ways.
    """

    _ranks: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.zeros(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0 and fresh running statistics."""
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def forward(self, input: Tensor) -> Tensor:
        """Normalize ``input``, ``(N, C, *spatial)``; in training, update the running estimates."""
        check_rank(input.dim(), self._ranks, type(self).__name__)
        use_batch_stats = self.training or self.running_mean is None
        check_dtype(input.is_floating_point(), input.dtype)
        check_input(input.shape, self.num_features, self.eps, use_batch_stats)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = stats.momentum_factor(self.momentum, int(self.num_batches_tracked))
        track = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input; drop-in for ``torch.nn.BatchNorm1d``."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), per channel over N·H·W; drop-in for ``nn.BatchNorm2d``."""

    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W) input; drop-in for ``torch.nn.BatchNorm3d``."""

    _ranks = (5,)
