r"""FrozenBN: batch norm with fixed statistics, the same map in training and eval.

:class:`FrozenBatchNorm` normalizes with stored population statistics in both modes,

.. math::

    y = \gamma\,\frac{x - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta,

a per-channel affine map: no batch dependence, no running update, the train–test inconsistency
of BN gone. Wu & Johnson (2021, §4.2) train the last epochs this way after computing the
population statistics (e.g. by :func:`~bncore.norm.precise_bn.precise_bn`); detectron2 freezes a
pretrained backbone's BN for fine-tuning with small per-GPU batches. γ and β stay parameters
(call ``requires_grad_(False)`` on them to freeze those too); the statistics are buffers with
``BatchNorm``'s names, so state dicts load both ways.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bncore.norm.fold import is_bn
from bncore.norm.torch_phases import invstd, normalize
from bncore.norm.validate import check_dtype, check_input

__all__ = ["FrozenBatchNorm", "freeze_batchnorm"]


class FrozenBatchNorm(nn.Module):
    """y = γ·(x − μ̂)/√(σ̂² + ε) + β with fixed μ̂, σ̂², in training and eval alike.

    Input ``(N, C, *spatial)``; buffers ``running_mean`` (init 0), ``running_var`` (init 1);
    parameters ``weight`` (γ, init 1), ``bias`` (β, init 0).
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> FrozenBatchNorm:
        """A frozen copy of a BN layer's running statistics; γ, β are the same Parameters."""
        if not is_bn(bn) or bn.running_mean is None or bn.running_var is None:
            raise TypeError("from_batchnorm needs a BatchNorm layer with running statistics, "
                            f"got {type(bn).__name__}")
        frozen = cls(bn.num_features, bn.eps, bn.running_mean.device, bn.running_mean.dtype)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
        if bn.weight is not None:
            frozen.weight = bn.weight
        if bn.bias is not None:
            frozen.bias = bn.bias
        return frozen

    def forward(self, input: Tensor) -> Tensor:
        """The fixed affine map; the same in training and eval."""
        check_dtype(input.is_floating_point(), input.dtype)
        check_input(input.shape, self.num_features, self.eps, False)
        s = invstd(self.running_var.to(input.dtype), self.eps)
        return normalize(input, self.running_mean.to(input.dtype), s, self.weight, self.bias)

    def extra_repr(self) -> str:
        """The channel count and ε, as ``BatchNorm``'s repr."""
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BN layer (bncore's, ``torch.nn``'s, SyncBN) by a :class:`FrozenBatchNorm`.

    Recursive, in place for children; returns the converted module (a new one if ``module`` is
    itself a BN layer). The frozen layers keep the BN layers' γ, β Parameter objects.
    """
    if is_bn(module):
        return FrozenBatchNorm.from_batchnorm(module)
    for name, child in module.named_children():
        module.add_module(name, freeze_batchnorm(child))
    return module
