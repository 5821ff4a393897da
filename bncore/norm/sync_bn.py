r"""Batch norm synchronized across processes, on any ``torch.distributed`` backend (gloo, NCCL).

With the data split over k processes, process i holding n_i of the m = Σn_i values of a channel,
:class:`SyncBatchNorm` normalizes every process's slice by the statistics of all m values, as one
process would on the concatenated batch. The phases are :mod:`.torch_phases`' with a collective
in each "(combine)" step (the shape of ``torch.nn.SyncBatchNorm``):

- forward: each process computes its (n_i, μ_i, M₂,i) (M₂ = Σ(x − μ_i)²); the 2C + 1 numbers are
  **all-gathered**, since the counts differ, and merged by Chan's rule (:mod:`.merge`):
  μ = Σn_iμ_i/m, σ² = (ΣM₂,i + Σn_i(μ_i − μ)²)/m. Then y = γ·(x − μ)·s + β locally, and the
  running estimates get the unbiased m/(m − 1)·σ² of all m values.
- backward: x̂_j depends on every process's values through μ and σ², so

  .. math::

      \frac{\partial L}{\partial x_j} = \frac{\gamma s}{m}\Big(m\,\delta_j - \sum\delta
      - \hat x_j \sum \delta\,\hat x\Big)

  with the two sums over **all** m values: one **all-reduce** (sum) of the 2C numbers
  (Σδ, Σδ·x̂). The γ and β gradients (Σδ·x̂, Σδ) are left local: ``DistributedDataParallel``
  averages them with the other gradients (the sum over processes is the one-process gradient).

Unlike ``torch.nn.SyncBatchNorm``, CPU tensors work (gloo), so SyncBN runs on a laptop. A process
with an empty batch (n_i = 0) takes part in both collectives. Synchronization happens only in
training with a process group of more than one process; in eval, with one process, or when
``torch.distributed`` is not initialized, the layer is :class:`~bncore.norm.torch_bn.BatchNorm1d`
(not an error, as in torch). The input can have any rank ≥ 2, as torch's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bncore.norm import stats, torch_bn
from bncore.norm.merge import merge_all
from bncore.norm.torch_phases import (
    backward_elemt,
    backward_reduce,
    invstd,
    mean_var,
    normalize,
    update_running,
)
from bncore.norm.validate import check_dtype, check_eps, check_input, check_rank

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "convert_sync_batchnorm"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics in at least float32, as in :mod:`.torch_phases`."""
    return torch.promote_types(dtype, torch.float32)


def _local_stats(acc: Tensor) -> Tensor:
    """The local (n, μ, M₂) as one ``(2C + 1,)`` tensor; μ = M₂ = 0 for an empty batch."""
    count = stats.count_per_channel(acc.shape)
    if count > 0:
        mean, var = mean_var(acc)
        m2 = var * count
    else:
        mean = m2 = acc.new_zeros(acc.shape[1])
    return torch.cat([acc.new_full((1,), float(count)), mean, m2])


class SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm over the union of every process's batch; one all-gather, one all-reduce.

    ``apply(x, weight, bias, running_mean, running_var, eps, momentum, group, world_size)``.
    Differentiable once (the backward calls a collective, so it is not itself differentiable).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None,
        running_mean: Tensor | None, running_var: Tensor | None, eps: float, momentum: float,
        group: Any, world_size: int,
    ) -> Tensor:
        """Gather every (n_i, μ_i, M₂,i), merge them, normalize locally, update the running."""
        acc = x.to(_acc_dtype(x.dtype))
        channels = x.shape[1]
        local = _local_stats(acc)  # (2C + 1,)
        gathered = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(gathered, local, group=group)
        table = torch.stack(gathered)  # (k, 2C + 1)
        n, mean, m2 = merge_all(table[:, 0], table[:, 1:1 + channels], table[:, 1 + channels:])
        total = int(n.item())
        if total <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {total} over all "
                f"{world_size} processes; a batch variance needs at least two values, so use a "
                "larger batch or call .eval()"
            )
        var = m2 / total
        s = invstd(var, eps)
        if running_mean is not None and running_var is not None:
            update_running(running_mean, running_var, mean, var, total, momentum)
        ctx.save_for_backward(x, weight, mean, s)
        ctx.total, ctx.group = total, group
        ctx.has_bias = bias is not None
        return normalize(acc, mean, s, weight, bias).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Any, ...]:
        """All-reduce (Σδ, Σδ·x̂), then dx by the elementwise phase; dγ, dβ local."""
        x, weight, mean, s = ctx.saved_tensors
        acc = x.to(mean.dtype)
        xhat = normalize(acc, mean, s, None, None)
        g = dy.to(mean.dtype)
        sum_dy, sum_dy_xhat = backward_reduce(g, xhat)
        channels = x.shape[1]
        both = torch.cat([sum_dy, sum_dy_xhat])  # (2C,)
        dist.all_reduce(both, op=dist.ReduceOp.SUM, group=ctx.group)
        dx = backward_elemt(g, xhat, s, weight, both[:channels], both[channels:], ctx.total)
        dweight = sum_dy_xhat.to(weight.dtype) if weight is not None else None
        dbias = sum_dy.to(dy.dtype if weight is None else weight.dtype) if ctx.has_bias else None
        return dx.to(x.dtype), dweight, dbias, None, None, None, None, None, None


def _world(group: Any) -> tuple[Any, int]:
    """The group to synchronize over and its size; size 1 when ``torch.distributed`` is off."""
    if not (dist.is_available() and dist.is_initialized()):
        return None, 1
    group = group if group is not None else dist.group.WORLD
    return group, dist.get_world_size(group)


class SyncBatchNorm(torch_bn._BatchNorm):
    """Batch norm over all processes of ``process_group``; drop-in for ``nn.SyncBatchNorm``.

    The constructor is torch's: ``SyncBatchNorm(num_features, eps=1e-5, momentum=0.1,
    affine=True, track_running_stats=True, process_group=None, device=None, dtype=None, *,
    bias=True)``; ``process_group=None`` means the default (world) group. Parameters, buffers
    and ``state_dict`` keys are those of ``BatchNorm*d``. Input ``(N, C, *spatial)``, N may be 0
    on some processes.
    """

    _ranks = (2, 3, 4, 5)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        """Normalize ``input`` by the statistics of every process's batch (in training)."""
        group, world_size = _world(self.process_group)
        if not (self.training and world_size > 1):  # plain batch norm, with its checks
            return super().forward(input)
        check_rank(input.dim(), self._ranks, type(self).__name__)
        check_dtype(input.is_floating_point(), input.dtype)
        # the count > 1 check waits for the merged count: a process may hold 0 or 1 values
        first = "running_mean" if self.track_running_stats else "weight" if self.affine else None
        check_input(input.shape, self.num_features, self.eps, False, None, first)
        check_eps(self.eps, True)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = stats.momentum_factor(None, int(self.num_batches_tracked))
        running = (self.running_mean, self.running_var) if self.track_running_stats \
            else (None, None)
        return SyncBatchNormFunction.apply(input, self.weight, self.bias, *running, self.eps,
                                           factor, group, world_size)


_CONVERTIBLE = (nn.modules.batchnorm._BatchNorm, torch_bn._BatchNorm)


def convert_sync_batchnorm(module: nn.Module, process_group: Any | None = None) -> nn.Module:
    """Replace every batch-norm layer in ``module`` by a :class:`SyncBatchNorm`, recursively.

    Converts ``torch.nn.BatchNorm1d/2d/3d`` (and ``torch.nn.SyncBatchNorm``) and bncore's
    ``BatchNorm1d/2d/3d`` and :class:`SyncBatchNorm` (to a new ``process_group``). The new layer
    shares the old one's parameter objects and buffers (``running_mean``, ``running_var``,
    ``num_batches_tracked``), so an optimizer built before still updates it, and keeps its
    training mode. Returns the converted module (``module`` itself is converted in place,
    unless it is a batch-norm layer, as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``).
    """
    out = module
    if isinstance(module, _CONVERTIBLE):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group)
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out
