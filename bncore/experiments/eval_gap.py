r"""The train/eval gap of a trained network, and what recalibrating its BN statistics changes.

One seed of the training-versus-inference chapter's study, as a function that
:func:`~bncore.experiments.grid.run_grid` runs over seeds:

- :func:`gap_after_training` trains an :class:`~bncore.experiments.nets.MLP`
  (:func:`~bncore.experiments.train.train_mlp`) and measures
  :func:`~bncore.norm.inference.train_eval_gap` on the held-out and on the training split, per
  batch size, and each split's *floor*: the gap with the whole split as one batch,

  .. math:: \mathrm{floor} = \sqrt{\tfrac{1}{nK} \textstyle\sum_{i,k}
            (f_{\mathrm{train}}(x_i)_k - f_{\mathrm{eval}}(x_i)_k)^2},

  over the n examples and K logits, where training mode normalizes with the split's own
  statistics.
- :func:`recalibration_effect` replaces the running estimates of a trained network by
  Ioffe & Szegedy's population statistics (Alg. 2, :func:`~bncore.norm.inference.recalibrate_bn`)
  and reports the accuracy and the floors before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from bncore.experiments.data import Dataset
from bncore.experiments.train import evaluate, train_mlp
from bncore.norm.fold import is_bn
from bncore.norm.inference import GapResult, recalibrate_bn, train_eval_gap


def floor_gap(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The train/eval gap with all of ``(x, y)`` as one batch (``train_eval_gap`` at m = n)."""
    return float(train_eval_gap(model, x, y, [x.shape[0]], batches_per_size=1).gap[0])


@dataclass(frozen=True)
class GapRun:
    """One trained network and its train/eval gaps (:func:`gap_after_training`)."""

    model: nn.Module  # the trained network, on the CPU, in eval mode
    test: GapResult  # train_eval_gap on the held-out split, per batch size
    train: GapResult  # the same on the training split
    floor_test: float  # the gap with the whole held-out split as one batch
    floor_train: float  # the same for the training split


def gap_after_training(
    data: Dataset,
    *,
    seed: int,
    batch_sizes: Sequence[int],
    norm: str = "bn",
    width: int,
    depth: int,
    **train_kwargs: Any,
) -> GapRun:
    """Train an MLP on ``data`` and measure its train/eval gaps on the CPU.

    Training is :func:`~bncore.experiments.train.train_mlp` with ``norm``, ``width``, ``depth``
    and ``train_kwargs``.

    ``seed`` seeds the batch order and the draws of the gap's batches; as for ``train_mlp``
    the initialization uses the global RNG as it stands (run it under ``run_grid``).
    """
    model = train_mlp(data, seed=seed, norm=norm, width=width, depth=depth,
                      **train_kwargs).model.cpu()
    return GapRun(
        model=model,
        test=train_eval_gap(model, data.x_test, data.y_test, batch_sizes, seed=seed),
        train=train_eval_gap(model, data.x_train, data.y_train, batch_sizes, seed=seed),
        floor_test=floor_gap(model, data.x_test, data.y_test),
        floor_train=floor_gap(model, data.x_train, data.y_train),
    )


@dataclass(frozen=True)
class Recalibration:
    """Test accuracy and floors of one network before and after recalibrating its BN layers."""

    acc_before: float
    acc_after: float
    rel_var_change: float  # median |v_ema − v_alg2| / v_alg2 over the units of one BN layer
    floor_test: float  # after recalibrating
    floor_train: float  # after recalibrating


def recalibration_effect(
    model: nn.Module, data: Dataset, *, batch_size: int, seed: int = 0, layer: int = 1
) -> Recalibration:
    """Recalibrate ``model``'s BN statistics on the training split (in place) and compare.

    ``rel_var_change`` compares the running variances of the ``layer``-th BN layer (0-based,
    in module order) before (exponential average) and after (Alg. 2) recalibration.
    """
    ema_var = _running_var(model, layer).clone()
    acc_before = evaluate(model, data.x_test, data.y_test)[1]
    recalibrate_bn(model, data.x_train, batch_size=batch_size, seed=seed)
    new_var = _running_var(model, layer)
    return Recalibration(
        acc_before=acc_before,
        acc_after=evaluate(model, data.x_test, data.y_test)[1],
        rel_var_change=float(((ema_var - new_var).abs() / new_var).median()),
        floor_test=floor_gap(model, data.x_test, data.y_test),
        floor_train=floor_gap(model, data.x_train, data.y_train),
    )


def _running_var(model: nn.Module, layer: int) -> Tensor:
    variances = [m.running_var for m in model.modules()
                 if is_bn(m) and m.running_var is not None]
    return variances[layer]
