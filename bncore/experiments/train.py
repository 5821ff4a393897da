"""A small, lean training loop with probes: the one every experiment chapter uses.

:func:`train` minimizes the cross-entropy with SGD (or Adam) on index batches of a
:class:`~bncore.experiments.data.Dataset` that already lives on the device (no ``DataLoader``). It
records the loss and accuracy of every training batch, evaluates on the test split every
``eval_every`` steps, and calls user *probes* every ``probe_every`` steps. A run is deterministic
given ``seed`` (the batch order comes from a generator seeded with it; the model's initialization is
the caller's, e.g. after :func:`bncore.experiments.runtime.seed_everything`).

Order within step t: forward on batch t, backward, **probes** (they see the weights, batch and
noise of step t; :func:`bncore.experiments.nets.probe_mode` keeps them free of side effects),
optimizer step. A probe is ``probe(model, xb, yb, step) -> value``; the values are stored in
``History.probes[name]``, and the steps at which probes ran in ``History.probe_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.data import Dataset, batches
from bncore.experiments.nets import MLP
from bncore.experiments.resnets import ResNet
from bncore.experiments.runtime import default_device
from bncore.experiments.runtime import progress as progress_bar

__all__ = [
    "History",
    "Probe",
    "Run",
    "evaluate",
    "least_squares_loss",
    "linear_readout",
    "loss_fn",
    "make_optimizer",
    "train",
    "train_mlp",
    "train_resnet",
]

Probe = Callable[[nn.Module, Tensor, Tensor, int], Any]

loss_fn = F.cross_entropy  # the loss every chapter trains with (mean over the batch)


def least_squares_loss(output: Tensor, target: Tensor) -> Tensor:
    """L = ½ Σᵢ (outputᵢ₀ − targetᵢ)² for a one-output model: its Hessian in a linear model's
    weights is XᵀX, with no factor 2 and no 1/m.
    """
    return 0.5 * (output[:, 0] - target).square().sum()


def linear_readout(readout: Tensor) -> Callable[[Tensor], Tensor]:
    """The loss ℓ(z) = ⟨z, V⟩ = Σ z ⊙ V, whose gradient is the readout V (Hessian zero)."""

    def loss(z: Tensor) -> Tensor:
        return (z * readout).sum()

    return loss


@dataclass
class History:
    """What one training run recorded.

    ``step``/``loss``/``acc``: every training step (the loss and accuracy of that step's batch,
    before its update). ``eval_step``/``test_loss``/``test_acc``: every ``eval_every`` steps and
    after the last step, in eval mode. ``probe_step``/``probes[name]``: every ``probe_every``
    steps. ``diverged``: the loss became NaN/Inf or exceeded the blow-up threshold, and training
    stopped there.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    probe_step: list[int] = field(default_factory=list)
    probes: dict[str, list[Any]] = field(default_factory=dict)
    diverged: bool = False

    @property
    def final_test_acc(self) -> float:
        """The last test accuracy (NaN if never evaluated)."""
        return self.test_acc[-1] if self.test_acc else math.nan

    @property
    def final_test_loss(self) -> float:
        """The last test loss (NaN if never evaluated)."""
        return self.test_loss[-1] if self.test_loss else math.nan


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` in eval mode.

    The model's training/eval mode is restored afterwards. Batches of ``batch_size`` keep the
    memory bounded; in eval mode BN uses running statistics, so batching does not change the
    result.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"evaluate: x and y need the same, non-zero length; got "
                         f"{x.shape[0]} and {y.shape[0]}")
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        total_loss += float(loss_fn(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    model.train(was_training)
    return total_loss / x.shape[0], correct / x.shape[0]


def make_optimizer(
    model: nn.Module, optimizer: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``"sgd"`` (with optional heavy-ball ``momentum``) or ``"adam"``."""
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose 'sgd' or 'adam'")


def train(
    model: nn.Module,
    data: Dataset,
    *,
    steps: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    eval_every: int = 50,
    probes: dict[str, Probe] | None = None,
    probe_every: int = 10,
    device: torch.device | str | None = None,
    progress: bool = True,
    blowup: float = 1e3,
    desc: str | None = None,
) -> History:
    """Train ``model`` in place on ``data`` for ``steps`` SGD steps; return its :class:`History`.

    Parameters
    ----------
    steps, lr, batch_size, optimizer, momentum, weight_decay: the optimization. Batches are
        drawn epoch by epoch without replacement (last incomplete batch dropped).
    seed: seeds the batch order; two runs of the same freshly built model with the same seed
        give identical histories.
    eval_every: evaluate on the test split every that many steps (and after the last step);
        0 evaluates only at the end.
    probes, probe_every: ``{name: probe(model, xb, yb, step)}`` called at steps 0,
        probe_every, 2·probe_every, … after the backward pass and before the update.
    device: where to train; default :func:`bncore.experiments.runtime.default_device`. The model and
    the data are moved there. progress: show a ``tqdm.auto`` bar (also off when ``TQDM_DISABLE`` is
    set). blowup: stop and mark ``diverged`` when the batch loss exceeds this (or is NaN/Inf). desc:
    label of the progress bar.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size > data.n_train:
        raise ValueError(f"batch_size {batch_size} exceeds the {data.n_train} training examples")
    if probe_every < 1:
        raise ValueError(f"probe_every must be >= 1, got {probe_every}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    data = data.to(device)
    model.train()
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    probes = dict(probes or {})
    hist = History(probes={name: [] for name in probes})

    def stream():
        while True:
            yield from batches(data.n_train, batch_size, gen)

    def record_eval(t: int) -> None:
        loss, acc = evaluate(model, data.x_test, data.y_test)
        hist.eval_step.append(t)
        hist.test_loss.append(loss)
        hist.test_acc.append(acc)

    batch_iter = stream()
    bar = progress_bar(range(steps), desc=desc, enabled=progress, leave=False)
    for t in bar:
        idx = next(batch_iter).to(device)
        xb, yb = data.x_train[idx], data.y_train[idx]
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss_value = float(loss.detach())
        hist.step.append(t)
        hist.loss.append(loss_value)
        hist.acc.append(float((logits.detach().argmax(dim=1) == yb).float().mean()))
        if not math.isfinite(loss_value) or loss_value > blowup:
            hist.diverged = True
            break
        loss.backward()
        if probes and t % probe_every == 0:
            hist.probe_step.append(t)
            for name, probe in probes.items():
                hist.probes[name].append(probe(model, xb, yb, t))
        opt.step()
        if eval_every and (t + 1) % eval_every == 0 and t + 1 < steps:
            record_eval(t + 1)
    bar.close()
    if not hist.diverged:
        record_eval(len(hist.step))
    return hist


@dataclass
class Run:
    """A trained model and the :class:`History` of its training."""

    model: nn.Module
    history: History


def train_mlp(
    data: Dataset,
    *,
    seed: int,
    norm: str,
    width: int,
    depth: int,
    activation: str = "relu",
    init: str = "kaiming",
    noise: dict[str, Any] | None = None,
    **train_kwargs: Any,
) -> Run:
    """Build an :class:`~bncore.experiments.nets.MLP` for ``data`` and :func:`train` it.

    The initialization uses the global RNG as it stands (seed it first, e.g. by running under
    :func:`bncore.experiments.grid.run_grid`); ``seed`` seeds the batch order and, for
    ``norm="noisy_bn"``, the noise (``noise`` holds the other noise arguments). The remaining
    keyword arguments go to :func:`train`.
    """
    model = MLP(data.in_dim, width, depth, data.num_classes, norm=norm, activation=activation,
                init=init, noise=None if noise is None else {**noise, "seed": seed})
    train_kwargs.setdefault("desc", f"{norm}, seed {seed}")
    return Run(model, train(model, data, seed=seed, **train_kwargs))


def train_resnet(
    data: Dataset, *, seed: int, variant: str, width: int, depth: int, **train_kwargs: Any
) -> Run:
    """Build a :class:`~bncore.experiments.resnets.ResNet` of ``variant`` for ``data`` and
    :func:`train` it; as :func:`train_mlp`, the initialization uses the global RNG as it stands
    and ``seed`` seeds the batch order.
    """
    model = ResNet(data.in_dim, width, depth, data.num_classes, variant)
    train_kwargs.setdefault("desc", f"{variant}, η = {train_kwargs.get('lr')}")
    return Run(model, train(model, data, seed=seed, **train_kwargs))
