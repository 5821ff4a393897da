r"""Trainability over depth: plain BN MLPs of several depths, trained with one recipe.

Yang et al. (2019) predict that at initialization the squared weight-gradient norm of a deep BN
network grows by λ per layer toward the input (:mod:`bncore.experiments.explosion`), so that the
first and last layers of a depth-L network differ by

.. math:: \frac{\|\partial L/\partial W^1\|^2}{\|\partial L/\partial W^L\|^2} \approx \lambda^{L-1},

and a network stops training once that ratio is out of reach of one learning rate
(:func:`bncore.theory.trainable_depth`). :func:`mlp_weight_grad_sq` measures the per-layer norms
of a trainable :class:`bncore.experiments.nets.MLP`, and :func:`depth_sweep` records them at
initialization and then trains the networks over depths × seeds with
:func:`bncore.experiments.grid.run_grid`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bncore.experiments.data import Dataset
from bncore.experiments.grid import run_grid
from bncore.experiments.nets import MLP, probe_mode
from bncore.experiments.runtime import default_device
from bncore.experiments.train import loss_fn, train

__all__ = ["DepthSweep", "depth_sweep", "mlp_weight_grad_sq"]


def mlp_weight_grad_sq(model: MLP, x: Tensor, y: Tensor) -> np.ndarray:
    """‖∂ℓ/∂W_i‖_F² of each hidden block's weight for the cross-entropy loss on ``(x, y)``.

    One forward and backward in training mode (batch statistics), inside
    :func:`bncore.experiments.nets.probe_mode` so that BN's running statistics are left as they
    were. Returns an array of length ``model.depth`` (block 1 first); the model's ``.grad`` fields
    are cleared afterwards.
    """
    if len(model.blocks) == 0:
        raise ValueError("the model has no hidden blocks")
    was_training = model.training
    model.train()
    with probe_mode(model):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        sq = np.array([float(_grad(b.linear.weight).square().sum()) for b in model.blocks])
        model.zero_grad(set_to_none=True)
    model.train(was_training)
    return sq


def _grad(t: Tensor) -> Tensor:
    """``t.grad``, which the backward pass through every block has just filled."""
    assert t.grad is not None
    return t.grad


@dataclass(frozen=True)
class DepthSweep:
    """Plain BN-MLPs of several depths, trained with the same recipe.

    ``test_acc`` and ``train_loss`` are ``(len(depths), len(seeds))``: the final test accuracy
    and the mean training loss of the last 20 steps (NaN for a run that diverged).
    ``init_grad_sq[i]`` is ``(len(init_seeds), depths[i])``: :func:`mlp_weight_grad_sq` at
    initialization on a batch of ``batch_size`` training examples drawn with each seed.
    """

    depths: tuple[int, ...]
    seeds: tuple[int, ...]
    init_seeds: tuple[int, ...]
    batch_size: int
    lr: float
    steps: int
    width: int
    test_acc: np.ndarray
    train_loss: np.ndarray
    diverged: np.ndarray
    init_grad_sq: list[np.ndarray]


def depth_sweep(
    data: Dataset,
    depths: Iterable[int],
    *,
    batch_size: int,
    lr: float,
    steps: int,
    width: int = 128,
    seeds: Iterable[int] = (0, 1),
    init_seeds: Iterable[int] | None = None,
    activation: str = "relu",
    device: torch.device | str | None = None,
) -> DepthSweep:
    """Train ``MLP(in, width, depth, classes, norm="bn")`` for each depth and seed with SGD.

    Each run: :func:`bncore.experiments.runtime.seed_everything` (seed), build the model (Kaiming
    init, BN after every hidden linear layer, as in Yang et al.'s z^l = W^l φ(BN(z^{l−1})) plus
    biases and a linear head), record the per-layer weight-gradient norms at initialization on one
    batch, then :func:`bncore.experiments.train.train` for ``steps`` plain SGD steps (batch order
    seeded with the same seed). ``init_seeds`` (default: ``seeds``) are the networks whose gradients
    at initialization are recorded; that measurement costs one forward and backward, so it can use
    more networks than the training runs.
    """
    depths, seeds = tuple(int(d) for d in depths), tuple(int(s) for s in seeds)
    init_seeds = seeds if init_seeds is None else tuple(int(s) for s in init_seeds)
    if not depths or min(depths) < 1 or not seeds or not init_seeds:
        raise ValueError(f"need depths >= 1 and at least one seed, got {depths}, {seeds}")
    device = torch.device(device) if device is not None else default_device()
    data = data.to(device)
    setup = {"data": data, "width": width, "activation": activation, "device": device}
    init = run_grid(_init_grad_sq, depths, init_seeds, desc="gradients at init",
                    batch_size=batch_size, **setup)
    runs = run_grid(_train_depth, depths, seeds, desc="depth sweep", batch_size=batch_size,
                    lr=lr, steps=steps, **setup)
    return DepthSweep(depths=depths, seeds=seeds, init_seeds=init_seeds,
                      batch_size=int(batch_size), lr=float(lr), steps=int(steps),
                      width=int(width), test_acc=runs.values("test_acc"),
                      train_loss=runs.values("train_loss"),
                      diverged=runs.values("diverged").astype(bool),
                      init_grad_sq=[np.stack(row) for row in init.results])


def _bn_mlp(depth: int, data: Dataset, width: int, activation: str, device: torch.device) -> MLP:
    """The swept network: ``MLP(in, width, depth, classes, norm="bn")`` on ``device``."""
    return MLP(data.in_dim, width, depth, data.num_classes, norm="bn",
               activation=activation).to(device)


def _init_grad_sq(
    depth: int, *, seed: int, batch_size: int, data: Dataset, width: int, activation: str,
    device: torch.device,
) -> np.ndarray:
    """:func:`mlp_weight_grad_sq` of a fresh network on a batch drawn with ``seed``."""
    model = _bn_mlp(depth, data, width, activation, device)
    idx = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(seed))
    idx = idx[:batch_size].to(device)
    return mlp_weight_grad_sq(model, data.x_train[idx], data.y_train[idx])


def _train_depth(
    depth: int, *, seed: int, batch_size: int, lr: float, steps: int, data: Dataset, width: int,
    activation: str, device: torch.device,
) -> dict[str, float]:
    """Train a fresh network: final test accuracy, mean loss of the last 20 steps (NaN if it
    diverged).
    """
    model = _bn_mlp(depth, data, width, activation, device)
    hist = train(model, data, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                 eval_every=0, progress=False, device=device)
    nan = float("nan")
    return {"diverged": float(hist.diverged),
            "test_acc": nan if hist.diverged else hist.final_test_acc,
            "train_loss": nan if hist.diverged else float(np.mean(hist.loss[-20:]))}
