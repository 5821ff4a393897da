r"""Simulations for the chapter on training versus inference.

- :func:`running_trace` feeds a stream of batches to a batch-norm layer (NumPy or torch) and
  records its running estimates after every batch.
- :func:`ema_chains` runs many independent running averages at once, to measure their noise.
- :func:`simulate_batch_variance` estimates E[σ_B²] by Monte Carlo, the quantity behind the
  m/(m−1) in Ioffe & Szegedy (2015), Alg. 2.
- :func:`textbook_running_stats` and :func:`normalize` implement the conventions other texts
  use (which value "momentum" weights, biased or unbiased running variance, where ε goes), so
  that the chapter can measure how far each one lands from PyTorch's.
- :func:`train_eval_gap` measures how much a trained network's outputs differ between training
  mode (batch statistics) and eval mode (running estimates), as a function of batch size.

The closed forms these are compared with live in :mod:`bncore.theory`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bncore.norm import stats
from bncore.norm.fold import is_bn

__all__ = [
    "BatchVarianceSim",
    "GapResult",
    "ema_chains",
    "loglog_slope",
    "normalize",
    "recalibrate_bn",
    "running_trace",
    "simulate_batch_variance",
    "textbook_running_stats",
    "train_eval_gap",
]


def _to_numpy(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        return v.detach().cpu().numpy().copy()
    return np.array(v, copy=True)


def running_trace(bn: Any, batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``batches`` to ``bn`` in training mode; return its running estimates after each.

    Parameters
    ----------
    bn: a :class:`bncore.norm.numpy_bn.BatchNorm`, or a ``BatchNorm*`` module of
        :mod:`bncore.norm.torch_bn` or ``torch.nn``, with ``track_running_stats=True``.
        It is put in training mode and its running estimates are updated in place.
    batches: arrays of shape ``(N, C, *spatial)``; NumPy arrays are converted to tensors of
        the module's dtype for torch modules.

    Returns
    -------
    ``(running_mean, running_var)``, each of shape ``(T, C)`` for T batches.
    """
    if getattr(bn, "running_mean", None) is None:
        raise ValueError("running_trace needs a batch norm with track_running_stats=True")
    bn.train()
    means, variances = [], []
    is_torch = isinstance(bn, nn.Module)
    for x in batches:
        if is_torch:
            xt = torch.as_tensor(x, dtype=bn.running_mean.dtype, device=bn.running_mean.device)
            with torch.no_grad():
                bn(xt)
        else:
            bn.forward(np.asarray(x))
        means.append(_to_numpy(bn.running_mean))
        variances.append(_to_numpy(bn.running_var))
    if not means:
        raise ValueError("batches is empty")
    return np.stack(means), np.stack(variances)


def ema_chains(
    batch_values: np.ndarray, momentum: float | None, init: float | np.ndarray = 0.0
) -> np.ndarray:
    """Run the running-average rule over ``batch_values: (T, K)``, K independent chains at once.

    Step t (1-based) applies running ← (1 − τ_t)·running + τ_t·value_t with τ_t = ``momentum``
    or 1/t when ``momentum is None`` (:func:`bncore.norm.stats.momentum_factor`,
    :func:`bncore.norm.stats.running_update`, the rules of every BN layer in this book), starting
    from ``init``. Returns the ``(T, K)`` trajectory.
    """
    values = np.asarray(batch_values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"batch_values must have shape (T, K), got {values.shape}")
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
    running = np.broadcast_to(np.asarray(init, dtype=np.float64), values.shape[1:]).copy()
    out = np.empty_like(values)
    for t, v in enumerate(values, start=1):
        running = stats.running_update(running, v, stats.momentum_factor(momentum, t))
        out[t - 1] = running
    return out


@dataclass
class BatchVarianceSim:
    """Monte Carlo estimate of E[σ_B²] for batches of size m.

    ``ms``: the batch sizes; ``mean``: the average biased batch variance σ_B² over
    ``n_batches`` batches for each m; ``sem``: its standard error (sample std/√n_batches);
    ``population_var``: the variance of the distribution the values were drawn from.
    """

    ms: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    n_batches: int
    population_var: float


def simulate_batch_variance(
    ms: Sequence[int],
    n_batches: int,
    rng: np.random.Generator,
    distribution: Literal["normal", "exponential", "uniform"] = "normal",
) -> BatchVarianceSim:
    r"""Average the biased batch variance σ_B² = (1/m)Σ(x_i − μ_B)² over many i.i.d. batches.

    Theory (any distribution with finite variance σ²): E[σ_B²] = (m − 1)/m·σ², which is why
    Ioffe & Szegedy (2015, Alg. 2) rescale by m/(m − 1) for the inference variance. The values
    are drawn from a standard normal (σ² = 1), an exponential of rate 1 (σ² = 1, skewed) or a
    uniform on [0, 1) (σ² = 1/12).
    """
    if n_batches < 2:
        raise ValueError(f"n_batches must be >= 2 for a standard error, got {n_batches}")
    ms_arr = np.asarray(ms, dtype=int)
    if ms_arr.ndim != 1 or (ms_arr < 2).any():
        raise ValueError(f"every batch size m must be >= 2, got {list(ms)}")
    draws = {
        "normal": (lambda size: rng.standard_normal(size), 1.0),
        "exponential": (lambda size: rng.exponential(1.0, size), 1.0),
        "uniform": (lambda size: rng.random(size), 1.0 / 12.0),
    }
    if distribution not in draws:
        raise ValueError(f"distribution must be one of {sorted(draws)}, got {distribution!r}")
    draw, pop_var = draws[distribution]
    mean, sem = np.empty(len(ms_arr)), np.empty(len(ms_arr))
    for i, m in enumerate(ms_arr):
        x = np.asarray(draw((n_batches, int(m))))  # (K, m): K batches of m values of a channel
        mu = x.mean(axis=1, keepdims=True)
        var = np.square(x - mu).mean(axis=1)  # (K,) biased σ_B² of each batch, two-pass
        mean[i] = var.mean()
        sem[i] = var.std(ddof=1) / np.sqrt(n_batches)
    return BatchVarianceSim(ms_arr, mean, sem, n_batches, pop_var)


def textbook_running_stats(
    batches: Iterable[np.ndarray],
    momentum: float,
    *,
    momentum_weights: Literal["new", "old"] = "new",
    variance: Literal["unbiased", "biased"] = "unbiased",
    init_mean: float = 0.0,
    init_var: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Running estimates under a chosen convention; returns ``(mean, var)`` traces ``(T, C)``.

    ``momentum_weights="new"``: running ← (1 − momentum)·running + momentum·batch (PyTorch,
    Keras's ``1 − momentum``); ``"old"``: running ← momentum·running + (1 − momentum)·batch
    (the convention of the cs231n assignment and d2l's Chinese edition, with momentum = 0.9).
    ``variance="unbiased"`` stores m/(m − 1)·σ_B² (Ioffe & Szegedy 2015, Alg. 2; PyTorch);
    ``"biased"`` stores σ_B². ``init_var`` is the initial running variance (PyTorch: 1; the
    cs231n scaffold: 0).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if momentum_weights not in ("new", "old"):
        raise ValueError(f"momentum_weights must be 'new' or 'old', got {momentum_weights!r}")
    if variance not in ("unbiased", "biased"):
        raise ValueError(f"variance must be 'unbiased' or 'biased', got {variance!r}")
    factor = momentum if momentum_weights == "new" else 1.0 - momentum  # weight of the batch
    rm: np.ndarray | None = None
    rv: np.ndarray | None = None
    means: list[np.ndarray] = []
    variances: list[np.ndarray] = []
    for x in batches:
        mu, var = stats.mean_var(np.asarray(x, dtype=np.float64))
        if variance == "unbiased":
            var = var * stats.bessel(stats.count_per_channel(np.shape(x)))
        if rm is None or rv is None:
            rm, rv = np.full_like(mu, init_mean), np.full_like(var, init_var)
        rm = stats.running_update(rm, mu, factor)
        rv = stats.running_update(rv, var, factor)
        means.append(rm)
        variances.append(rv)
    if not means:
        raise ValueError("batches is empty")
    return np.stack(means), np.stack(variances)


def normalize(
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    eps_placement: Literal["inside", "std"] = "inside",
) -> np.ndarray:
    """x̂ = (x − μ)/√(σ² + ε) (``"inside"``, Ioffe & Szegedy 2015, Alg. 1; PyTorch) or
    (x − μ)/(√σ² + ε) (``"std"``, ε added to the standard deviation). ``x: (N, C)``.
    """
    if eps_placement == "inside":
        return (x - mean) / np.sqrt(var + eps)
    if eps_placement == "std":
        return (x - mean) / (np.sqrt(var) + eps)
    raise ValueError(f"eps_placement must be 'inside' or 'std', got {eps_placement!r}")


@dataclass
class GapResult:
    """Train-mode versus eval-mode outputs of one model, per batch size.

    ``gap[i]``: root-mean-square difference of the logits, over examples and classes, between
    training mode (each example normalized with the statistics of its batch of size
    ``batch_sizes[i]``) and eval mode (running estimates). ``acc_train[i]``: accuracy in
    training mode at that batch size; ``acc_eval``: accuracy in eval mode (batch-independent).
    """

    batch_sizes: np.ndarray
    gap: np.ndarray
    acc_train: np.ndarray
    acc_eval: float


def train_eval_gap(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_sizes: Sequence[int],
    *,
    batches_per_size: int = 64,
    seed: int = 0,
) -> GapResult:
    """Compare training-mode and eval-mode outputs of ``model`` on ``(x, y)`` per batch size.

    For each B, ``batches_per_size`` batches of B distinct examples are drawn at random (a
    ``torch.Generator`` seeded with ``seed``) and each goes through the model in training mode
    under ``no_grad``; its outputs are compared with the eval-mode outputs of the same examples.
    The model's state (running estimates, ``num_batches_tracked``) is restored afterwards, so the
    measurement does not change the model; it is left in eval mode.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y disagree on the number of examples: {x.shape[0]} vs {y.shape[0]}"
        )
    if batches_per_size < 1:
        raise ValueError(f"batches_per_size must be >= 1, got {batches_per_size}")
    n = x.shape[0]
    bad = [b for b in batch_sizes if not 2 <= b <= n]
    if bad:
        raise ValueError(f"batch sizes must be in [2, {n}] (BN needs >= 2 values), got {bad}")
    state = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    try:
        model.eval()
        with torch.no_grad():
            ref = model(x)
            acc_eval = float((ref.argmax(1) == y).float().mean())
            gaps, accs = [], []
            model.train()
            for b in batch_sizes:
                sq, correct = 0.0, 0
                for _ in range(batches_per_size):
                    idx = torch.randperm(n, generator=gen)[:b].to(x.device)
                    out = model(x[idx])
                    sq += float((out - ref[idx]).square().sum())
                    correct += int((out.argmax(1) == y[idx]).sum())
                count = b * batches_per_size
                gaps.append(np.sqrt(sq / (count * ref.shape[1])))
                accs.append(correct / count)
    finally:
        model.load_state_dict(state)
        model.eval()
    return GapResult(np.asarray(batch_sizes), np.asarray(gaps), np.asarray(accs), acc_eval)


def recalibrate_bn(model: nn.Module, x: Tensor, batch_size: int, *, seed: int = 0) -> int:
    """Replace every BN's running estimates by Ioffe & Szegedy's population statistics (Alg. 2).

    Alg. 2, steps 9–10: with the trained network frozen, process training mini-batches of size
    m = ``batch_size`` (one shuffled pass over ``x``, last incomplete batch dropped) in training
    mode and set E[x] ← E_B[μ_B], Var[x] ← m/(m − 1)·E_B[σ_B²]. This is exactly what a BN layer
    computes with ``momentum=None`` (the cumulative average over ``num_batches_tracked``), so the
    running estimates are reset, each BN's momentum is set to ``None`` for the pass and restored
    afterwards. Parameters are not changed; the model is left in eval mode. Returns the number of
    batches averaged.
    """
    bns = [m for m in model.modules() if is_bn(m) and m.running_mean is not None]
    if not bns:
        raise ValueError("recalibrate_bn: the model has no BN layer with running statistics")
    n = x.shape[0]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [2, {n}], got {batch_size}")
    momenta = [m.momentum for m in bns]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).to(x.device)
    count = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for start in range(0, n - batch_size + 1, batch_size):
                model(x[perm[start:start + batch_size]])
                count += 1
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.eval()
    return count


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (the exponent p of y ∝ x^p)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.shape != ly.shape or lx.size < 2:
        raise ValueError("loglog_slope needs x and y of the same length >= 2")
    return float(np.polyfit(lx, ly, 1)[0])
