r"""Final test accuracy over learning rates and seeds: which rates train (Bjorck et al. 2018).

:func:`lr_sweep` trains a freshly built network at every learning rate η and seed with
:func:`bncore.experiments.grid.run_grid` and records its final test accuracy (0 where the loss
diverged). A run counts as *trained* when it did not diverge and reached a threshold accuracy;
:meth:`LRSweep.largest_stable_lr` is then

.. math:: \eta_{\max} = \max\{\eta : \text{every seed trained at } \eta\}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from bncore.experiments.data import Dataset
from bncore.experiments.grid import run_grid
from bncore.experiments.train import train

__all__ = ["LRSweep", "lr_sweep"]


@dataclass
class LRSweep:
    """Final test accuracy over learning rates and seeds (Bjorck et al. 2018, Fig. 1 style).

    Attributes
    ----------
    lrs: (L,) learning rates. acc: (S, L) final test accuracy (0 where the run diverged).
    diverged: (S, L) whether the loss blew up. threshold: accuracy a run must reach to count
    as "trained".
    """

    lrs: np.ndarray
    acc: np.ndarray
    diverged: np.ndarray
    threshold: float

    @property
    def trained(self) -> np.ndarray:
        """(S, L) did not diverge and reached ``threshold`` test accuracy."""
        return (~self.diverged) & (self.acc >= self.threshold)

    def largest_stable_lr(self, per_seed: bool = False) -> float | np.ndarray:
        """The largest rate at which *every* seed trained (or, ``per_seed``, each seed's own
        largest); NaN where none did.
        """
        ok = self.trained
        if per_seed:
            return np.array([self.lrs[r].max() if r.any() else np.nan for r in ok])
        good = ok.all(axis=0)
        return float(self.lrs[good].max()) if good.any() else float("nan")


def lr_sweep(
    build: Callable[[], nn.Module],
    data: Dataset,
    lrs: Sequence[float] | np.ndarray,
    seeds: Sequence[int],
    *,
    steps: int,
    threshold: float = 0.8,
    batch_size: int = 64,
) -> LRSweep:
    """Train ``build()`` for ``steps`` SGD steps at each rate and seed; record the outcome.

    Each run is seeded with :func:`bncore.experiments.runtime.seed_everything` (init) and the same
    seed for the batch order; diverged runs (NaN/Inf or exploding loss, see
    :func:`bncore.experiments.train.train`) stop early and get accuracy 0.
    """
    lr_arr = np.asarray(lrs, dtype=float)
    if lr_arr.size == 0 or np.any(lr_arr <= 0) or not list(seeds):
        raise ValueError("lr_sweep needs positive learning rates and at least one seed")
    grid = run_grid(_train_at, lr_arr.tolist(), seeds, desc="lr sweep", build=build, data=data,
                    steps=steps, batch_size=batch_size)
    acc = grid.values("acc").T  # (S, L)
    div = grid.values("diverged").T.astype(bool)
    return LRSweep(lrs=lr_arr, acc=acc, diverged=div, threshold=threshold)


def _train_at(
    lr: float,
    *,
    seed: int,
    build: Callable[[], nn.Module],
    data: Dataset,
    steps: int,
    batch_size: int,
) -> dict[str, float]:
    """One run of the sweep: ``build()`` (already seeded by the grid), trained at rate ``lr``."""
    hist = train(build(), data, steps=steps, lr=float(lr), batch_size=batch_size, seed=seed,
                 eval_every=0, progress=False)
    acc = 0.0 if hist.diverged else hist.final_test_acc
    return {"acc": acc, "diverged": float(hist.diverged)}
