r"""How many times larger one measurement is than another, over paired seeds, with its interval.

With r_s = log(a_s / b_s) over n ≥ 2 seeds that give both measurements the same start,

.. math::

    \hat k = \exp(\bar r),\qquad
    \big[\exp(\bar r - t\,\mathrm{se}),\ \exp(\bar r + t\,\mathrm{se})\big],\qquad
    \mathrm{se} = \mathrm{sd}(r)/\sqrt n,

t the two-sided Student-t quantile with n − 1 degrees of freedom: "a is k times b" with its
uncertainty, for positive quantities that vary over orders of magnitude (effective smoothness K_eff,
gradient changes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

__all__ = ["log_ratio_interval"]


def log_ratio_interval(
    numerator: Sequence[float] | np.ndarray,
    denominator: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Geometric-mean ratio of paired positive measurements and its t-interval.

    With r_s = log(a_s / b_s) over n ≥ 2 paired seeds, returns
    (exp(mean r), exp(mean r − t·se), exp(mean r + t·se)), se = sd(r)/√n and t the two-sided
    Student-t quantile with n − 1 degrees of freedom: "a is k times b" with its uncertainty.
    """
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError("need two paired 1-D arrays with at least 2 entries each")
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("log-ratio intervals need positive measurements")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    r = np.log(a / b)
    se = r.std(ddof=1) / np.sqrt(r.size)
    t = float(sps.t.ppf(0.5 + confidence / 2, df=r.size - 1))
    mid = float(r.mean())
    return float(np.exp(mid)), float(np.exp(mid - t * se)), float(np.exp(mid + t * se))
