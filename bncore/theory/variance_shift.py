r"""Dropout before batch norm: the variance shift of Li et al. (2019).

Dropout with keep probability p multiplies a unit by m/p, m ~ Bernoulli(p), in training and
leaves it alone at test time. For an input X with mean c and variance v (independent of m),

.. math::

    \mathrm{Var}_\text{train}\Big[\frac{m}{p}X\Big]
    = \frac{\mathbb E[X^2]}{p} - c^2 = \frac{c^2 + v}{p} - c^2,
    \qquad \mathrm{Var}_\text{test}[X] = v,

so a BN layer after the dropout learns (in its running variance) a variance that is wrong at
test time by the ratio :func:`dropout_variance_ratio`, which is 1/p for c = 0 (Li et al. 2019,
§3; they write the ratio the other way up, test over train, p for c = 0). The mean is unchanged.

Between the dropout and the BN there is usually a linear layer, z = Σᵢ wᵢ (mᵢ/p) xᵢ with masks
independent across units and of x. Then E[z] is unchanged and

.. math::

    \mathrm{Var}_\text{train}[z] - \mathrm{Var}_\text{test}[z]
    = \Big(\frac1p - 1\Big)\sum_i w_i^2\,\mathbb E[x_i^2],

:func:`dropout_linear_variance_shift`; for one input (w = e_i) it is the formula above.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dropout_linear_variance_shift", "dropout_train_variance", "dropout_variance_ratio"]


def _check_keep(p: float) -> None:
    if not 0 < p <= 1:
        raise ValueError(f"the keep probability p must lie in (0, 1], got {p}")


def dropout_train_variance(p: float, c: float, v: float) -> float:
    """Var[mX/p] = (c² + v)/p − c² for X of mean c and variance v, m ~ Bernoulli(p)."""
    _check_keep(p)
    return (c**2 + v) / p - c**2


def dropout_variance_ratio(p: float, c: float, v: float) -> float:
    r"""Var_train / Var_test = ((c² + v)/p − c²)/v = 1/p + (1/p − 1)·c²/v (≥ 1/p)."""
    if not v > 0:
        raise ValueError(f"the test variance v must be > 0, got {v}")
    return dropout_train_variance(p, c, v) / v


def dropout_linear_variance_shift(p: float, w: np.ndarray, second_moment: np.ndarray) -> np.ndarray:
    r"""(1/p − 1)·Σᵢ w_{ij}² E[x_i²] for each output j of z = x W, ``w: (d, J)``, E[x²]: ``(d,)``.

    The excess variance that dropout on the inputs x adds to each pre-activation z_j.
    """
    _check_keep(p)
    w, m2 = np.asarray(w, dtype=float), np.asarray(second_moment, dtype=float)
    return (1 / p - 1) * (m2 @ (w**2))
