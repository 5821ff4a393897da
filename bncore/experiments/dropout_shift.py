r"""Dropout before batch norm, measured: Li et al.'s (2019) variance shift and what it costs.

- :func:`monte_carlo_variance`: Var[mX/p] by sampling, against
  :func:`bncore.theory.variance_shift.dropout_train_variance`.
- :func:`network_variance_shift`: in a :class:`~bncore.experiments.batched_mlp.BatchedMLP` with
  dropout after block l − 1, the variance of block l's pre-BN input z = hW + b with dropout on
  (what BN's statistics see in training) and off (test time), per unit, and the prediction
  Var_test + (1/p − 1)Σᵢ W_ij² E[h_i²]
  (:func:`bncore.theory.variance_shift.dropout_linear_variance_shift`).
- :func:`placement_accuracy`: test accuracy of BN MLPs with dropout after every block (so that
  every later BN sees dropped-out inputs) or after the last block only (after the last BN),
  evaluated with the inference statistics that running averages collect (dropout on) and with
  statistics recalibrated with dropout off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bncore.experiments.batched_mlp import BatchedMLP, batched_accuracy, train_batched
from bncore.experiments.data import Dataset
from bncore.theory.variance_shift import dropout_linear_variance_shift

__all__ = [
    "PlacementResult",
    "VarianceShift",
    "monte_carlo_variance",
    "network_variance_shift",
    "placement_accuracy",
]


def monte_carlo_variance(
    p: float, c: float, v: float, n: int, seed: int = 0
) -> tuple[float, float]:
    """Sample variance of m·X/p over n draws, X ~ N(c, v), m ~ Bernoulli(p), and its standard
    error √((μ₄ − σ⁴)/n) from the sample's fourth central moment μ₄.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(c, np.sqrt(v), n) * (rng.random(n) < p) / p
    var = float(x.var(ddof=1))
    mu4 = float(np.mean((x - x.mean()) ** 4))
    return var, float(np.sqrt((mu4 - var**2) / n))


@dataclass
class VarianceShift:
    """Per model and unit ``(K, W)``: the pre-BN variance with dropout (``train``), without
    (``test``), and the prediction ``test + (1/p − 1)Σ W² E[h²]``.
    """

    train: np.ndarray
    test: np.ndarray
    predicted: np.ndarray


@torch.no_grad()
def network_variance_shift(model: BatchedMLP, x: torch.Tensor, layer: int) -> VarianceShift:
    """The variance shift at block ``layer``'s BN input (``layer ≥ 1``, dropout after block
    ``layer − 1``), measured on inputs ``x`` with the batch statistics of one pass each.
    """
    if layer < 1 or layer - 1 not in model.dropout_after:
        raise ValueError(f"block {layer - 1} has no dropout before block {layer}'s BN")
    was = model.training, model.dropout_active
    x = x.to(model.weights[0].device)
    model.train()
    stats: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    pre: list[torch.Tensor] = []
    for on in (False, True):
        model.dropout_active = on
        stats[on] = []
        model(x, collect=stats[on], pre=pre if not on else None)
    model.train(was[0])
    model.dropout_active = was[1]
    h = torch.relu(pre[layer - 1])  # block layer−1's output before its dropout: (K, N, W)
    m2 = h.square().mean(1).double().cpu().numpy()
    w = model.weights[layer].double().cpu().numpy()
    p = model.keep.double().cpu().numpy()
    shift = np.stack([dropout_linear_variance_shift(p[k], w[k], m2[k]) for k in range(model.k)])
    test = stats[False][layer][1].double().cpu().numpy()
    return VarianceShift(stats[True][layer][1].double().cpu().numpy(), test, test + shift)


@dataclass
class PlacementResult:
    """Test accuracy per seed with the statistics running averages see (dropout on) and with
    recalibrated ones (dropout off); the trained model.
    """

    running: np.ndarray
    recalibrated: np.ndarray
    model: BatchedMLP


def placement_accuracy(
    data: Dataset, dropout_after: Sequence[int], keep: float, seeds: Sequence[int], *,
    lr: float = 0.1, steps: int = 300, batch_size: int = 64, width: int = 64, depth: int = 3,
) -> PlacementResult:
    """Train BN MLPs (one per seed) with dropout after the blocks ``dropout_after`` and compare
    their test accuracy under the two inference statistics (calibrated on the training set).
    """
    model = BatchedMLP(len(seeds), data.in_dim, width, depth, data.num_classes, norm="bn",
                       keep=keep, dropout_after=dropout_after, seed=int(seeds[0]))
    train_batched(model, data, steps=steps, lr=lr, batch_size=batch_size, seed=int(seeds[0]),
                  calib_size=data.n_train, calib_dropout=True, desc="dropout placement")
    data = data.to(model.weights[0].device)
    accs = []
    for dropout in (True, False):
        model.calibrate(data.x_train, dropout=dropout)
        accs.append(batched_accuracy(model, data.x_test, data.y_test).numpy())
    return PlacementResult(accs[0], accs[1], model)
