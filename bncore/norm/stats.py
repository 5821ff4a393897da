r"""Per-channel statistics and the running-average rules of batch norm, in one place.

Layout is ``x: (N, C, *spatial)``. Statistics are taken per channel ``c`` over the
``m = N·∏spatial`` values ``x[:, c, ...]`` (Ioffe & Szegedy 2015, §3.2 for convolutions).

The running-statistics rules are PyTorch's, which the book's code matches exactly:

.. math::

    \hat\mu \leftarrow (1-\alpha)\,\hat\mu + \alpha\,\mu_B, \qquad
    \hat\sigma^2 \leftarrow (1-\alpha)\,\hat\sigma^2 + \alpha\,\tfrac{m}{m-1}\,\sigma_B^2,

with ``τ = momentum``, or ``τ = 1/t`` after ``t`` batches when ``momentum is None`` (a cumulative
average). Note the *unbiased* variance in the running estimate (Ioffe & Szegedy 2015, Alg. 2)
while the transform itself uses the biased σ_B².

The functions here that only do arithmetic (:func:`running_update`, :func:`momentum_factor`,
:func:`bessel`) work on NumPy arrays and torch tensors alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = [
    "bessel",
    "chan_merge",
    "count_per_channel",
    "mean_var",
    "momentum_factor",
    "naive_mean_var",
    "reduce_axes",
    "running_update",
    "welford_mean_var",
]

T = TypeVar("T")


def reduce_axes(ndim: int) -> tuple[int, ...]:
    """Axes that batch norm reduces over for an ``ndim``-dimensional input: all but dim 1."""
    return (0, *range(2, ndim))


def count_per_channel(shape: Sequence[int], axes: Sequence[int] | None = None) -> int:
    """The count m = N·∏spatial, the number of values each channel's statistics are taken over.

    With ``axes``, the number of values in each reduction set: the product of those axes' sizes.
    """
    if axes is None:
        return shape[0] * math.prod(shape[2:])
    return math.prod(shape[a] for a in axes)


def bessel(m: int) -> float:
    """Bessel's correction m/(m−1), which turns the biased batch variance into the unbiased one."""
    return m / (m - 1) if m > 1 else math.inf


def momentum_factor(momentum: float | None, num_batches_tracked: int) -> float:
    """The weight τ of the new batch in the running average.

    ``momentum`` itself, or ``1/t`` for the cumulative average when ``momentum is None``, where
    ``t = num_batches_tracked`` already counts the current batch.
    """
    if momentum is None:
        return 1.0 / num_batches_tracked
    return momentum


def running_update(running: T, batch: T, factor: float) -> T:
    """(1 − τ)·running + τ·batch: the exponential moving average (PyTorch's momentum convention).

    A large τ forgets fast. Some texts write the weight of the *old* value as the momentum
    (d2l's 0.9); this one is the weight of the *new* batch, as in ``torch.nn.BatchNorm``.
    """
    return (1.0 - factor) * running + factor * batch  # type: ignore[operator, return-value]


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    """Accumulate in at least float32 (float16 input keeps float32 statistics)."""
    return np.result_type(dtype, np.float32)


def mean_var(
    x: np.ndarray, axes: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean μ_B and *biased* variance σ_B² = (1/m)Σ(x−μ_B)², by two passes.

    The second pass subtracts the mean before squaring, so the result keeps its accuracy when
    ``|μ| ≫ σ``, where :func:`naive_mean_var` fails. Returns two arrays of shape ``(C,)``; with
    other reduction ``axes`` (batch norm's, all but axis 1, by default), the shape of ``x``
    without them.
    """
    axes = reduce_axes(x.ndim) if axes is None else axes
    xa = x.astype(_acc_dtype(x.dtype), copy=False)
    mean = xa.mean(axis=axes, keepdims=True)
    centred = xa - mean
    var = np.square(centred, out=centred).mean(axis=axes)  # in place: one input-sized temporary
    return mean.squeeze(axis=axes), var


def naive_mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-pass textbook formula σ² = E[x²] − E[x]². Shown for its failure, not for use.

    In floating point the two terms are both ≈ μ² and their difference cancels catastrophically
    when ``|μ| ≫ σ``: in float32 at μ = 1e4, σ = 1 the result can even be negative.
    """
    axes = reduce_axes(x.ndim)
    mean = x.mean(axis=axes)
    mean_sq = np.square(x).mean(axis=axes)
    return mean, mean_sq - np.square(mean)


def welford_mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance by Welford's one-pass update.

    For each new value v (k-th so far): δ = v − μ, μ += δ/k, M₂ += δ·(v − μ); then σ² = M₂/m.
    The loop runs over the m values, vectorized over channels.
    """
    dtype = _acc_dtype(x.dtype)
    values = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).astype(dtype)  # (m, C)
    mean = np.zeros(x.shape[1], dtype=dtype)
    m2 = np.zeros(x.shape[1], dtype=dtype)
    for k, v in enumerate(values, start=1):
        delta = v - mean
        mean = mean + delta / dtype.type(k)
        m2 = m2 + delta * (v - mean)
    return mean, m2 / dtype.type(len(values))


def chan_merge(
    n_a: int, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Merge two partial statistics (count, mean, M₂ = Σ(x−μ)²) by Chan et al.'s parallel rule.

    δ = μ_b − μ_a, n = n_a + n_b, μ = μ_a + δ·n_b/n, M₂ = M₂a + M₂b + δ²·n_a·n_b/n.
    This is how statistics are combined across devices (e.g. ``torch.nn.SyncBatchNorm``).
    """
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + np.square(delta) * (n_a * n_b / n)
    return n, mean, m2


def chunked_mean_var(x: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of (m, C) data from ``n_chunks`` equal row chunks.

    Each chunk's (count, mean, M₂) comes from :func:`mean_var` (two passes); the chunks are then
    merged left to right with :func:`chan_merge` and σ² = M₂/m: the computation of statistics
    spread over devices, on one machine.
    """
    chunks = np.split(np.asarray(x), n_chunks)
    merged: tuple[int, np.ndarray, np.ndarray] | None = None
    for chunk in chunks:
        mean, var = mean_var(chunk)
        part = (len(chunk), mean, var * len(chunk))
        merged = part if merged is None else chan_merge(*merged, *part)
    assert merged is not None  # np.split returns at least one chunk
    n, mean, m2 = merged
    return mean, m2 / n
