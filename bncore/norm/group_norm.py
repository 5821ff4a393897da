r"""Group normalization (Wu & He 2018): batch norm's phases over a group of channels per sample.

Layout is ``input: (N, C, *spatial)``. The C channels are split into G groups of C/G; each
sample's group is normalized over its m = (C/G)·∏spatial values, and γ, β are per channel:

.. math::

    \hat x_{n,c,\ldots} = \frac{x_{n,c,\ldots}-\mu_{n,g}}{\sqrt{\sigma_{n,g}^2+\epsilon}},
    \qquad y = \gamma_c\,\hat x + \beta_c,\qquad g = \lfloor c\,G/C \rfloor,

with the biased σ². The input is viewed as ``(N, G, C/G, *spatial)`` and normalized over axes
2, 3, … by :class:`bncore.norm.axis_norm.AxisNormFunction`. G = 1 normalizes as layer norm over
``(C, *spatial)``, G = C as instance norm, but the affine stays per channel. No batch axis is
reduced, so training and eval compute the same thing and there are no running statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bncore.norm.axis_norm import axis_norm
from bncore.norm.validate import check_dtype, check_eps
from bncore.norm.validate_norms import check_group_input, check_groups

__all__ = ["GroupNorm", "group_norm"]


def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.group_norm``, differentiable twice.

    Parameters
    ----------
    input
        ``(N, C, *spatial)`` floating tensor, C divisible by ``num_groups``.
    num_groups
        G, the number of groups of C/G channels.
    weight, bias
        ``(C,)`` γ and β, or ``None`` for 1 and 0.
    eps
        Added to the variance inside the square root.
    """
    check_dtype(input.is_floating_point(), input.dtype)
    channels = input.shape[1] if input.dim() >= 2 else 0
    check_group_input(input.shape, num_groups, channels if weight is None else weight.numel())
    if channels % num_groups != 0:
        raise RuntimeError(
            f"Expected number of channels in input to be divisible by num_groups, but got input "
            f"of shape {list(input.shape)} and num_groups={num_groups}; choose G among the "
            f"divisors of {channels}"
        )
    check_eps(eps, True)
    n, spatial = input.shape[0], input.shape[2:]
    grouped = (n, num_groups, channels // num_groups, *spatial)
    per_channel = (1, num_groups, channels // num_groups) + (1,) * len(spatial)
    dims = tuple(range(2, len(grouped)))
    y = axis_norm(
        input.reshape(grouped), dims,
        None if weight is None else weight.reshape(per_channel),
        None if bias is None else bias.reshape(per_channel), eps,
    )
    return y.reshape(input.shape)


class GroupNorm(nn.Module):
    """Group norm over ``(N, C, *spatial)``; drop-in for ``torch.nn.GroupNorm``.

    Parameters ``weight`` (γ, init 1) and ``bias`` (β, init 0), shape ``(C,)``, exist when
    ``affine`` (``bias`` only if also ``bias=True``), named as torch's so state dicts load both
    ways. ``num_channels`` must be divisible by ``num_groups`` (a ``ValueError`` here, as torch).
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_groups(num_channels, num_groups)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels, **factory))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = nn.Parameter(torch.zeros(num_channels, **factory))
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
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

    def forward(self, input: Tensor) -> Tensor:
        """Normalize each sample's groups of ``input``, ``(N, C, *spatial)``."""
        check_dtype(input.is_floating_point(), input.dtype)
        check_group_input(input.shape, self.num_groups, self.num_channels)
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
