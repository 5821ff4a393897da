r"""K small MLPs trained at once: the engine of the practice chapter's sweeps.

A sweep over learning rates, init scales or seeds trains many tiny networks; one at a time,
Python's overhead per step dominates. :class:`BatchedMLP` holds K independent MLPs whose
weights are stacked along a leading model axis, ``W_l: (K, fan_in, fan_out)``, so that one
batched matrix product runs all K: for inputs ``x: (K, N, d)`` block l computes

.. math:: z^{(l)}_k = h^{(l-1)}_k W^{(l)}_k + b^{(l)}_k,\qquad
          h^{(l)}_k = \mathrm{drop}\big(\mathrm{ReLU}(\mathrm{BN}(z^{(l)}_k))\big).

**Batch norm** is the book's :func:`bncore.norm.torch_bn.batch_norm`: the K models' units are
laid side by side as K·W channels of one ``(N, K·W)`` input, and BN normalizes each channel
over the batch, so every model is normalized by its own statistics.

**Ghost batches** (Hoffer et al. 2017): with ``ghost = g`` the batch of N is split into N/g
groups and each group is normalized by its own statistics, the groups laid side by side as
channels once more, ``(g, K·(N/g)·W)``, with γ and β shared across groups. A smaller g means
noisier statistics; ``g = N`` is ordinary BN.

**Inference statistics** are the population statistics of Ioffe & Szegedy (2015, Alg. 2):
:meth:`BatchedMLP.calibrate` passes a large set of training inputs through the network with
batch statistics (no ghost groups) and stores each layer's mean and unbiased variance; eval mode
normalizes with them. Calibrating with dropout on gives what running averages collected during
training estimate; with dropout off, the recalibrated statistics of Li et al. (2019).

**Dropout** with keep probability p_k per model: h·m/p_k with m ~ Bernoulli(p_k), after the
activation of the blocks listed in ``dropout_after`` (training mode only).

:func:`train_batched` runs plain SGD with a learning rate and a weight decay per model,
``θ ← θ − η_k(∇θ + λ_k θ)``, each model on its own shuffled batches, and records the test
accuracy over training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.data import Dataset
from bncore.experiments.runtime import default_device, progress
from bncore.norm.torch_bn import batch_norm

__all__ = ["BatchedHistory", "BatchedMLP", "batched_accuracy", "train_batched"]


PerModel = float | Sequence[float] | np.ndarray | Tensor
"""A hyperparameter given once for all K models or as K values."""


def _per_model(value: PerModel, k: int, name: str) -> Tensor:
    """A ``(K,)`` float tensor from a scalar or K values."""
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(k).clone()
    if t.numel() != k:
        raise ValueError(f"{name} needs 1 or K = {k} values, got {t.numel()}")
    return t


class BatchedMLP(nn.Module):
    """K ReLU MLPs of the same shape, ``depth × (Linear → [BN] → ReLU → [dropout])`` and a head.

    Parameters
    ----------
    k: the number of models K.
    in_dim, width, depth, out_dim: the shape of each model.
    norm: ``"bn"`` (BN before every ReLU) or ``"none"``.
    init_scale: a factor a_k per model (scalar or K values) on He's init: hidden weights
        N(0, 2a_k²/fan_in), head N(0, a_k²/fan_in), biases 0, γ = 1, β = 0.
    keep: the dropout keep probability p_k per model (1: no dropout).
    dropout_after: the blocks whose output is dropped out (e.g. ``range(depth)`` for every
        block, ``[depth - 1]`` for the last only).
    ghost: the ghost batch size g (``None``: the whole batch), dividing the batch size.
    eps: BN's ε.
    seed: seeds the initialization and the dropout masks.
    """

    def __init__(
        self,
        k: int,
        in_dim: int,
        width: int,
        depth: int,
        out_dim: int,
        *,
        norm: str = "bn",
        init_scale: PerModel = 1.0,
        keep: PerModel = 1.0,
        dropout_after: Sequence[int] = (),
        ghost: int | None = None,
        eps: float = 1e-5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if norm not in ("bn", "none"):
            raise ValueError(f"BatchedMLP: norm must be 'bn' or 'none', got {norm!r}")
        if depth < 1 or width < 1 or k < 1:
            raise ValueError(f"BatchedMLP: k, width and depth must be >= 1, got {k}, {width}, "
                             f"{depth}")
        if ghost is not None and ghost < 2:
            raise ValueError(f"BatchedMLP: a ghost batch needs at least 2 samples, got {ghost}")
        self.k, self.width, self.depth, self.norm = k, width, depth, norm
        self.ghost, self.eps = ghost, eps
        self.keep = _per_model(keep, k, "keep")
        if bool(((self.keep <= 0) | (self.keep > 1)).any()):
            raise ValueError("BatchedMLP: keep probabilities must lie in (0, 1]")
        self.dropout_after = frozenset(int(i) for i in dropout_after)
        scale = _per_model(init_scale, k, "init_scale").view(k, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)
        dims = [in_dim] + [width] * depth + [out_dim]
        weights, biases = [], []
        for i, (fan_in, fan_out) in enumerate(pairwise(dims)):
            gain = 1.0 if i == depth else math.sqrt(2.0)
            w = torch.randn(k, fan_in, fan_out, generator=self.generator)
            weights.append(nn.Parameter(w * scale * gain / math.sqrt(fan_in)))
            biases.append(nn.Parameter(torch.zeros(k, 1, fan_out)))
        self.weights, self.biases = nn.ParameterList(weights), nn.ParameterList(biases)
        n_bn = depth if norm == "bn" else 0
        self.gammas = nn.ParameterList([nn.Parameter(torch.ones(k, 1, width))
                                        for _ in range(n_bn)])
        self.betas = nn.ParameterList([nn.Parameter(torch.zeros(k, 1, width))
                                       for _ in range(n_bn)])
        self.population: list[tuple[Tensor, Tensor]] = []
        self.dropout_active = True

    def _bn(self, z: Tensor, layer: int, collect: list[tuple[Tensor, Tensor]] | None) -> Tensor:
        """BN of ``z: (K, N, W)`` per model and unit (ghost groups in training)."""
        k, n, w = z.shape
        gamma, beta = self.gammas[layer], self.betas[layer]
        if not self.training:
            if len(self.population) != self.depth:
                raise RuntimeError("BatchedMLP: call calibrate(x) before evaluating a BN model")
            mean, var = self.population[layer]
            flat = z.permute(1, 0, 2).reshape(n, k * w)
            y = batch_norm(flat, mean.reshape(-1), var.reshape(-1), gamma.reshape(-1),
                           beta.reshape(-1), training=False, eps=self.eps)
            return y.reshape(n, k, w).permute(1, 0, 2)
        if collect is not None:
            collect.append((z.mean(dim=1).detach(), z.var(dim=1).detach()))
        g = n if collect is not None or self.ghost is None else self.ghost
        if n % g:
            raise ValueError(f"BatchedMLP: ghost size {g} does not divide the batch of {n}")
        groups = n // g
        flat = z.reshape(k, groups, g, w).permute(2, 0, 1, 3).reshape(g, k * groups * w)
        y = batch_norm(flat, None, None, gamma.expand(k, groups, w).reshape(-1),
                       beta.expand(k, groups, w).reshape(-1), training=True, eps=self.eps)
        return y.reshape(g, k, groups, w).permute(1, 2, 0, 3).reshape(k, n, w)

    def forward(self, x: Tensor, collect: list[tuple[Tensor, Tensor]] | None = None,
                pre: list[Tensor] | None = None) -> Tensor:
        """Logits ``(K, N, out)`` for inputs ``x: (K, N, d)`` (or ``(N, d)``, shared by all).

        ``collect`` receives each BN layer's batch ``(mean, unbiased var)``, each ``(K, W)``;
        ``pre`` each block's pre-activation (after the norm).
        """
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.k, -1, -1)
        h = x
        for i in range(self.depth):
            z = torch.baddbmm(self.biases[i], h, self.weights[i])
            if self.norm == "bn":
                z = self._bn(z, i, collect)
            if pre is not None:
                pre.append(z)
            h = torch.relu(z)
            if self.training and self.dropout_active and i in self.dropout_after:
                p = self.keep.to(h.device).view(-1, 1, 1)
                u = torch.rand(h.shape, generator=self.generator).to(h.device)
                h = h * (u < p).to(h.dtype) / p
        return torch.baddbmm(self.biases[-1], h, self.weights[-1])

    @torch.no_grad()
    def calibrate(self, x: Tensor, dropout: bool = False) -> None:
        """Store the population statistics of every BN layer on inputs ``x`` (Alg. 2).

        ``dropout=True`` keeps dropout on, as running averages collected in training see it;
        ``False`` gives Li et al.'s recalibrated statistics. A no-op without BN.
        """
        if self.norm != "bn":
            return
        was_training, was_active = self.training, self.dropout_active
        self.train()
        self.dropout_active = dropout
        collect: list[tuple[Tensor, Tensor]] = []
        self(x, collect=collect)
        self.population = collect
        self.train(was_training)
        self.dropout_active = was_active


@torch.no_grad()
def batched_accuracy(model: BatchedMLP, x: Tensor, y: Tensor) -> Tensor:
    """Eval-mode accuracy of each of the K models on ``(x, y)``, a ``(K,)`` tensor.

    Non-finite logits (a diverged model) count as zero logits, i.e. class 0.
    """
    was = model.training
    model.eval()
    logits = model(x).nan_to_num(0.0, 0.0, 0.0)
    model.train(was)
    return (logits.argmax(-1) == y.unsqueeze(0)).float().mean(1).cpu()


@dataclass
class BatchedHistory:
    """What :func:`train_batched` records, model by model (K = last axis).

    ``eval_step (E,)`` and ``test_acc (E, K)``; ``loss (T, K)`` the training batch losses;
    ``diverged (K,)`` models whose loss blew up (their updates stopped there); ``train_acc`` and
    ``final_test_acc (K,)`` at the end; with ``track_norms``, ``weight_sq`` and ``grad_sq``
    ``(T, K, depth)``: ‖W_l‖_F² before step t and ‖∇_W L‖_F² of the loss at step t.
    """

    eval_step: np.ndarray
    test_acc: np.ndarray
    loss: np.ndarray
    diverged: np.ndarray
    train_acc: np.ndarray
    final_test_acc: np.ndarray
    weight_sq: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    grad_sq: np.ndarray = field(default_factory=lambda: np.zeros((0,)))

    @property
    def gap(self) -> np.ndarray:
        """Generalization gap per model: train accuracy − test accuracy."""
        return self.train_acc - self.final_test_acc


def train_batched(
    model: BatchedMLP,
    data: Dataset,
    *,
    steps: int,
    lr: PerModel,
    weight_decay: PerModel = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    eval_every: int = 0,
    calib_size: int = 512,
    calib_dropout: bool = False,
    track_norms: bool = False,
    blowup: float = 1e3,
    desc: str | None = None,
) -> BatchedHistory:
    r"""Train the K models of ``model`` by SGD, ``θ ← θ − η_k(∇θ + λ_k θ)``, for ``steps``.

    Each model draws its own epochs of shuffled batches (seeded by ``seed``). The test accuracy
    is recorded every ``eval_every`` steps (0: only at the end) after :meth:`BatchedMLP.calibrate`
    on the first ``calib_size`` training inputs (with dropout if ``calib_dropout``); the final
    train accuracy is measured on the whole training set. A model whose batch loss exceeds
    ``blowup`` (or is not finite) stops updating and is marked ``diverged``.
    """
    k = model.k
    if batch_size > data.n_train:
        raise ValueError(f"batch_size {batch_size} exceeds the {data.n_train} training examples")
    device = default_device()
    model.to(device)
    data = data.to(device)
    lr_k = _per_model(lr, k, "lr").to(device).view(k, 1, 1)
    wd_k = _per_model(weight_decay, k, "weight_decay").to(device).view(k, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    calib_x = data.x_train[:calib_size]
    alive = torch.ones(k, dtype=torch.bool, device=device)
    params = list(model.parameters())
    losses, w_sq, g_sq, ev_steps, ev_acc = [], [], [], [], []
    per_epoch = data.n_train // batch_size
    perm = torch.empty(0)

    def evaluate(t: int) -> None:
        model.calibrate(calib_x, dropout=calib_dropout)
        ev_steps.append(t)
        ev_acc.append(batched_accuracy(model, data.x_test, data.y_test).numpy())

    model.train()
    for t in progress(range(steps), desc=desc or "batched SGD", leave=False):
        j = t % per_epoch
        if j == 0:
            perm = torch.argsort(torch.rand(k, data.n_train, generator=gen), dim=1).to(device)
        idx = perm[:, j * batch_size:(j + 1) * batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                               reduction="none").view(k, -1).mean(1)
        alive &= torch.isfinite(loss) & (loss < blowup)
        losses.append(loss.detach().cpu())
        for p in params:
            p.grad = None
        torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
        with torch.no_grad():
            if track_norms:
                w_sq.append(torch.stack([w.square().sum((1, 2)) for w in
                                         model.weights[:-1]], 1).cpu())
                g_sq.append(torch.stack([w.grad.square().sum((1, 2)) for w in
                                         model.weights[:-1]], 1).cpu())
            keep = alive.view(k, 1, 1)
            for p in params:
                assert p.grad is not None
                p.sub_(torch.where(keep, lr_k * (p.grad + wd_k * p), torch.zeros_like(p)))
        if eval_every and (t + 1) % eval_every == 0 and t + 1 < steps:
            evaluate(t + 1)
    evaluate(steps)
    model.calibrate(calib_x, dropout=calib_dropout)
    train_acc = batched_accuracy(model, data.x_train, data.y_train).numpy()
    return BatchedHistory(
        eval_step=np.array(ev_steps), test_acc=np.stack(ev_acc),
        loss=torch.stack(losses).numpy() if losses else np.zeros((0, k)),
        diverged=(~alive).cpu().numpy(), train_acc=train_acc, final_test_acc=ev_acc[-1],
        weight_sq=torch.stack(w_sq).numpy() if w_sq else np.zeros((0, k, model.depth)),
        grad_sq=torch.stack(g_sq).numpy() if g_sq else np.zeros((0, k, model.depth)),
    )

