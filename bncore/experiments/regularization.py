r"""Where batch norm's regularization comes from: batch noise as a knob, against dropout.

In training, BN normalizes each example with the statistics of its batch, so the output for one
example depends on the others drawn with it: a noise whose strength grows as the batch of
statistics shrinks (Luo et al. 2019 decompose BN into population normalization plus this noise
and a "γ decay" regularizer). Ghost batch norm (Hoffer et al. 2017) turns the knob: the batch of
the SGD step stays the same, and BN's statistics come from groups of g examples
(:class:`~bncore.experiments.batched_mlp.BatchedMLP` with ``ghost = g``).

:func:`subsample` makes a training set small enough to overfit; :func:`ghost_gap` and
:func:`dropout_gap` measure the generalization gap (train − test accuracy) of the same MLP
trained with BN at ghost size g, or without BN and with dropout of keep probability p after every
block, one model per seed, all seeds at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bncore.experiments.batched_mlp import BatchedMLP, train_batched
from bncore.experiments.data import Dataset

__all__ = ["GapResult", "dropout_gap", "ghost_gap", "subsample"]


def subsample(data: Dataset, n_train: int, seed: int = 0) -> Dataset:
    """The first ``n_train`` examples of a seeded permutation of the training split, with the
    same number of examples of each class (up to rounding); the test split is unchanged.
    """
    classes = int(data.y_train.max()) + 1
    if not 0 < n_train <= data.n_train:
        raise ValueError(f"n_train must be in [1, {data.n_train}], got {n_train}")
    perm = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(seed))
    y = data.y_train[perm]
    rank = torch.zeros_like(y)  # position of each example among those of its class
    for c in range(classes):
        mask = y == c
        rank[mask] = torch.arange(int(mask.sum()))
    order = perm[torch.argsort(rank * classes + y, stable=True)][:n_train]
    return Dataset(data.x_train[order], data.y_train[order], data.x_test, data.y_test)


@dataclass
class GapResult:
    """Train and test accuracy and their gap, one value per run (last axis: seeds)."""

    train_acc: np.ndarray
    test_acc: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """Train − test accuracy."""
        return self.train_acc - self.test_acc


def ghost_gap(
    data: Dataset, ghost: int | None, seeds: Sequence[int], *, lr: float = 0.1,
    steps: int = 300, batch_size: int = 32, width: int = 64, depth: int = 2,
) -> GapResult:
    """BN MLPs with BN statistics over ghost batches of ``ghost`` (``None``: the whole batch),
    one per seed (init seeded by ``seeds[0]``, each model its own draw), trained at once.
    """
    model = BatchedMLP(len(seeds), data.in_dim, width, depth, data.num_classes, norm="bn",
                       ghost=ghost, seed=int(seeds[0]))
    hist = train_batched(model, data, steps=steps, lr=lr, batch_size=batch_size,
                         seed=int(seeds[0]), calib_size=data.n_train, desc=f"ghost {ghost}")
    return GapResult(hist.train_acc, hist.final_test_acc)


def dropout_gap(
    data: Dataset, keeps: Sequence[float], seeds: Sequence[int], *, lr: float = 0.1,
    steps: int = 300, batch_size: int = 32, width: int = 64, depth: int = 2,
) -> GapResult:
    """MLPs without BN, dropout with keep probability p after every block, for each p in
    ``keeps`` and each seed (arrays ``(len(keeps), len(seeds))``), trained at once.
    """
    n_p, n_s = len(keeps), len(seeds)
    model = BatchedMLP(n_p * n_s, data.in_dim, width, depth, data.num_classes, norm="none",
                       keep=np.repeat(np.asarray(keeps, dtype=float), n_s),
                       dropout_after=range(depth), seed=int(seeds[0]))
    hist = train_batched(model, data, steps=steps, lr=lr, batch_size=batch_size,
                         seed=int(seeds[0]), desc="dropout")
    return GapResult(hist.train_acc.reshape(n_p, n_s), hist.final_test_acc.reshape(n_p, n_s))
