r"""Batch normalization in NumPy: the transform, its hand-derived backward, and a module.

Layout is ``x: (N, C, *spatial)``; statistics are per channel over the m = N·∏spatial values
of that channel (Ioffe & Szegedy 2015, Alg. 1 and §3.2). In training mode

.. math::

    \mu_B = \frac1m\sum_i x_i,\quad \sigma_B^2 = \frac1m\sum_i (x_i-\mu_B)^2,\quad
    \hat x_i = \frac{x_i-\mu_B}{\sqrt{\sigma_B^2+\epsilon}},\quad y_i = \gamma\hat x_i+\beta,

with the *biased* variance and ε inside the square root, exactly as ``torch.nn.BatchNorm*``.
The backward is the compact form

.. math::

    \frac{\partial\ell}{\partial x_i} = \frac{\gamma}{m\sqrt{\sigma_B^2+\epsilon}}
    \Big(m\,\delta_i - \sum_j \delta_j - \hat x_i \sum_j \delta_j \hat x_j\Big),
    \qquad \delta_i = \partial\ell/\partial y_i .

The computation is written as the phases of :mod:`bncore.norm.torch_phases`, with the same
names and the reduction axes as a parameter (``axes`` here, ``dims`` there): statistics
(:func:`mean_var`, which is :func:`bncore.norm.stats.mean_var`, and :func:`invstd`) →
:func:`normalize` → :func:`update_running`, and :func:`backward_reduce` → :func:`backward_elemt`.

NaN or Inf in a channel's input makes that channel's statistics, output and gradient NaN (as in
torch); other channels are unaffected. Nothing is masked or repaired. An input with no values
(m = 0) gives an empty output and leaves the running statistics alone, as in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncore.norm import stats
from bncore.norm.stats import mean_var
from bncore.norm.validate import check_dtype, check_input

__all__ = [
    "BNCache",
    "BatchNorm",
    "backward_elemt",
    "backward_reduce",
    "batch_norm_backward",
    "batch_norm_backward_graph",
    "batch_norm_forward",
    "batch_norm_inference",
    "expand",
    "invstd",
    "mean_var",
    "normalize",
    "update_running",
]


@dataclass
class BNCache:
    """What the training-mode backward needs, saved by :func:`batch_norm_forward`.

    Per-channel arrays have shape ``(C,)``; ``x`` and ``xhat`` have the input's shape.
    """

    x: np.ndarray
    xhat: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    gamma: np.ndarray
    eps: float

    @property
    def invstd(self) -> np.ndarray:
        """1/√(σ_B² + ε), shape ``(C,)``."""
        return invstd(self.var, self.eps)

    @property
    def m(self) -> int:
        """Values per channel, m = N·∏spatial."""
        return stats.count_per_channel(self.x.shape)


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a per-channel vector ``(C,)`` to ``(1, C, 1, ...)`` for broadcasting."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def expand(stat: np.ndarray, ndim: int, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """A statistic reduced over ``axes`` with those axes put back as size 1, to broadcast on x.

    Per channel (the default, batch norm's axes), ``(C,)`` becomes ``(1, C, 1, …)``.
    """
    axes = stats.reduce_axes(ndim) if axes is None else axes
    return np.expand_dims(stat, tuple(sorted(axes)))


def invstd(var: np.ndarray, eps: float) -> np.ndarray:
    """Statistics phase, its last step: s = 1/√(σ² + ε), elementwise."""
    return 1.0 / np.sqrt(var + eps)


def normalize(
    x: np.ndarray, mean: np.ndarray, invstd: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
    axes: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise phase: x̂ = (x − μ)·s and y = γ·x̂ + β; returns ``(y, x̂)``.

    μ and s are reduced over ``axes`` (per channel by default); γ and β are per channel.
    """
    xhat = x - expand(mean, x.ndim, axes)  # the one temporary besides y; scaled in place
    xhat *= expand(invstd, x.ndim, axes)
    y = _bcast(gamma, x.ndim) * xhat
    y += _bcast(beta, x.ndim)
    return y, xhat


def update_running(
    running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray, var: np.ndarray,
    count: int, momentum: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Running-statistics phase: the new (running_mean, running_var), by :mod:`.stats`' rules.

    running ← (1 − τ)·running + τ·batch, with the unbiased m/(m − 1)·σ_B² for the variance.
    """
    unbiased = var * stats.bessel(count)
    return (stats.running_update(running_mean, mean, momentum),
            stats.running_update(running_var, unbiased, momentum))


def backward_reduce(
    dy: np.ndarray, xhat: np.ndarray, axes: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Backward reduction phase: Σδ and Σδ·x̂ over ``axes`` (per channel, they are dβ and dγ).

    Σδ·x̂ by ``np.einsum`` (indices as integer lists): the products are summed as they are
    formed, without the temporary array δ·x̂.
    """
    axes = stats.reduce_axes(dy.ndim) if axes is None else axes
    every = list(range(dy.ndim))
    kept = [a for a in every if a not in axes]
    return dy.sum(axis=axes), np.einsum(dy, every, xhat, every, kept)


def backward_elemt(
    dy: np.ndarray, xhat: np.ndarray, invstd: np.ndarray, gamma: np.ndarray,
    sum_dy: np.ndarray, sum_dy_xhat: np.ndarray, count: int,
    axes: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Backward elementwise phase: dx = γs/m·(m·δ − Σδ − x̂·Σδx̂), from the reduced sums.

    ``count`` is m, the number of values in each reduction set. One new array, the rest in place:
    dx = γs·(δ − Σδ/m − x̂·Σδx̂/m).
    """
    nd = dy.ndim
    dx = xhat * expand(-sum_dy_xhat / count, nd, axes)
    dx += dy
    dx -= expand(sum_dy / count, nd, axes)
    dx *= _bcast(gamma, nd) * expand(invstd, nd, axes)
    return dx


def _check_x(x: np.ndarray, gamma: np.ndarray | None, eps: float, training: bool, **more) -> None:
    x = np.asarray(x)
    check_dtype(np.issubdtype(x.dtype, np.floating), x.dtype)
    lengths = {"gamma": None if gamma is None else np.size(gamma)}
    lengths.update({k: np.size(v) for k, v in more.items()})
    check_input(x.shape, None, eps, training, lengths)


def batch_norm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, BNCache]:
    """Training-mode batch norm: y = γ·(x − μ_B)/√(σ_B² + ε) + β with batch statistics.

    Parameters
    ----------
    x
        ``(N, C, *spatial)`` floating array.
    gamma, beta
        ``(C,)`` scale and shift.
    eps
        Added to the biased batch variance inside the square root; must be > 0.

    Returns
    -------
    y
        Same shape and dtype as ``x``.
    cache
        A :class:`BNCache` for :func:`batch_norm_backward`.
    """
    _check_x(x, gamma, eps, True, beta=beta)
    return _forward(x, gamma, beta, eps)


def _forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
) -> tuple[np.ndarray, BNCache]:
    """:func:`batch_norm_forward` on validated arguments: statistics → normalize."""
    mean, var = mean_var(x)  # (C,), (C,), two-pass, biased
    y, xhat = normalize(x, mean, invstd(var, eps), gamma, beta)
    cache = BNCache(x=x, xhat=xhat, mean=mean, var=var, gamma=np.asarray(gamma), eps=eps)
    return y.astype(x.dtype, copy=False), cache


def batch_norm_backward(
    dy: np.ndarray, cache: BNCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compact training-mode backward.

    dβ = Σδ, dγ = Σδ·x̂, and dx = (γ/(m·√(σ_B²+ε)))·(m·δ − Σδ − x̂·Σδx̂), sums per channel.

    Returns ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)``.
    """
    dbeta, dgamma = backward_reduce(dy, cache.xhat)
    dx = backward_elemt(dy, cache.xhat, cache.invstd, cache.gamma, dbeta, dgamma, cache.m)
    return dx.astype(dy.dtype, copy=False), dgamma, dbeta


def batch_norm_backward_graph(
    dy: np.ndarray, cache: BNCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward by the chain rule through Ioffe & Szegedy's computational graph (§3).

    Step by step, with sums per channel over the m values:

    - ∂ℓ/∂x̂ = δ·γ
    - ∂ℓ/∂σ² = Σ ∂ℓ/∂x̂ · (x − μ) · (−½)(σ² + ε)^(−3/2)
    - ∂ℓ/∂μ = Σ ∂ℓ/∂x̂ · (−1/√(σ² + ε)) + ∂ℓ/∂σ² · (−2/m)·Σ(x − μ)
    - ∂ℓ/∂x = ∂ℓ/∂x̂/√(σ² + ε) + ∂ℓ/∂σ² · 2(x − μ)/m + ∂ℓ/∂μ / m

    The last term of ∂ℓ/∂μ multiplies Σ(x − μ), which is zero; it is kept here, as in the paper,
    so that the equivalence with :func:`batch_norm_backward` can be checked numerically.
    """
    axes = stats.reduce_axes(dy.ndim)
    nd, m = dy.ndim, cache.m
    centred = cache.x - _bcast(cache.mean, nd)
    var_eps = _bcast(cache.var + cache.eps, nd)
    dxhat = dy * _bcast(cache.gamma, nd)
    dvar = (dxhat * centred * -0.5 * var_eps**-1.5).sum(axis=axes)
    dmean = (dxhat * -(var_eps**-0.5)).sum(axis=axes) + dvar * (-2.0 / m) * centred.sum(axis=axes)
    dx = dxhat * var_eps**-0.5 + _bcast(dvar, nd) * 2.0 * centred / m + _bcast(dmean, nd) / m
    return dx, (dy * cache.xhat).sum(axis=axes), dy.sum(axis=axes)


def batch_norm_inference(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    """Eval-mode batch norm: the fixed affine map y = γ·(x − μ̂)/√(σ̂² + ε) + β (Alg. 2).

    ``running_mean`` μ̂ and ``running_var`` σ̂² are the population estimates (the latter
    unbiased). Because the map is affine per channel it can be folded into a preceding layer.
    """
    _check_x(x, gamma, eps, False, beta=beta, running_mean=running_mean, running_var=running_var)
    nd = x.ndim
    s = invstd(np.asarray(running_var), eps)
    y = _bcast(gamma * s, nd) * (x - _bcast(running_mean, nd)) + _bcast(beta, nd)
    return y.astype(x.dtype, copy=False)


class BatchNorm:
    """A NumPy batch-norm layer with ``torch.nn.BatchNorm*``'s state and running-statistics rules.

    Parameters
    ----------
    num_features
        C, the number of channels.
    eps
        Added to the variance inside the square root.
    momentum
        Weight τ of the new batch in the running average,
        running ← (1 − τ)·running + τ·batch; ``None`` gives the cumulative average τ = 1/t.
    affine
        Whether γ (``weight``) and β (``bias``) exist; if not they act as 1 and 0.
    track_running_stats
        Whether running estimates are kept. If not, batch statistics are used in eval mode too.

    Notes
    -----
    ``running_var`` is updated with the unbiased variance m/(m−1)·σ_B². After :meth:`backward`,
    ``grad_weight`` and ``grad_bias`` hold dγ and dβ.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight = np.ones(num_features) if affine else None
        self.bias = np.zeros(num_features) if affine else None
        self.grad_weight: np.ndarray | None = None
        self.grad_bias: np.ndarray | None = None
        if track_running_stats:
            self.running_mean: np.ndarray | None = np.zeros(num_features)
            self.running_var: np.ndarray | None = np.ones(num_features)
            self.num_batches_tracked: int | None = 0
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.training = True
        self._cache: BNCache | None = None  # training-mode forward, for backward
        self._eval_cache: tuple[np.ndarray, np.ndarray] | None = None  # (x̂, γ/√(σ̂²+ε))

    def train(self, mode: bool = True) -> BatchNorm:
        """Switch to training mode (batch statistics, running estimates updated)."""
        self.training = mode
        return self

    def eval(self) -> BatchNorm:
        """Switch to eval mode (running estimates, if tracked)."""
        return self.train(False)

    def _gamma_beta(self) -> tuple[np.ndarray, np.ndarray]:
        if self.affine:
            return self.weight, self.bias  # type: ignore[return-value]
        return np.ones(self.num_features), np.zeros(self.num_features)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize ``x: (N, C, *spatial)``; in training, update the running estimates."""
        use_batch_stats = self.training or self.running_mean is None
        check_dtype(np.issubdtype(np.asarray(x).dtype, np.floating), np.asarray(x).dtype)
        first = "running_mean" if self.running_mean is not None else "weight" if self.affine \
            else None
        check_input(x.shape, self.num_features, self.eps, use_batch_stats, None, first)
        gamma, beta = self._gamma_beta()
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked += 1
        if x.size == 0:  # as torch: an empty output, the running statistics left alone
            self._cache, self._eval_cache = None, (x.copy(), np.zeros(self.num_features))
            return x.copy()
        if not use_batch_stats:
            assert self.running_mean is not None and self.running_var is not None
            s = invstd(self.running_var, self.eps)
            y, xhat = normalize(x, self.running_mean, s, gamma, beta)
            self._cache, self._eval_cache = None, (xhat, gamma * s)
            return y.astype(x.dtype, copy=False)
        y, self._cache = _forward(x, gamma, beta, self.eps)
        self._eval_cache = None
        if self.training and self.num_batches_tracked is not None:
            assert self.running_mean is not None and self.running_var is not None
            factor = stats.momentum_factor(self.momentum, self.num_batches_tracked)
            self.running_mean, self.running_var = update_running(
                self.running_mean, self.running_var, self._cache.mean, self._cache.var,
                self._cache.m, factor)
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient with respect to the last :meth:`forward` input; sets ``grad_weight/grad_bias``.

        In eval mode the layer is a fixed affine map, so dx = γ/√(σ̂² + ε)·δ.
        """
        if self._cache is not None:
            dx, dgamma, dbeta = batch_norm_backward(dy, self._cache)
        elif self._eval_cache is not None:
            xhat, scale = self._eval_cache
            dx = dy * _bcast(scale, dy.ndim)
            dbeta, dgamma = backward_reduce(dy, xhat)
        else:
            raise RuntimeError("backward() called before forward()")
        if self.affine:
            self.grad_weight, self.grad_bias = dgamma, dbeta
        return dx
