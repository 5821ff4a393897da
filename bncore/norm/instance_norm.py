r"""Instance normalization (Ulyanov et al. 2016): statistics per sample and channel.

Layout is ``input: (N, C, *spatial)`` or, without the batch axis, ``(C, *spatial)``. Each
(sample, channel) is normalized over its m = ∏spatial values, and γ, β (when ``affine``) are
per channel:

.. math::

    \hat x_{n,c,\ldots} = \frac{x_{n,c,\ldots}-\mu_{n,c}}{\sqrt{\sigma_{n,c}^2+\epsilon}},\qquad
    y = \gamma_c\,\hat x + \beta_c .

These are batch norm's phases with ``dims = (2, …)`` (:class:`bncore.norm.axis_norm.
AxisNormFunction`). As in ``torch.nn.InstanceNorm*d``, ``affine`` and ``track_running_stats``
default to ``False``, so eval mode also uses the instance statistics. With
``track_running_stats=True`` training updates, per channel,

.. math::

    \hat\mu \leftarrow (1-\alpha)\,\hat\mu + \alpha\,\tfrac1N\textstyle\sum_n \mu_{n,c},\qquad
    \hat\sigma^2 \leftarrow (1-\alpha)\,\hat\sigma^2
    + \alpha\,\tfrac1N\textstyle\sum_n \tfrac{m}{m-1}\sigma_{n,c}^2,

and eval normalizes with them, as batch norm's eval does (``momentum=None`` means 0, as torch).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from bncore.norm import stats
from bncore.norm.axis_norm import axis_norm
from bncore.norm.torch_bn import _BatchNorm, batch_norm
from bncore.norm.torch_phases import _bcast, mean_var, update_running
from bncore.norm.validate import check_dtype, check_eps
from bncore.norm.validate_norms import check_instance_input, check_values_per_set

__all__ = ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "instance_norm"]


def instance_norm(
    input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
    weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
    momentum: float = 0.1, eps: float = 1e-5,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.instance_norm``, differentiable twice.

    Parameters
    ----------
    input
        ``(N, C, *spatial)`` floating tensor.
    running_mean, running_var
        ``(C,)`` running estimates or ``None``; updated in place when ``use_input_stats``.
    weight, bias
        ``(C,)`` γ and β, or ``None`` for 1 and 0.
    use_input_stats
        Normalize with each instance's statistics (else with the running ones).
    momentum
        The weight τ of the new batch in the running average.
    eps
        Added to the variance inside the square root.
    """
    check_dtype(input.is_floating_point(), input.dtype)
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    check_values_per_set(stats.count_per_channel(input.shape, range(2, input.dim())),
                         input.shape, "spatial element")
    check_eps(eps, True)
    dims = tuple(range(2, input.dim()))
    if running_mean is not None and running_var is not None and input.numel() > 0:
        mean, var = mean_var(input.detach().to(running_mean.dtype), dims)
        update_running(running_mean, running_var, mean.mean(0), var.mean(0),
                       stats.count_per_channel(input.shape, dims), momentum)
    nd = input.dim()
    return axis_norm(input, dims, None if weight is None else _bcast(weight, nd),
                     None if bias is None else _bcast(bias, nd), eps)


class _InstanceNorm(_BatchNorm):
    """Shared state and forward of :class:`InstanceNorm1d`, :class:`InstanceNorm2d`,
    :class:`InstanceNorm3d`: batch norm's parameters and buffers, torch's instance-norm defaults.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)

    def forward(self, input: Tensor) -> Tensor:
        """Normalize ``input``, ``(N, C, *spatial)`` or ``(C, *spatial)``."""
        unbatched = input.dim() == self._ranks[0]
        channels = input.shape[0 if unbatched else 1] if input.dim() >= 1 else 0
        check_instance_input(input.dim(), self._ranks, type(self).__name__, channels,
                             self.num_features, self.affine)
        if channels != self.num_features:
            warnings.warn(
                f"input's size at dim={int(not unbatched)} does not match num_features. You can "
                "silence this warning by not passing in num_features, which is not used because "
                "affine=False", stacklevel=2,
            )
        x = input.unsqueeze(0) if unbatched else input
        y = instance_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            0.0 if self.momentum is None else self.momentum, self.eps,
        )
        return y.squeeze(0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) or (C, L); drop-in for ``torch.nn.InstanceNorm1d``."""

    _ranks = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or (C, H, W); drop-in for ``torch.nn.InstanceNorm2d``."""

    _ranks = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) or (C, D, H, W); drop-in for ``nn.InstanceNorm3d``."""

    _ranks = (4, 5)
