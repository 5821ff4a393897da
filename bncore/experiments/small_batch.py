r"""Small batches: error against the batch per device for BN and its alternatives (Wu & He 2018).

The model is a one-hidden-layer MLP on digits (``64 → width → norm → ReLU → 10``) trained
with SGD for a fixed number of epochs, the learning rate scaled linearly with the SGD batch
(lr = ``lr_per_example``·batch; Goyal et al. 2017, as Wu & He do), so that every batch size
sees the same data for the same total step length. The norms, by the number m of examples each
batch statistic is taken over (the "batch per device"):

===========  ==================================================  ===============
norm         what m is                                           SGD batch
===========  ==================================================  ===============
``bn``       the batch (:class:`~bncore.BatchNorm1d`)            m
``brn``      the batch (:class:`~bncore.BatchRenorm1d`)          m
``ghost``    a ghost batch (:class:`~bncore.GhostBatchNorm1d`)   ``ghost_batch``
``gn``       (no batch statistic)                                m
``ln``       (no batch statistic)                                m
===========  ==================================================  ===============

Ghost BN is Wu & He's multi-device setting: a large SGD batch split into normalization sets of m
(one per "device"), so it separates the noise of the statistics from the noise of the gradient.
BN-type layers average their running statistics over the same number of examples at every m
(momentum α = ``momentum_per_example``·m, a window of 1/``momentum_per_example`` examples).
Batch renorm follows Ioffe (2017, §4): plain BN (r_max = 1, d_max = 0) for the first part of
training, then r_max and d_max ramped linearly to 3 and 5 (:func:`renorm_limits`).

Why an MLP: a conv channel's statistics are over m·H·W values, so on 8×8 digits a CNN barely
notices m = 2; the MLP's per-feature statistics are over m values, the setting of the theory.
:func:`class_batches` draws non-i.i.d. batches (few classes per batch, Ioffe 2017, §4.3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bncore.experiments.data import Dataset, batches
from bncore.norm.batch_renorm import BatchRenorm1d
from bncore.norm.ghost_bn import GhostBatchNorm1d
from bncore.norm.group_norm import GroupNorm
from bncore.norm.layer_norm import LayerNorm
from bncore.norm.torch_bn import BatchNorm1d

__all__ = [
    "NORMS",
    "SmallBatchRun",
    "class_batches",
    "feature_values",
    "norm_layer",
    "renorm_limits",
    "small_batch_mlp",
    "train_small_batch",
]

#: The norms compared, in the order of the figure's legend.
NORMS = ("bn", "brn", "ghost", "gn", "ln")


def norm_layer(kind: str, width: int, m: int, momentum: float, groups: int = 8) -> nn.Module:
    """The normalization layer ``kind`` ∈ :data:`NORMS` for ``(N, width)`` features."""
    if kind == "bn":
        return BatchNorm1d(width, momentum=momentum)
    if kind == "brn":
        return BatchRenorm1d(width, momentum=momentum)
    if kind == "ghost":
        return GhostBatchNorm1d(width, virtual_batch_size=m, momentum=momentum)
    if kind == "gn":
        return GroupNorm(groups, width)
    if kind == "ln":
        return LayerNorm(width)
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def small_batch_mlp(kind: str, m: int, in_dim: int, width: int, out_dim: int,
                    momentum: float) -> nn.Sequential:
    """``Linear(in_dim, width) → norm → ReLU → Linear(width, out_dim)``, Kaiming init."""
    first = nn.Linear(in_dim, width)
    nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
    nn.init.zeros_(first.bias)
    return nn.Sequential(first, norm_layer(kind, width, m, momentum), nn.ReLU(),
                         nn.Linear(width, out_dim))


def renorm_limits(progress: float, plain: float = 0.1, relaxed: float = 0.5,
                  r_final: float = 3.0, d_final: float = 5.0) -> tuple[float, float]:
    """(r_max, d_max) at ``progress`` ∈ [0, 1] of training (Ioffe 2017, §4's schedule, rescaled).

    1 and 0 (plain BN) until ``plain``, then linear to ``r_final`` and ``d_final`` at ``relaxed``.
    """
    t = min(max((progress - plain) / (relaxed - plain), 0.0), 1.0)
    return 1.0 + t * (r_final - 1.0), t * d_final


def class_batches(labels: Tensor, classes: int, per_class: int,
                  generator: torch.Generator) -> Iterator[Tensor]:
    """One epoch of non-i.i.d. batches: each holds ``per_class`` examples of ``classes`` labels.

    The examples of each label are shuffled and cut into chunks of ``per_class``; a batch joins
    ``classes`` chunks of different labels, chosen at random. Incomplete chunks are dropped.
    """
    chunks: list[tuple[int, Tensor]] = []
    for label in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == label).ravel()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        chunks += [(label, idx[i:i + per_class])
                   for i in range(0, len(idx) - per_class + 1, per_class)]
    order = torch.randperm(len(chunks), generator=generator).tolist()
    pending: list[tuple[int, Tensor]] = []
    for i in order:
        label, _ = chunks[i]
        if any(seen == label for seen, _ in pending):  # a repeated label: start a new batch
            pending = []
        pending.append(chunks[i])
        if len(pending) == classes:
            yield torch.cat([c for _, c in pending])
            pending = []


@dataclass
class SmallBatchRun:
    """Test error (eval mode) and final training loss of one run."""

    test_error: float
    train_loss: float


def train_small_batch(
    norm: str, m: int, data: Dataset, *, seed: int, epochs: int = 3, width: int = 64,
    lr_per_example: float = 0.01, ghost_batch: int = 64, momentum_per_example: float = 1 / 640,
    non_iid: tuple[int, int] | None = None,
) -> SmallBatchRun:
    """Train the MLP with ``norm`` at batch per device ``m``; return its test error.

    ``non_iid=(classes, per_class)`` draws batches by :func:`class_batches` instead (then the
    SGD batch is classes·per_class, and ``m`` is ignored except by ghost BN).
    """
    torch.manual_seed(seed)
    batch = classes_batch = ghost_batch if norm == "ghost" else m
    if non_iid is not None:
        classes_batch = batch = non_iid[0] * non_iid[1]
    momentum = min(1.0, momentum_per_example * (m if norm == "ghost" else batch))
    model = small_batch_mlp(norm, m, data.in_dim, width, data.num_classes, momentum)
    opt = torch.optim.SGD(model.parameters(), lr=lr_per_example * classes_batch)
    gen = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    steps_per_epoch = n // batch
    total, step, loss = epochs * steps_per_epoch, 0, torch.tensor(float("nan"))
    renorm = model[1] if isinstance(model[1], BatchRenorm1d) else None
    model.train()
    for _ in range(epochs):
        epoch = (class_batches(data.y_train, *non_iid, gen) if non_iid is not None
                 else batches(n, batch, gen))
        for idx in epoch:
            if renorm is not None:
                renorm.r_max, renorm.d_max = renorm_limits(step / total)
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    with torch.no_grad():
        wrong = (model(data.x_test).argmax(1) != data.y_test).float().mean()
    return SmallBatchRun(float(wrong), float(loss.detach()))


def feature_values(
    norm: str, m: int, data: Dataset, *, seed: int = 0, width: int = 16, batches_seen: int = 256,
) -> tuple[Tensor, Tensor]:
    """What the next layer sees of one feature, in training and in eval: (train, eval) values.

    A fresh ``Linear(64, width) → norm`` on digits, fed ``batches_seen`` batches of ``m`` in
    training mode (batch renorm with r_max = 3, d_max = 5 after the first half, when its
    running statistics have settled); the train values are feature 0's normalized outputs over
    the second half, the eval values the same examples through the eval-mode layer.
    """
    torch.manual_seed(seed)
    layer = nn.Sequential(nn.Linear(data.in_dim, width),
                          norm_layer(norm, width, m, 0.05, groups=4))
    gen = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    idx = torch.cat([torch.randperm(n, generator=gen)[:m] for _ in range(batches_seen)])
    train_vals = []
    with torch.no_grad():
        for t, chunk in enumerate(idx.split(m)):
            if isinstance(layer[1], BatchRenorm1d) and t == batches_seen // 2:
                layer[1].r_max, layer[1].d_max = 3.0, 5.0
            out = layer(data.x_train[chunk])[:, 0]
            if t >= batches_seen // 2:
                train_vals.append(out)
        layer.eval()
        eval_vals = layer(data.x_train[idx[len(idx) // 2:]])[:, 0]
    return torch.cat(train_vals), eval_vals
