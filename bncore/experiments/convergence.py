r"""How fast an iteration converges: fitted linear rates, iterations to a tolerance, bound checks.

A linearly converging error behaves as gap_t ≈ C·rᵗ. :func:`fitted_rate` estimates the per-step
factor r by least squares on log gap_t,

.. math:: \log \mathrm{gap}_t \approx \log C + t \log r ,

:func:`iterations_to` counts the steps to reach gap_t ≤ tol·gap_0, and :func:`first_violation`
finds the first step at which a run leaves a guaranteed bound, ignoring gaps below the
round-off floor :data:`ROUNDOFF_FLOOR` (relative to the scale of the compared quantity).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ROUNDOFF_FLOOR", "first_violation", "fitted_rate", "iterations_to"]


def fitted_rate(gap: np.ndarray, *, floor: float = 1e-12, tail: float = 0.25) -> float:
    """Per-step contraction factor r of a linearly converging ``gap`` (gap_t ≈ C·rᵗ).

    Fits log gap_t against t by least squares over the last ``tail`` fraction of the iterates
    with gap_t > ``floor``·gap_0 (earlier ones carry transients of faster modes, later ones
    round-off), and returns exp(slope).
    """
    gap = np.asarray(gap, dtype=np.float64)
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    idx = np.flatnonzero(gap > floor * gap[0])
    idx = idx[int(len(idx) * (1 - tail)) :]
    if len(idx) < 3:
        raise ValueError("fewer than 3 iterates above the floor: run more steps or lower it")
    slope = np.polyfit(idx.astype(np.float64), np.log(gap[idx]), 1)[0]
    return float(np.exp(slope))


ROUNDOFF_FLOOR = 1e-12
"""Gaps below ROUNDOFF_FLOOR·abs(R*) are not compared with bounds: R(w) − R* is a difference of two
numbers of size abs(R*) and carries an absolute float64 error of a few 1e-16·abs(R*)."""


def first_violation(gap: np.ndarray, bound: np.ndarray, scale: float) -> int:
    """First t with gap_t > bound_t·(1 + 1e-9) and gap_t above the round-off floor; −1 if none."""
    bad = (gap > bound * (1.0 + 1e-9)) & (gap > ROUNDOFF_FLOOR * scale)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else -1


def iterations_to(gap: np.ndarray, tol: float) -> int:
    """First t with gap_t ≤ tol·gap_0, or −1 if the run never gets there."""
    gap = np.asarray(gap, dtype=np.float64)
    hits = np.flatnonzero(gap <= tol * gap[0])
    return int(hits[0]) if hits.size else -1
