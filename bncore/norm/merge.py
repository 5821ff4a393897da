r"""Chan's parallel merge of partial statistics, in torch: the combine step across processes.

Each process ``i`` holds ``n_i`` values of a channel with mean ``μ_i`` and sum of squared
deviations ``M₂,i = Σ(x − μ_i)²``. Two parts merge exactly (Chan, Golub & LeVeque 1983):

.. math::

    n = n_a + n_b,\qquad \delta = \mu_b - \mu_a,

    \mu = \mu_a + \delta\,\tfrac{n_b}{n},\qquad

    M_2 = M_{2,a} + M_{2,b} + \delta^2\,\tfrac{n_a n_b}{n},

the torch twin of :func:`bncore.norm.stats.chan_merge`. The term δ²·n_a·n_b/n is the spread
*between* the parts' means: averaging the parts' variances drops it, and weighting the parts
equally is wrong as soon as their counts differ. A part with ``n_i = 0`` leaves the result
unchanged, so a process with an empty batch can take part in the merge.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chan_merge", "merge_all"]


def chan_merge(
    n_a: Tensor, mean_a: Tensor, m2_a: Tensor, n_b: Tensor, mean_b: Tensor, m2_b: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge two parts' (count, mean, M₂) by Chan's rule; counts are 0-d tensors, may be 0.

    Returns ``(n, μ, M₂)``; when both counts are 0 the mean and M₂ are 0 (not NaN).
    """
    n = n_a + n_b
    safe = torch.clamp(n, min=1)
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / safe)
    m2 = m2_a + m2_b + delta.square() * (n_a * n_b / safe)
    return n, mean, m2


def merge_all(counts: Tensor, means: Tensor, m2s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fold :func:`chan_merge` over k parts, left to right.

    Parameters
    ----------
    counts
        ``(k,)`` the parts' value counts n_i (per channel, the same for every channel).
    means, m2s
        ``(k, C)`` the parts' means μ_i and M₂,i.

    Returns
    -------
    ``(n, μ, M₂)``: the total count (0-d) and the ``(C,)`` mean and M₂ of all values, equal to
    those of the concatenated parts to round-off; σ² = M₂/n is the biased variance.
    """
    n, mean, m2 = counts[0], means[0], m2s[0]
    for i in range(1, counts.shape[0]):
        n, mean, m2 = chan_merge(n, mean, m2, counts[i], means[i], m2s[i])
    return n, mean, m2
