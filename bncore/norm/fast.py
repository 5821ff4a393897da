r"""A fused batch norm: the training transform compiled by ``torch.compile`` (Inductor).

Same signature and semantics as :func:`bncore.norm.torch_bn.batch_norm` (and so as
``torch.nn.functional.batch_norm``): per channel over m = N·∏spatial values,

.. math::

    y = \gamma\,(x-\mu_B)\,s + \beta,\qquad s = 1/\sqrt{\sigma_B^2+\epsilon},

with the running update running ← (1 − τ)·running + τ·batch (unbiased variance). What differs is
how it runs. :mod:`.torch_bn` is a chain of tensor operations, each a pass over memory; here the
training forward (statistics, normalize, affine) is compiled into one fused kernel, and the
backward, written out as torch's kernel computes it (the reductions Σδ and Σδx̂ in one pass over
x and δ, then dx = γs·(δ − Σδ/m − x̂·Σδx̂/m) in another, with the forward's μ and s), into a
second: C++ on the CPU, Triton on a GPU. Eval mode, a single per-channel affine map, is already
one pass and runs through :mod:`.torch_bn`.

Every input is viewed as ``(A, C, B)`` with statistics over axes 0 and 2 (no copy for contiguous
and channels-last input): ``(N, C, *spatial)`` as ``(N, C, ∏spatial)``, channels-last and
``(N, C)`` as ``(N·∏spatial, C, 1)``. With symbolic sizes this keeps the number of compiled
graphs small (one per layout, dtype and ``requires_grad`` pattern); the first call of each costs
seconds of compilation, cached on disk by Inductor.

Limits: the compiled backward is not differentiable again (no double backward: use
:mod:`.torch_bn`), and where no compiler is available (no C++ compiler for a CPU input, no Triton
for a GPU input) it warns once and runs :mod:`.torch_bn` instead.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import warnings
from typing import Any

import torch
from torch import Tensor

from bncore.norm import stats, torch_bn
from bncore.norm.torch_phases import (
    _acc_dtype,
    backward_elemt,
    expand,
    invstd,
    normalize,
    update_running,
)

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm", "compiler_missing"]


#: The reduction axes of the ``(A, C, B)`` view.
_DIMS = (0, 2)
#: Rows summed first, in a block, when channels are the last axis (see :func:`_channel_sum`).
_ROWS = 64


def _channel_sum(t: Tensor) -> Tensor:
    """Σ over axes 0 and 2 of ``t: (A, C, B)``, shape ``(C,)``.

    With B = 1 (rows of C channels: how ``(N, C)`` and channels-last input are viewed) the
    compiled loop of one reduction walks down each column of channels, a cache line per row.
    Summing blocks of :data:`_ROWS` rows first keeps each block in cache; on a CPU core this
    runs several times faster than the one reduction (``make bench`` measures the result).
    """
    a, c, b = t.shape
    if b == 1 and a % _ROWS == 0 and a > _ROWS:
        return t.view(a // _ROWS, _ROWS, c).sum(1).sum(0)
    return t.sum(dim=_DIMS)


def _forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, ...]:
    """The fused forward of ``x: (A, C, B)``: statistics (two passes, μ then σ²), then the
    normalize phase of :mod:`.torch_phases`, y = γ·(x − μ)·s + β.

    Returns y and the (C,) vectors μ, σ² (for the running update) and s (for the backward).
    """
    acc = x.to(_acc_dtype(x.dtype))
    m = stats.count_per_channel(x.shape)
    mean = _channel_sum(acc) / m
    var = _channel_sum((acc - expand(mean, 3, _DIMS)).square()) / m
    s = invstd(var, eps)
    return normalize(acc, mean, s, weight, bias, _DIMS).to(x.dtype), mean, var, s


def _backward(
    dy: Tensor, x: Tensor, mean: Tensor, s: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The fused backward, from the forward's μ and s: Σδ and Σδx̂ (one reduction pass over x
    and δ), then the phase :func:`.torch_phases.backward_elemt`,
    dx = γs·(δ − Σδ/m − x̂·Σδx̂/m) (one elementwise pass). Returns (dx, dγ, dβ).
    """
    g = dy.to(mean.dtype)
    xhat = normalize(x.to(mean.dtype), mean, s, None, None, _DIMS)
    sum_dy, sum_dy_xhat = _channel_sum(g), _channel_sum(g * xhat)
    count = stats.count_per_channel(x.shape)
    dx = backward_elemt(g, xhat, s, weight, sum_dy, sum_dy_xhat, count, _DIMS)
    return dx.to(x.dtype), sum_dy_xhat, sum_dy


@functools.cache
def _compiled(fn: Any) -> Any:
    """``fn`` compiled on first use (importing the compiler costs seconds), with symbolic sizes
    so that new shapes reuse the kernels.
    """
    return torch.compile(fn, dynamic=True)


class _FusedFunction(torch.autograd.Function):
    """Training-mode BN of ``(A, C, B)`` by the two compiled kernels, as torch's kernel is built:
    the forward saves x, μ and s, the backward reads x and δ once to reduce and once to write dx.
    Differentiable once.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float
                ) -> tuple[Tensor, ...]:
        # the ctx form: no torch.func support needed here, and it skips binding the arguments
        # by signature on every call (tens of microseconds, this path's overhead)
        y, mean, var, invstd = _compiled(_forward)(x, weight, bias, eps)
        ctx.mark_non_differentiable(mean, var, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        return y, mean, var, invstd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dy: Tensor, *_stats: Any) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        dx, dweight, dbias = _compiled(_backward)(dy.contiguous(), x, mean, invstd, weight)
        return dx, dweight.to(weight.dtype), dbias.to(weight.dtype), None


@functools.cache
def compiler_missing(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device_type``, or ``None`` if it can."""
    if device_type == "cpu":
        from torch._inductor import config

        cxx = config.cpp.cxx[-1] if isinstance(config.cpp.cxx, tuple) else config.cpp.cxx
        return None if cxx and shutil.which(cxx) else f"no C++ compiler ({cxx}) on the PATH"
    if device_type == "cuda":
        return None if importlib.util.find_spec("triton") else "Triton is not installed"
    return f"torch.compile has no backend for {device_type!r} here"


@functools.cache
def _warn_fallback(reason: str) -> None:
    """One warning per reason and process: the fast path is not available, torch_bn runs."""
    warnings.warn(f"bncore.norm.fast: {reason}; running the unfused bncore.norm.torch_bn",
                  RuntimeWarning, stacklevel=4)


def _as_acb(x: Tensor) -> tuple[Tensor, Any]:
    """``x`` as an ``(A, C, B)`` view (statistics over axes 0 and 2), and how to undo it."""
    n, c, *spatial = x.shape
    last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if x.dim() == 2 or (last is not None and x.is_contiguous(memory_format=last)
                        and not x.is_contiguous()):
        order = (0, *range(2, x.dim()), 1)  # channels last: (N, *spatial, C)
        inverse = (0, x.dim() - 1, *range(1, x.dim() - 1))
        acb = x.permute(order).reshape(-1, c, 1)
        return acb, lambda y: y.reshape(n, *spatial, c).permute(inverse)
    return x.contiguous().reshape(n, c, -1), lambda y: y.reshape(x.shape)


def _train(
    x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None,
    bias: Tensor | None, momentum: float, eps: float,
) -> Tensor:
    """Training-mode batch norm by the compiled kernel, then the running update."""
    c, acc = x.shape[1], _acc_dtype(x.dtype)
    weight = torch.ones(c, dtype=acc, device=x.device) if weight is None else weight
    bias = torch.zeros(c, dtype=acc, device=x.device) if bias is None else bias
    acb, back = _as_acb(x)
    y, mean, var, _invstd = _FusedFunction.apply(acb, weight, bias, eps)
    if running_mean is not None and running_var is not None:
        update_running(running_mean, running_var, mean, var, stats.count_per_channel(x.shape),
                       momentum)
    return back(y)


def _batch_norm(
    input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
    weight: Tensor | None, bias: Tensor | None, training: bool, momentum: float, eps: float,
) -> Tensor:
    """:func:`batch_norm` on validated arguments: compiled in training, torch_bn otherwise."""
    reason = compiler_missing(input.device.type)
    if reason is not None:
        _warn_fallback(reason)
    if not training or input.numel() == 0 or reason is not None:
        return torch_bn._batch_norm(input, running_mean, running_var, weight, bias, training,
                                    momentum, eps)
    return _train(input, running_mean, running_var, weight, bias, momentum, eps)


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
    """Drop-in for ``torch.nn.functional.batch_norm``, fused; differentiable once.

    The arguments are :func:`bncore.norm.torch_bn.batch_norm`'s.
    """
    if not torch_bn._check_arguments(input, running_mean, running_var, weight, bias, training,
                                     eps):
        return torch_bn._empty_batch(input, weight, bias)
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


class BatchNorm1d(torch_bn.BatchNorm1d):
    """:class:`bncore.norm.torch_bn.BatchNorm1d`, fused in training."""

    _functional = staticmethod(_batch_norm)


class BatchNorm2d(torch_bn.BatchNorm2d):
    """:class:`bncore.norm.torch_bn.BatchNorm2d`, fused in training."""

    _functional = staticmethod(_batch_norm)


class BatchNorm3d(torch_bn.BatchNorm3d):
    """:class:`bncore.norm.torch_bn.BatchNorm3d`, fused in training."""

    _functional = staticmethod(_batch_norm)
