r"""One normalization, any reduction axes: the autograd Function behind GN, LN and IN.

Group, layer and instance norm are batch norm's phases (:mod:`bncore.norm.torch_phases`) with
other reduction axes ``dims`` (Wu & He 2018, eq. 1–3). Over each reduction set of m values

.. math::

    \hat x = (x-\mu)\,s,\qquad s = \frac{1}{\sqrt{\sigma^2+\epsilon}},\qquad
    y = \gamma\,\hat x + \beta,

with the biased σ². The affine γ, β need not be per channel: they are tensors that broadcast
against ``x`` (per channel for GN and IN, per element for LN), so they may vary *within* a
reduction set. The backward therefore folds γ into the incoming gradient first, g = γ·δ, and
applies the phases with no γ:

.. math::

    \frac{\partial\ell}{\partial x} = \frac{s}{m}\Big(m\,g - \sum g - \hat x\sum g\,\hat x\Big),
    \qquad \frac{\partial\ell}{\partial\gamma} = \sum \delta\,\hat x,\qquad
    \frac{\partial\ell}{\partial\beta} = \sum\delta,

the last two summed over the axes along which γ and β are broadcast. As in
:class:`bncore.norm.torch_bn.BatchNormFunction`, the backward recomputes μ and s from the saved
input with differentiable operations, so it can be differentiated again (gradgradcheck).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bncore.norm import stats
from bncore.norm.torch_phases import (
    _acc_dtype,
    backward_elemt,
    backward_reduce,
    invstd,
    mean_var,
    normalize,
)

__all__ = ["AxisNormFunction", "axis_norm"]


def _xhat(acc: Tensor, dims: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor]:
    """(x̂, s) from the statistics over ``dims`` (statistics → normalize, no affine)."""
    mean, var = mean_var(acc, dims)
    s = invstd(var, eps)
    return normalize(acc, mean, s, None, None, dims), s


class AxisNormFunction(torch.autograd.Function):
    """y = γ·x̂ + β, x̂ normalized over ``dims``; γ and β broadcast against x (or ``None``).

    ``forward(x, weight, bias, dims, eps)``; the backward is the phases' (module docstring).
    """

    @staticmethod
    def forward(
        x: Tensor, weight: Tensor | None, bias: Tensor | None, dims: tuple[int, ...], eps: float,
    ) -> Tensor:
        """Statistics → normalize → affine, in at least float32."""
        acc = x.to(_acc_dtype(x.dtype))
        y, _ = _xhat(acc, dims, eps)
        if weight is not None:
            y = y * weight.to(acc.dtype)
        if bias is not None:
            y = y + bias.to(acc.dtype)
        return y.to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        """Save x and γ; μ and s are recomputed in the backward (so it is differentiable)."""
        x, weight, bias, dims, eps = inputs
        ctx.save_for_backward(x, weight)
        ctx.dims, ctx.eps = dims, eps
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None) -> tuple[Any, ...]:
        """Dx by the backward phases on g = γδ; dγ = Σδx̂ and dβ = Σδ over γ's broadcast axes."""
        if dy is None:
            return (None,) * 5
        x, weight = ctx.saved_tensors
        acc = x.to(_acc_dtype(x.dtype))
        xhat, s = _xhat(acc, ctx.dims, ctx.eps)
        d = dy.to(acc.dtype)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            g = d if weight is None else d * weight.to(acc.dtype)
            sum_g, sum_g_xhat = backward_reduce(g, xhat, ctx.dims)
            m = stats.count_per_channel(x.shape, ctx.dims)
            dx = backward_elemt(g, xhat, s, None, sum_g, sum_g_xhat, m, ctx.dims).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            dweight = (d * xhat).sum_to_size(weight.shape).to(weight.dtype)
        if ctx.bias_shape is not None and ctx.needs_input_grad[2]:
            dbias = d.sum_to_size(ctx.bias_shape).to(dy.dtype)
        return dx, dweight, dbias, None, None


def axis_norm(
    x: Tensor, dims: tuple[int, ...], weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize ``x`` over ``dims`` and apply γ, β (tensors broadcastable against ``x``).

    Internal to the layers, which validate their input first; an input with no values is
    returned as an empty tensor.
    """
    if x.numel() == 0:
        y = x * 1
        return y if weight is None else y * weight + (0 if bias is None else bias)
    return AxisNormFunction.apply(x, weight, bias, dims, eps)
