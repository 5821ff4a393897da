"""Data sets the experiment chapters train on: small, bundled or synthetic, always seeded.

- :func:`digits`: scikit-learn's bundled ``load_digits`` (1797 8×8 grey images of the digits
  0–9, no download), split once into train and test with a fixed, stratified split and
  standardized with the *training* statistics.
- :func:`gaussian_mixture`: one isotropic Gaussian blob per class.
- :func:`teacher`: inputs x ~ N(0, I), labels from the arg-max of a random "teacher" MLP.
- :func:`batches`: shuffled index batches, the whole "data loader" of
  :mod:`bncore.experiments.train`.

All tensors are float32 (inputs) and int64 (labels), created on the CPU; move a data set to the
training device once with :meth:`Dataset.to` and index batches there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from bncore.experiments.nets import MLP

__all__ = ["Dataset", "batches", "digits", "gaussian_mixture", "teacher"]


@dataclass
class Dataset:
    """A train/test split: ``x_*: (N, *input_shape)`` float32, ``y_*: (N,)`` int64 labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with all four tensors on ``device``."""
        return Dataset(*(t.to(device) for t in (self.x_train, self.y_train,
                                                 self.x_test, self.y_test)))

    @property
    def in_dim(self) -> int:
        """Number of input features of one example (64 for digits, image or not)."""
        return int(self.x_train[0].numel())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(64,)`` or ``(1, 8, 8)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """1 + the largest label in either split."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.y_train.shape[0])


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _tensors(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> Dataset:
    return Dataset(
        torch.as_tensor(xtr, dtype=torch.float32),
        torch.as_tensor(ytr, dtype=torch.int64),
        torch.as_tensor(xte, dtype=torch.float32),
        torch.as_tensor(yte, dtype=torch.int64),
    )


def digits(test_fraction: float = 0.25, seed: int = 0, image: bool = False) -> Dataset:
    """scikit-learn's 8×8 digits, split with a fixed stratified split and standardized.

    Standardization uses the training split only: for ``image=False`` each of the 64 pixels is
    mapped to (x − mean)/std (pixels that are constant on the training split, std = 0, are only
    centred); for ``image=True`` one mean and one std over all pixels are used, so that the
    images keep their spatial contrast, and the shape is ``(N, 1, 8, 8)``; otherwise ``(N, 64)``.
    With the default ``test_fraction=0.25``: 1347 training and 450 test images.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if image:
        mean, std = xtr.mean(), xtr.std()
        xtr, xte = ((a - mean) / std for a in (xtr, xte))
        xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    else:
        mean, std = xtr.mean(axis=0), xtr.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        xtr, xte = ((a - mean) / std for a in (xtr, xte))
    return _tensors(xtr, ytr, xte, yte)


def gaussian_mixture(
    n_train: int,
    n_test: int,
    dim: int,
    num_classes: int,
    seed: int = 0,
    separation: float = 3.0,
) -> Dataset:
    """One Gaussian blob per class: x = μ_y + ε, ε ~ N(0, I_dim), y uniform over the classes.

    The class means μ_c are drawn once as ``separation`` times random unit vectors, so two
    means are about separation·√2 apart for large ``dim``. Deterministic given ``seed``.
    """
    _check_positive(n_train=n_train, n_test=n_test, dim=dim, num_classes=num_classes)
    if separation < 0:
        raise ValueError(f"separation must be >= 0, got {separation}")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((num_classes, dim))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=n)
        return means[y] + rng.standard_normal((n, dim)), y

    (xtr, ytr), (xte, yte) = sample(n_train), sample(n_test)
    return _tensors(xtr, ytr, xte, yte)


def teacher(
    n_train: int,
    n_test: int,
    dim: int,
    num_classes: int,
    seed: int = 0,
    width: int = 32,
    depth: int = 2,
    activation: str = "tanh",
) -> Dataset:
    """Inputs x ~ N(0, I_dim); labels y = argmax f(x) of a random teacher MLP.

    The teacher is ``depth`` blocks of Linear(width) → activation with weights
    W ~ N(0, gain²/fan_in) (gain √2 for ReLU, 5/3 for tanh, 1 otherwise; no biases, no
    normalization) and a Linear head to ``num_classes`` logits. The task is realizable by a
    student of the same shape. Deterministic given ``seed``; classes need not be balanced.
    """
    _check_positive(n_train=n_train, n_test=n_test, dim=dim, num_classes=num_classes,
                    width=width)
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, dim, generator=gen)
    net = MLP(dim, width, depth, num_classes, norm="none", activation=activation, bias=False)
    with torch.no_grad():
        for lin in [b.linear for b in net.blocks] + [net.head]:
            fan_in = lin.weight.shape[1]
            gain = {"relu": 2.0**0.5, "tanh": 5.0 / 3.0}.get(activation, 1.0)
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * gain / fan_in**0.5)
        y = net(x).argmax(dim=1)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """One epoch of shuffled index batches ``(batch_size,)`` over ``range(n)``; the last
    incomplete batch is dropped (BN needs full batches). Indices are int64 on the CPU.
    """
    _check_positive(n=n, batch_size=batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the number of examples {n}")
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield perm[start:start + batch_size]
