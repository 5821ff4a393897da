r"""Which learning rates and init scales train, with and without batch norm.

:func:`lr_init_grid` trains one :class:`~bncore.experiments.batched_mlp.BatchedMLP` per
normalization over a grid of learning rates η × init scales a × seeds, all cells at once, and
keeps every run's test-accuracy curve. The init scale multiplies He's init of every layer,
W ~ N(0, 2a²/fan_in): a = 1 is the init that keeps a plain ReLU net's signal at a constant scale,
so the plain net is compared at its best, not at PyTorch's default init (which leaves a deep
plain MLP near chance at small rates, a confound of "BN allows higher rates" with "BN fixes a bad
init").

For a layer followed by BN, scaling W by a changes nothing in the forward pass and divides the
gradient by a, so the run at (η, a) equals the run at (η/a², 1) in those layers (the effective
learning rate η/‖w‖², :mod:`bncore.theory.weight_decay`). Only the head sees a directly.

:func:`region_fraction` is the fraction of the grid's cells whose run reaches a target test
accuracy, one value per seed (so that its mean has a standard error over seeds);
:func:`steps_to` is the first evaluation step at which each run reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bncore.experiments.batched_mlp import BatchedMLP, train_batched
from bncore.experiments.data import Dataset

__all__ = ["LRInitGrid", "lr_init_grid", "region_fraction", "steps_to"]


@dataclass
class LRInitGrid:
    """Runs over η × a × seeds for one normalization.

    ``test_acc: (E, L, S, seeds)`` at ``eval_step: (E,)``; ``final_acc`` and ``diverged``
    ``(L, S, seeds)``.
    """

    norm: str
    lrs: np.ndarray
    scales: np.ndarray
    seeds: tuple[int, ...]
    eval_step: np.ndarray
    test_acc: np.ndarray
    diverged: np.ndarray

    @property
    def final_acc(self) -> np.ndarray:
        """Test accuracy after the last step, ``(L, S, seeds)``."""
        return self.test_acc[-1]


def lr_init_grid(
    data: Dataset,
    lrs: Sequence[float],
    scales: Sequence[float],
    seeds: Sequence[int],
    *,
    norm: str,
    steps: int = 200,
    width: int = 32,
    depth: int = 3,
    batch_size: int = 64,
    eval_every: int = 20,
) -> LRInitGrid:
    """Train the η × a grid for each seed: one :class:`BatchedMLP` of L·S models per seed.

    Within a seed every cell starts from its own draw of the init noise and its own batch order;
    ``steps`` of plain SGD with ``batch_size``, test accuracy every ``eval_every`` steps.
    """
    lrs_a, scales_a = np.asarray(lrs, dtype=float), np.asarray(scales, dtype=float)
    n_l, n_s = len(lrs_a), len(scales_a)
    lr_k, scale_k = np.repeat(lrs_a, n_s), np.tile(scales_a, n_l)  # cell (i, j) → i·S + j
    accs, diverged = [], []
    for seed in seeds:
        model = BatchedMLP(n_l * n_s, data.in_dim, width, depth, data.num_classes, norm=norm,
                           init_scale=scale_k, seed=int(seed))
        hist = train_batched(model, data, steps=steps, lr=lr_k, seed=int(seed),
                             batch_size=batch_size, eval_every=eval_every,
                             desc=f"{norm}, seed {seed}")
        accs.append(hist.test_acc.reshape(-1, n_l, n_s))
        diverged.append(hist.diverged.reshape(n_l, n_s))
        eval_step = hist.eval_step
    return LRInitGrid(norm, lrs_a, scales_a, tuple(int(s) for s in seeds), eval_step,
                      np.stack(accs, -1), np.stack(diverged, -1))


def region_fraction(grid: LRInitGrid, target: float) -> np.ndarray:
    """Per seed, the fraction of (η, a) cells whose final test accuracy is ≥ ``target``."""
    return (grid.final_acc >= target).mean(axis=(0, 1))


def steps_to(grid: LRInitGrid, target: float) -> np.ndarray:
    """First evaluation step with test accuracy ≥ ``target``, ``(L, S, seeds)`` (inf: never)."""
    reached = grid.test_acc >= target
    first = reached.argmax(0)
    return np.where(reached.any(0), grid.eval_step[first], np.inf).astype(float)
