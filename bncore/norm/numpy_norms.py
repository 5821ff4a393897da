r"""Group, layer and instance norm in NumPy, with the hand-derived backward of batch norm.

The phases of :mod:`bncore.norm.numpy_bn` (:func:`mean_var`, :func:`invstd`,
:func:`normalize`, :func:`backward_reduce`, :func:`backward_elemt`) with other reduction axes:

==============  ==================================  ===================  =================
norm            x viewed as                         reduction axes       γ, β
==============  ==================================  ===================  =================
batch           ``(N, C, *S)``                      N and S              per channel
layer           ``(*, *normalized_shape)``          the trailing ones    per element
instance        ``(N, C, *S)``                      S                    per channel
group           ``(N, G, C/G, *S)``                 C/G and S            per channel
==============  ==================================  ===================  =================

Over each reduction set of m values, x̂ = (x − μ)·s with s = 1/√(σ² + ε) (biased σ²) and
y = γ·x̂ + β. Since γ may vary within a set (LN, GN), the backward folds it into the incoming
gradient, g = γ·δ, and applies batch norm's formula without γ:

.. math::

    \frac{\partial\ell}{\partial x} = \frac{s}{m}\Big(m\,g-\sum g-\hat x\sum g\,\hat x\Big),
    \qquad \frac{\partial\ell}{\partial\gamma}=\sum\delta\,\hat x,\qquad
    \frac{\partial\ell}{\partial\beta}=\sum\delta .

The torch twins are :mod:`bncore.norm.group_norm`, :mod:`bncore.norm.layer_norm` and
:mod:`bncore.norm.instance_norm`; inputs are trusted here (the torch layers validate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncore.norm import stats
from bncore.norm.numpy_bn import backward_elemt, backward_reduce, expand, invstd, mean_var

__all__ = [
    "AxisCache",
    "axis_norm_backward",
    "axis_norm_forward",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
]


@dataclass
class AxisCache:
    """What :func:`axis_norm_backward` needs: x̂, s, γ (broadcastable) and the axes."""

    xhat: np.ndarray
    invstd: np.ndarray
    gamma: np.ndarray
    axes: tuple[int, ...]

    @property
    def m(self) -> int:
        """Values per reduction set."""
        return stats.count_per_channel(self.xhat.shape, self.axes)


def axis_norm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, axes: tuple[int, ...], eps: float = 1e-5,
) -> tuple[np.ndarray, AxisCache]:
    """Y = γ·x̂ + β with x̂ normalized over ``axes``; γ, β broadcast against x."""
    mean, var = mean_var(x, axes)
    s = invstd(var, eps)
    xhat = (x - expand(mean, x.ndim, axes)) * expand(s, x.ndim, axes)
    return gamma * xhat + beta, AxisCache(xhat, s, np.broadcast_to(gamma, x.shape), axes)


def _sum_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``a`` over the axes along which an array of ``shape`` was broadcast to it."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1)
    return a.sum(axis=axes, keepdims=True).reshape(shape)


def axis_norm_backward(
    dy: np.ndarray, cache: AxisCache, gamma_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dγ, dβ), dγ and dβ summed to ``gamma_shape``."""
    g = dy * cache.gamma
    sum_g, sum_g_xhat = backward_reduce(g, cache.xhat, cache.axes)
    one = np.ones(1)
    dx = backward_elemt(g, cache.xhat, cache.invstd, one, sum_g, sum_g_xhat, cache.m,
                        cache.axes)
    return dx, _sum_to(dy * cache.xhat, gamma_shape), _sum_to(dy, gamma_shape)


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def group_norm_forward(
    x: np.ndarray, num_groups: int, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5,
) -> tuple[np.ndarray, AxisCache]:
    """Group norm of ``x: (N, C, *S)``, γ, β of shape ``(C,)``."""
    n, c, *spatial = x.shape
    grouped = x.reshape(n, num_groups, c // num_groups, *spatial)
    shape = (1, num_groups, c // num_groups) + (1,) * len(spatial)
    y, cache = axis_norm_forward(grouped, gamma.reshape(shape), beta.reshape(shape),
                                 tuple(range(2, grouped.ndim)), eps)
    return y.reshape(x.shape), cache


def group_norm_backward(dy: np.ndarray, cache: AxisCache) -> tuple[np.ndarray, ...]:
    """(dx, dγ, dβ) of :func:`group_norm_forward`; dγ, dβ of shape ``(C,)``."""
    shape = (1, *cache.xhat.shape[1:3]) + (1,) * (cache.xhat.ndim - 3)
    dx, dg, db = axis_norm_backward(dy.reshape(cache.xhat.shape), cache, shape)
    return dx.reshape(dy.shape), dg.ravel(), db.ravel()


def layer_norm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5,
) -> tuple[np.ndarray, AxisCache]:
    """Layer norm over the trailing ``gamma.shape`` axes of ``x``."""
    k = np.ndim(gamma)
    return axis_norm_forward(x, gamma, beta, tuple(range(x.ndim - k, x.ndim)), eps)


def layer_norm_backward(dy: np.ndarray, cache: AxisCache) -> tuple[np.ndarray, ...]:
    """(dx, dγ, dβ) of :func:`layer_norm_forward`; dγ, dβ of shape ``normalized_shape``."""
    return axis_norm_backward(dy, cache, tuple(dy.shape[min(cache.axes):]))


def instance_norm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5,
) -> tuple[np.ndarray, AxisCache]:
    """Instance norm of ``x: (N, C, *S)`` over S, γ, β of shape ``(C,)``."""
    return axis_norm_forward(x, _per_channel(gamma, x.ndim), _per_channel(beta, x.ndim),
                             tuple(range(2, x.ndim)), eps)


def instance_norm_backward(dy: np.ndarray, cache: AxisCache) -> tuple[np.ndarray, ...]:
    """(dx, dγ, dβ) of :func:`instance_norm_forward`; dγ, dβ of shape ``(C,)``."""
    dx, dg, db = axis_norm_backward(dy, cache, (1, dy.shape[1]) + (1,) * (dy.ndim - 2))
    return dx, dg.ravel(), db.ravel()
