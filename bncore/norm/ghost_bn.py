r"""Ghost batch norm (Hoffer, Hubara & Soudry 2017): batch norm over virtual sub-batches.

In training, the batch ``input: (N, C, *spatial)`` is split along N into "ghost batches" of
``virtual_batch_size`` examples (the last may be smaller), and each is batch-normalized with its
own statistics, sharing γ and β:

.. math::

    y_{k} = \gamma\,\frac{x_{k}-\mu_{B_k}}{\sqrt{\sigma_{B_k}^2+\epsilon}} + \beta,
    \qquad x_k \in B_k .

The running statistics update once per ghost batch, as if the ghost batches had come one after
another, and eval is batch norm's. The statistics thus have the noise of a batch of
``virtual_batch_size`` whatever N is: small ghost batches regularize a large-batch run (Hoffer
et al.; Summers & Dinneen 2020), and ghost batches of m reproduce BN's small-batch noise at any
N. Built on :class:`bncore.norm.torch_bn.BatchNorm1d` / ``BatchNorm2d`` (same parameters,
buffers and ``state_dict`` keys).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bncore.norm.torch_bn import _BatchNorm

__all__ = ["GhostBatchNorm1d", "GhostBatchNorm2d"]


class _GhostBatchNorm(_BatchNorm):
    """Shared forward of :class:`GhostBatchNorm1d` and :class:`GhostBatchNorm2d`."""

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if virtual_batch_size < 1:
            raise ValueError(
                f"virtual_batch_size must be positive, got {virtual_batch_size}; it is the "
                "number of examples per ghost batch"
            )
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        """The constructor arguments, as torch prints them."""
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"

    def forward(self, input: Tensor) -> Tensor:
        """Batch norm per ghost batch in training (one running update each); BN's eval."""
        if not self.training:
            return super().forward(input)
        return torch.cat([super(_GhostBatchNorm, self).forward(chunk)
                          for chunk in input.split(self.virtual_batch_size)])


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost batch norm over (N, C) or (N, C, L) input."""

    _ranks = (2, 3)


class GhostBatchNorm2d(_GhostBatchNorm):
    """Ghost batch norm over (N, C, H, W) input."""

    _ranks = (4,)
