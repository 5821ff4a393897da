r"""The norm of weights before batch norm under SGD with weight decay, measured over training.

:func:`equilibrium_runs` trains BN MLPs (:class:`~bncore.experiments.batched_mlp.BatchedMLP`) by
SGD with learning rate η and weight decay λ for several (η, λ) settings and seeds at once, and
records every hidden layer's ‖W‖_F² and the squared norm of its loss gradient ‖∇_W L‖_F² at every
step. Every column of a hidden W feeds one BN unit, so L is invariant to its scale, the gradient
is orthogonal to it, and (:mod:`bncore.theory.weight_decay`)

.. math:: \lVert W_{t+1}\rVert^2 = (1 - \eta\lambda)^2\lVert W_t\rVert^2 + \eta^2\lVert g_t\rVert^2

up to the bias (which BN makes irrelevant). :func:`stationary_means` averages the second half
of the run, with standard errors from batch means (consecutive steps are correlated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bncore.experiments.batched_mlp import BatchedMLP, train_batched
from bncore.experiments.data import Dataset
from bncore.experiments.grid import standard_error

__all__ = ["EquilibriumRuns", "batch_means", "equilibrium_runs", "stationary_means"]


@dataclass
class EquilibriumRuns:
    """``weight_sq`` and ``grad_sq``: ``(T, settings, seeds, depth)``; ``settings``: (η, λ)."""

    settings: tuple[tuple[float, float], ...]
    weight_sq: np.ndarray
    grad_sq: np.ndarray
    final_acc: np.ndarray


def equilibrium_runs(
    data: Dataset, settings: Sequence[tuple[float, float]], seeds: int, *, steps: int = 800,
    batch_size: int = 64, width: int = 32, depth: int = 2, seed: int = 0,
) -> EquilibriumRuns:
    """Train ``seeds`` BN MLPs for each (η, λ) in ``settings``, all at once, for ``steps``."""
    lr = np.repeat([s[0] for s in settings], seeds)
    wd = np.repeat([s[1] for s in settings], seeds)
    model = BatchedMLP(len(lr), data.in_dim, width, depth, data.num_classes, norm="bn",
                       seed=seed)
    hist = train_batched(model, data, steps=steps, lr=lr, weight_decay=wd,
                         batch_size=batch_size, seed=seed, track_norms=True,
                         desc="weight decay")
    shape = (steps, len(settings), seeds, depth)
    return EquilibriumRuns(tuple((float(a), float(b)) for a, b in settings),
                           hist.weight_sq.reshape(shape), hist.grad_sq.reshape(shape),
                           hist.final_test_acc.reshape(len(settings), seeds))


def batch_means(series: np.ndarray, n_batches: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean over time (axis 0) and its standard error from ``n_batches`` batch means."""
    t = series.shape[0] - series.shape[0] % n_batches
    means = series[:t].reshape(n_batches, t // n_batches, *series.shape[1:]).mean(1)
    return means.mean(0), standard_error(means, axis=0)


def stationary_means(runs: EquilibriumRuns, start: float = 0.5) -> dict[str, np.ndarray]:
    """Time averages over steps ≥ start·T of ‖W‖², ‖g‖² and the turn η²‖g‖²/‖W‖², each with its
    batch-means standard error (keys ``w_sq``, ``g_sq``, ``turn`` and ``*_se``), shapes
    ``(settings, seeds, depth)``.
    """
    t0 = int(start * runs.weight_sq.shape[0])
    lr = np.array([s[0] for s in runs.settings]).reshape(1, -1, 1, 1)
    w, g = runs.weight_sq[t0:], runs.grad_sq[t0:]
    out: dict[str, np.ndarray] = {}
    for name, series in (("w_sq", w), ("g_sq", g), ("turn", lr**2 * g / w)):
        out[name], out[f"{name}_se"] = batch_means(series)
    return out
