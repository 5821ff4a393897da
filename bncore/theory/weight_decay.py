r"""Weight decay on weights that feed batch norm: the effective learning rate and its equilibrium.

A weight vector w followed by BN only sets a direction: L(aw) = L(w) for a > 0. Hence
∇L(w) ⟂ w and ∇L(w) = ∇L(ŵ)/‖w‖ with ŵ = w/‖w‖ (van Laarhoven 2017; Hoffer et al. 2018), and
an SGD step of size η turns the direction like a step of size

.. math:: \eta_\text{eff} = \eta / \lVert w\rVert^2

on the unit sphere (:func:`effective_learning_rate`). Weight decay λ does not change the function
of such a layer; it shrinks ‖w‖ and so raises η_eff (Zhang et al. 2019).

SGD with weight decay, w ← (1 − ηλ)w − η g with g = ∇L ⟂ w, gives exactly

.. math::

    \lVert w_{t+1}\rVert^2 = (1 - \eta\lambda)^2\lVert w_t\rVert^2 + \eta^2\lVert g_t\rVert^2 .

The norm settles where the two balance; averaged over the fluctuations of g,

.. math::

    \overline{\lVert w\rVert^2} = \frac{\eta\,\overline{\lVert g\rVert^2}}{\lambda(2 - \eta\lambda)}
    \approx \frac{\eta\,\overline{\lVert g\rVert^2}}{2\lambda},

:func:`equilibrium_sq_norm`; with ‖g‖ = ‖g̃‖/‖w‖ (g̃ the gradient at unit norm) this is
‖w‖⁴ ≈ η‖g̃‖²/(2λ) (:func:`equilibrium_norm`). At the equilibrium the direction turns by
η²‖g‖²/‖w‖² ≈ ηλ(2 − ηλ) per step (squared angle), whatever the loss
(:func:`equilibrium_angular_update`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "effective_learning_rate",
    "equilibrium_angular_update",
    "equilibrium_norm",
    "equilibrium_sq_norm",
]


def _check(lr: float, wd: float) -> None:
    if not lr > 0 or not wd > 0 or not lr * wd < 2:
        raise ValueError(f"need lr > 0, weight decay > 0 and lr·wd < 2, got {lr} and {wd}")


def effective_learning_rate(lr: float, norm: float | np.ndarray) -> float | np.ndarray:
    """η/‖w‖²: the step size on the sphere of a scale-invariant weight of norm ‖w‖."""
    return lr / np.square(norm)


def equilibrium_sq_norm(
    lr: float, wd: float, mean_sq_grad: float | np.ndarray
) -> float | np.ndarray:
    """η·mean‖g‖²/(λ(2 − ηλ)): the stationary ‖w‖² of SGD with weight decay (exact recursion)."""
    _check(lr, wd)
    return lr * np.asarray(mean_sq_grad) / (wd * (2 - lr * wd))


def equilibrium_norm(lr: float, wd: float, unit_grad_norm: float) -> float:
    """‖w‖ = (η‖g̃‖²/(λ(2 − ηλ)))^{1/4}, with ‖g̃‖ the gradient norm at ‖w‖ = 1."""
    _check(lr, wd)
    return (lr * unit_grad_norm**2 / (wd * (2 - lr * wd))) ** 0.25


def equilibrium_angular_update(lr: float, wd: float) -> float:
    """ηλ(2 − ηλ) = 1 − (1 − ηλ)²: the mean squared turn η²‖g‖²/‖w‖² per step at equilibrium."""
    _check(lr, wd)
    return 1 - (1 - lr * wd) ** 2


