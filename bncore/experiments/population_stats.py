r"""EMA against PreciseBN after a high-learning-rate phase, then FrozenBN (Wu & Johnson 2021).

:func:`ema_vs_precise` trains an MLP with BN at a high learning rate, so that the weights move
a lot within the memory of the running average (≈ 1/momentum steps), and compares three ways
of getting the statistics used at test time:

- EMA: the running estimates as training left them, averages of batch statistics under the
  weights of the last ≈ 1/α steps;
- PreciseBN (:func:`~bncore.norm.precise_bn.precise_bn`): population statistics of the final
  weights, over one pass of the training set in batches of the training size;
- FrozenBN (:func:`~bncore.norm.frozen_bn.freeze_batchnorm`): the PreciseBN statistics fixed,
  and a few more steps at a low learning rate; training and eval then compute the same map.

The distance of a layer's EMA from the population statistics is
d = mean over channels of \|μ_EMA − μ\|/σ + \|ln(σ_EMA/σ)\|, zero when they agree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from bncore.experiments.data import Dataset, batches
from bncore.experiments.nets import MLP
from bncore.experiments.train import evaluate, loss_fn
from bncore.norm.fold import BatchNormModule, is_bn
from bncore.norm.frozen_bn import freeze_batchnorm
from bncore.norm.precise_bn import precise_bn

__all__ = ["PopulationResult", "ema_vs_precise", "stats_distance"]


@dataclass
class PopulationResult:
    r"""Test accuracies with EMA, PreciseBN and FrozenBN statistics; distances to PreciseBN's.

    ``distance_ema``: EMA against PreciseBN; ``distance_resample``: PreciseBN against PreciseBN
    over another order of the same batches (its own noise); ``train_eval_gap_frozen``: the
    largest \|output in training mode − output in eval\| after the FrozenBN steps.
    """

    acc_ema: float
    acc_precise: float
    acc_frozen: float
    distance_ema: float
    distance_resample: float
    train_eval_gap_frozen: float


def stats_distance(ema: BatchNormModule, population: BatchNormModule) -> float:
    r"""The distance d = mean over channels of \|μ_a − μ\|/σ + \|ln(σ_a/σ)\| of two BN layers."""
    mu_a, var_a = ema.running_mean, ema.running_var
    mu, var = population.running_mean, population.running_var
    assert mu_a is not None and var_a is not None and mu is not None and var is not None
    d = (mu_a - mu).abs() / var.sqrt() + 0.5 * (var_a / var).log().abs()
    return float(d.mean())


def _bns(model: nn.Module) -> list[BatchNormModule]:
    """The model's BN layers, in order."""
    return [m for m in model.modules() if is_bn(m)]


def ema_vs_precise(data: Dataset, *, seed: int, steps: int = 200, lr: float = 1.0,
                   batch_size: int = 32, frozen_steps: int = 50, frozen_lr: float = 0.01,
                   width: int = 64, depth: int = 2) -> PopulationResult:
    """Train at ``lr``, then compare EMA, PreciseBN and FrozenBN statistics (module docstring).

    Plain SGD on an MLP of ``depth`` BN blocks (momentum 0.1); the initialization uses the global
    RNG (seed it first), ``seed`` the batch order. Distances are means of
    :func:`stats_distance` over the BN layers, against the PreciseBN statistics of a second pass.
    """
    model = MLP(data.in_dim, width, depth, data.num_classes)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    done = 0
    while done < steps:
        for idx in batches(data.n_train, batch_size, gen):
            if done == steps:
                break
            opt.zero_grad()
            loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
            done += 1
    acc_ema = evaluate(model, data.x_test, data.y_test)[1]
    ema = copy.deepcopy(model)
    again = copy.deepcopy(model)
    for net in (model, again):  # two passes in different orders: PreciseBN's own noise
        order = torch.randperm(data.n_train, generator=gen)
        precise_bn(net, data.x_train[order].split(batch_size))
    distances = _distance(ema, again), _distance(model, again)
    acc_precise = evaluate(model, data.x_test, data.y_test)[1]
    freeze_batchnorm(model)
    opt = torch.optim.SGD(model.parameters(), lr=frozen_lr)
    for step, idx in enumerate(batches(data.n_train, batch_size, gen)):
        if step == frozen_steps:
            break
        opt.zero_grad()
        loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    with torch.no_grad():
        gap = float((model.train()(data.x_test) - model.eval()(data.x_test)).abs().max())
    return PopulationResult(acc_ema, acc_precise, evaluate(model, data.x_test, data.y_test)[1],
                            *distances, gap)


def _distance(a: nn.Module, b: nn.Module) -> float:
    """The mean of :func:`stats_distance` over corresponding BN layers of two copies."""
    pairs = list(zip(_bns(a), _bns(b), strict=True))
    return sum(stats_distance(x, y) for x, y in pairs) / len(pairs)
