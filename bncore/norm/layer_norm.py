r"""Layer normalization (Ba, Kiros & Hinton 2016): statistics over each sample's features.

The last ``len(normalized_shape)`` axes of ``input: (*, *normalized_shape)`` are one reduction
set of m = ∏normalized_shape values per leading index, and γ, β are *per element* of
``normalized_shape`` (as in ``torch.nn.LayerNorm``):

.. math::

    \hat x = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}},\qquad y = \gamma\odot\hat x + \beta,

with the biased σ². It is the phases of batch norm with the trailing axes as ``dims``
(:class:`bncore.norm.axis_norm.AxisNormFunction`); no batch axis is reduced, so training and
eval agree and it works at batch size 1. Because γ varies within a reduction set, layer norm is
*not* invariant to rescaling one sample's feature vector by a per-feature factor, only by a
common one.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bncore.norm.axis_norm import axis_norm
from bncore.norm.validate import check_dtype, check_eps
from bncore.norm.validate_norms import check_layer_input

__all__ = ["LayerNorm", "layer_norm"]


def layer_norm(
    input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
    bias: Tensor | None = None, eps: float = 1e-5,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.layer_norm``, differentiable twice.

    Parameters
    ----------
    input
        ``(*, *normalized_shape)`` floating tensor.
    normalized_shape
        The trailing shape normalized over.
    weight, bias
        γ and β of shape ``normalized_shape``, or ``None`` for 1 and 0.
    eps
        Added to the variance inside the square root.
    """
    check_dtype(input.is_floating_point(), input.dtype)
    shape = tuple(normalized_shape)
    check_layer_input(input.shape, shape)
    check_eps(eps, False)
    dims = tuple(range(input.dim() - len(shape), input.dim()))
    return axis_norm(input, dims, weight, bias, eps)


class LayerNorm(nn.Module):
    """Layer norm over the trailing ``normalized_shape``; drop-in for ``torch.nn.LayerNorm``.

    Parameters ``weight`` (γ, init 1) and ``bias`` (β, init 0) of shape ``normalized_shape``
    exist when ``elementwise_affine`` (``bias`` only if also ``bias=True``).
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.normalized_shape: tuple[int, ...] = (
            (int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral)
            else tuple(normalized_shape)  # type: ignore[arg-type]
        )
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, **factory))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape, **factory))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """γ = 1, β = 0."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        """The constructor arguments, as torch prints them."""
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")

    def forward(self, input: Tensor) -> Tensor:
        """Normalize each leading index of ``input`` over the trailing ``normalized_shape``."""
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
