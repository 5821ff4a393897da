r"""Batch renormalization (Ioffe 2017, Alg. 1): batch norm corrected toward the running statistics.

Layout is ``input: (N, C, *spatial)``; statistics per channel over m = N·∏spatial values. In
training, with the moving averages μ and σ of the mean and of the *standard deviation*,

.. math::

    \sigma_B = \sqrt{\sigma_B^2+\epsilon},\qquad
    r = \operatorname{clip}_{[1/r_{\max},\,r_{\max}]}\Big(\frac{\sigma_B}{\sigma}\Big),

    d = \operatorname{clip}_{[-d_{\max},\,d_{\max}]}\Big(\frac{\mu_B-\mu}{\sigma}\Big),

    \hat x = \frac{x-\mu_B}{\sigma_B}\,r + d,\qquad y = \gamma\,\hat x + \beta,

    \mu \leftarrow \mu + \tau(\mu_B-\mu),\qquad
    \sigma \leftarrow \sigma + \tau(\sigma_B-\sigma),

r and d being constants for the gradient (``stop_gradient``). In eval, y = γ·(x − μ)/σ + β.
With ``r_max = 1`` and ``d_max = 0``, r = 1 and d = 0: the training forward and backward are
batch norm's exactly. ``r_max`` and ``d_max`` are plain attributes, so a training loop can
relax them on a schedule (the paper starts at 1 and 0 and ramps them to 3 and 5). The buffers
are ``running_mean``, ``running_std`` (init 0 and 1) and ``num_batches_tracked``.

The normalization (x − μ_B)/σ_B is :class:`bncore.norm.torch_bn.BatchNormFunction` with no
affine, so the backward is batch norm's hand-written one, times r.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bncore.norm import stats
from bncore.norm.torch_bn import _batch_norm
from bncore.norm.torch_phases import _acc_dtype, _bcast, expand, mean_var, normalize
from bncore.norm.validate import check_dtype, check_input, check_rank

__all__ = ["BatchRenorm1d", "BatchRenorm2d"]


class _BatchRenorm(nn.Module):
    """Shared state and forward of :class:`BatchRenorm1d` and :class:`BatchRenorm2d`."""

    _ranks: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        r_max: float = 1.0,
        d_max: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.r_max = r_max
        self.d_max = d_max
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.running_mean: Tensor
        self.running_std: Tensor
        self.num_batches_tracked: Tensor
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_std", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long,
                                                                 device=device))

    def extra_repr(self) -> str:
        """The constructor arguments, as torch prints them."""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, r_max={self.r_max}, d_max={self.d_max}")

    def correction(self, input: Tensor) -> tuple[Tensor, Tensor]:
        """(r, d) of Alg. 1 for this batch, per channel, detached; μ_B and σ_B from ``input``."""
        with torch.no_grad():
            mean, var = mean_var(input.to(_acc_dtype(input.dtype)))
            std = torch.sqrt(var + self.eps)
            r = (std / self.running_std).clamp(1 / self.r_max, self.r_max)
            d = ((mean - self.running_mean) / self.running_std).clamp(-self.d_max, self.d_max)
        return r, d

    def forward(self, input: Tensor) -> Tensor:
        """Renormalize ``input``, ``(N, C, *spatial)``; in training, update μ and σ."""
        check_rank(input.dim(), self._ranks, type(self).__name__)
        check_dtype(input.is_floating_point(), input.dtype)
        check_input(input.shape, self.num_features, self.eps, self.training)
        nd = input.dim()
        if not self.training:
            return normalize(input, self.running_mean, 1 / self.running_std, self.weight,
                             self.bias)
        r, d = self.correction(input)
        xhat = _batch_norm(input, None, None, None, None, True, 0.0, self.eps)
        y = xhat * expand(r.to(input.dtype), nd) + expand(d.to(input.dtype), nd)
        if self.weight is not None and self.bias is not None:
            y = y * _bcast(self.weight, nd) + _bcast(self.bias, nd)
        with torch.no_grad():
            mean, var = mean_var(input.detach().to(self.running_mean.dtype))
            self.running_mean.copy_(stats.running_update(self.running_mean, mean,
                                                         self.momentum))
            self.running_std.copy_(stats.running_update(self.running_std,
                                                        torch.sqrt(var + self.eps),
                                                        self.momentum))
            self.num_batches_tracked.add_(1)
        return y


class BatchRenorm1d(_BatchRenorm):
    """Batch renorm over (N, C) or (N, C, L) input, per channel."""

    _ranks = (2, 3)


class BatchRenorm2d(_BatchRenorm):
    """Batch renorm over (N, C, H, W) input, per channel over N·H·W values."""

    _ranks = (4,)
