r"""Probes of what happens inside a network during training: the internal covariate shift kit.

- Activation statistics over time (Ioffe & Szegedy 2015, §4.1): the 15th/50th/85th percentiles
  of one unit's pre-activation (the input of its sigmoid) on a fixed probe batch,
  :func:`percentile_probe`; per-unit means and standard deviations, :func:`moments_probe`; and
  how much they move between records, :func:`drift`.
- The noise that :class:`~bncore.experiments.nets.NoisyBatchNorm` injects, :func:`noise_probe`.
- Santurkar et al.'s (2018) measure of internal covariate shift (Def. 2.1),
  :func:`ics_measure`: the gradient of layer i's weights before (G) and after (G′) the layers
  before it take their SGD step on the same batch.

Every probe has the signature ``probe(model, xb, yb, step)`` that
:func:`bncore.experiments.train.train` expects, and runs inside
:func:`bncore.experiments.nets.probe_mode`, so it changes neither the running statistics nor the
noise sequence of the training run it observes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.nets import NoisyBatchNorm, layer_groups, layer_weights, probe_mode

__all__ = [
    "Drift",
    "ICSResult",
    "drift",
    "ics_measure",
    "ics_probe",
    "ics_stack",
    "layer_moments",
    "moments_probe",
    "moments_series",
    "noise_drift_theory",
    "noise_probe",
    "percentile_probe",
    "unit_percentiles",
]


def _unit_values(z: Tensor, unit: int) -> Tensor:
    """All values of unit/channel ``unit`` in ``z: (N, C, *spatial)``, flattened."""
    if z.dim() < 2:
        raise ValueError(f"expected (N, C, *spatial) activations, got shape {tuple(z.shape)}")
    if not 0 <= unit < z.shape[1]:
        raise ValueError(f"unit {unit} out of range for {z.shape[1]} units")
    return z[:, unit].reshape(-1)


def unit_percentiles(
    z: Tensor, unit: int | None, q: Sequence[float] = (15, 50, 85)
) -> np.ndarray:
    """Percentiles ``q`` (in %, linear interpolation as ``np.percentile``) of unit ``unit``'s
    values in ``z: (N, C, *spatial)``, over the batch (and space). Returns shape ``(len(q),)``;
    with ``unit=None``, every unit at once, shape ``(len(q), C)``.
    """
    if unit is None:
        dims = (1, 0, *range(2, z.dim()))
        values = z.detach().double().permute(*dims).reshape(z.shape[1], -1).cpu().numpy()
        return np.percentile(values, list(q), axis=1)
    values = _unit_values(z, unit).detach().double().cpu().numpy()
    return np.percentile(values, list(q))


def layer_moments(z: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit mean and (biased) standard deviation of ``z: (N, C, *spatial)``, each ``(C,)``."""
    dims = [0, *range(2, z.dim())]
    z = z.detach().double()
    return z.mean(dim=dims).cpu().numpy(), z.std(dim=dims, correction=0).cpu().numpy()


class _CollectsPre(Protocol):
    """A network with ``forward_collect(x) -> (logits, pre_activations)``: an MLP or ConvNet."""

    def forward_collect(self, x: Tensor) -> tuple[Tensor, list[Tensor]]: ...


def _pre_activations(model: nn.Module, x: Tensor) -> list[Tensor]:
    # Duck typed: the probes are documented for the networks of bncore.experiments.nets, and
    # a model without forward_collect fails with the AttributeError it always did.
    net = cast(_CollectsPre, model)
    with probe_mode(model), torch.no_grad():
        _, pre = net.forward_collect(x)
    return pre


def percentile_probe(
    x_probe: Tensor, layer: int, unit: int | None, q: Sequence[float] = (15, 50, 85)
) -> Callable[[nn.Module, Tensor, Tensor, int], np.ndarray]:
    """A probe: percentiles ``q`` of block ``layer``'s pre-activation unit ``unit`` on the fixed
    inputs ``x_probe`` (Ioffe & Szegedy 2015, §4.1 and Fig. 1(b, c)); shape ``(len(q),)``, or
    ``(len(q), C)`` for all units with ``unit=None``.

    The forward runs in the model's current mode (training mode during :func:`train`: BN uses
    the probe batch's statistics and noisy BN the current step's noise), without side effects.
    """
    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int) -> np.ndarray:
        x = x_probe.to(next(model.parameters()).device)
        return unit_percentiles(_pre_activations(model, x)[layer], unit, q)

    return probe


def moments_probe(
    x_probe: Tensor, layers: Sequence[int] | None = None
) -> Callable[[nn.Module, Tensor, Tensor, int], list[tuple[np.ndarray, np.ndarray]]]:
    """A probe: per-unit ``(mean, std)`` of the pre-activations of ``layers`` (default all) on
    the fixed inputs ``x_probe``; one ``(mean (C,), std (C,))`` pair per requested layer.
    """
    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int):
        x = x_probe.to(next(model.parameters()).device)
        pre = _pre_activations(model, x)
        chosen = range(len(pre)) if layers is None else layers
        return [layer_moments(pre[i]) for i in chosen]

    return probe


def noise_probe() -> Callable[[nn.Module, Tensor, Tensor, int], list[tuple[np.ndarray, ...]]]:
    """A probe: ``(shift, scale)`` of the current step for every :class:`NoisyBatchNorm` in the
    model, in order (an empty list for models without one).
    """
    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int):
        out = []
        for m in model.modules():
            if isinstance(m, NoisyBatchNorm) and m.last_shift is not None:
                assert m.last_scale is not None  # draw_noise sets shift and scale together
                out.append((m.last_shift.numpy().copy(), m.last_scale.numpy().copy()))
        return out

    return probe


def moments_series(
    records: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], layer: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the records of a :func:`moments_probe` (one list of (mean, std) pairs per probe
    step) into ``(means, stds)`` of shape ``(T, C)`` for entry ``layer`` of each record.
    """
    if not records:
        raise ValueError("moments_series: no records")
    return (np.stack([r[layer][0] for r in records]), np.stack([r[layer][1] for r in records]))


@dataclass
class Drift:
    """How much per-unit moments move between consecutive records, averaged over units and
    records: ``mean_change`` = avg ``|μ_{t+1} − μ_t|``, ``std_change`` = avg ``|σ_{t+1} − σ_t|``.
    """

    mean_change: float
    std_change: float


def drift(means: np.ndarray, stds: np.ndarray) -> Drift:
    r"""Average absolute change of per-unit moments between consecutive records.

    ``means, stds: (T, C)`` (T ≥ 2 records of C units). Returns
    :math:`\frac{1}{(T-1)C}\sum_{t,j}|\mu_{t+1,j}-\mu_{t,j}|` and the same for σ: a direct
    measure of how much a layer's input distribution shifts from one record to the next.
    """
    means, stds = np.asarray(means, dtype=float), np.asarray(stds, dtype=float)
    if means.ndim != 2 or means.shape != stds.shape or means.shape[0] < 2:
        raise ValueError(f"drift needs (T >= 2, C) arrays of equal shape, got {means.shape} "
                         f"and {stds.shape}")
    return Drift(float(np.abs(np.diff(means, axis=0)).mean()),
                 float(np.abs(np.diff(stds, axis=0)).mean()))


def noise_drift_theory(
    mean_scale: float,
    std_scale: float,
    *,
    per_example: bool = True,
    gamma: float = 1.0,
    probe_size: int | None = None,
    draws: int = 1_000_000,
    seed: int = 0,
) -> Drift:
    r"""The drift that :class:`~bncore.experiments.nets.NoisyBatchNorm`'s noise alone causes in a
    unit's measured mean and standard deviation between two independent steps (β fixed).

    Shared variant (``per_example=False``): for independent U, U′ ~ U(0, w), E|U − U′| = w/3,
    so the shift b ~ U(−a, a) moves a unit's mean by 2a/3 and the scale s ~ U(1, k) moves the
    standard deviation \|γ\|·s by \|γ\|(k − 1)/3.

    Per-example noise (the default, Santurkar et al.'s design): unit j's output on a probe batch
    of n examples is y_i = γ x̂_i + β + ξ_i with ξ_i ~ N(b, s²) i.i.d. and x̂ standardized over the
    batch. Its sample mean is β + b + s Z′/√n and its sample variance is
    (γ + s Z/√n)² + s² χ²_{n−2}/n, with Z, Z′ standard normal and χ²_{n−2} independent; for
    ``probe_size=None`` (n → ∞) the mean is β + b and the standard deviation √(γ² + s²). The mean
    drift is then E|Δb| = 2a/3 plus the probe's sampling noise, and the standard-deviation drift
    has no closed form: both are averaged over ``draws`` independent pairs of steps (seeded, so
    the result is reproducible; Monte Carlo error about 0.5/√draws of the drift).
    """
    if mean_scale < 0 or std_scale < 1:
        raise ValueError(f"need mean_scale >= 0 and std_scale >= 1, got {mean_scale}, {std_scale}")
    if not per_example:
        return Drift(2 * mean_scale / 3, abs(gamma) * (std_scale - 1) / 3)
    rng = np.random.default_rng(seed)
    b = rng.uniform(-mean_scale, mean_scale, size=(2, draws))
    s = rng.uniform(1.0, std_scale, size=(2, draws))
    if probe_size is None:
        mean, std = b, np.sqrt(gamma**2 + s**2)
    else:
        n = int(probe_size)
        if n < 3:
            raise ValueError(f"probe_size must be >= 3, got {n}")
        mean = b + s * rng.standard_normal((2, draws)) / np.sqrt(n)
        z = rng.standard_normal((2, draws))
        chi2 = rng.chisquare(n - 2, size=(2, draws))
        std = np.sqrt((gamma + s * z / np.sqrt(n)) ** 2 + s**2 * chi2 / n)
    return Drift(float(np.abs(mean[0] - mean[1]).mean()), float(np.abs(std[0] - std[1]).mean()))


@dataclass
class ICSResult:
    """Santurkar et al.'s ICS measure for each layer i (block weights, then the head):
    ``l2[i]`` = ‖G_i − G′_i‖₂, ``cosine[i]`` = ⟨G_i, G′_i⟩/(‖G_i‖‖G′_i‖), ``grad_norm[i]`` =
    ‖G_i‖₂ and ``rel_l2[i]`` = ‖G_i − G′_i‖/‖G_i‖. Layer 0 has no earlier layers, so
    G′_0 = G_0 (l2 0, cosine 1).
    """

    l2: np.ndarray
    cosine: np.ndarray
    grad_norm: np.ndarray
    rel_l2: np.ndarray


def ics_measure(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    lr: float,
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> ICSResult:
    r"""Internal covariate shift as defined by Santurkar et al. (2018), Def. 2.1.

    For a network with layers :math:`W_1,\dots,W_k` at step t and the batch (x_t, y_t),

    .. math::

        \begin{aligned}
        G_{t,i} &= \nabla_{W_i}\ell(W_1^t,\dots,W_k^t;\,x_t,y_t),\\
        G'_{t,i} &= \nabla_{W_i}\ell(W_1^{t+1},\dots,W_{i-1}^{t+1},W_i^t,\dots,W_k^t;\,
        x_t,y_t),
        \end{aligned}

    where :math:`W_j^{t+1} = W_j^t - \eta\,\nabla_{W_j}\ell(W^t)` is one plain SGD step
    with learning rate ``lr`` = η (all parameters of layer j: weight, bias, BN γ and β). The
    ICS of layer i is :math:`\|G_{t,i}-G'_{t,i}\|_2` and the cosine of the angle between them.
    G′ is the gradient layer i would see if only the layers before it had moved: the change
    of its input distribution, as it matters to the optimization of layer i.

    The forward passes run in the model's current mode, inside :func:`probe_mode` (noisy BN
    uses the same noise for G and G′; running statistics are restored); the parameters are
    restored exactly afterwards. ``loss(logits, y)`` defaults to the mean cross-entropy.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    groups = layer_groups(model)
    weights = layer_weights(model)
    params = [p for g in groups for p in g]
    with probe_mode(model):
        full = torch.autograd.grad(loss(model(xb), yb), params)
        grad_of = {id(p): g.detach() for p, g in zip(params, full, strict=True)}
        saved = [p.detach().clone() for p in params]
        l2, cos, norms = [], [], []
        try:
            for i, w in enumerate(weights):
                g = grad_of[id(w)]
                if i == 0:
                    g_new = g
                else:
                    with torch.no_grad():
                        for p in groups[i - 1]:  # layers < i were updated in earlier iterations
                            p.sub_(lr * grad_of[id(p)])
                    (g_new,) = torch.autograd.grad(loss(model(xb), yb), [w])
                diff = float(torch.linalg.vector_norm(g - g_new))
                norm, norm_new = float(torch.linalg.vector_norm(g)), float(
                    torch.linalg.vector_norm(g_new))
                dot = float((g * g_new).sum())
                l2.append(diff)
                norms.append(norm)
                cos.append(dot / (norm * norm_new) if norm * norm_new > 0 else float("nan"))
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved, strict=True):
                    p.copy_(s)
    l2a, norma = np.array(l2), np.array(norms)
    rel = np.divide(l2a, norma, out=np.full_like(l2a, np.nan), where=norma > 0)
    return ICSResult(l2=l2a, cosine=np.array(cos), grad_norm=norma, rel_l2=rel)


def ics_probe(
    lr: float, every: int = 1
) -> Callable[[nn.Module, Tensor, Tensor, int], ICSResult | None]:
    """A probe that runs :func:`ics_measure` with learning rate ``lr`` on the training batch at
    steps that are multiples of ``every`` (and returns ``None`` at the other probe steps).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")

    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int) -> ICSResult | None:
        return ics_measure(model, xb, yb, lr) if step % every == 0 else None

    return probe


def ics_stack(results: Sequence[ICSResult | None]) -> ICSResult:
    """Stack several :class:`ICSResult` (``None`` entries skipped) into one whose arrays have
    shape ``(n_results, n_layers)``.
    """
    kept = [r for r in results if r is not None]
    if not kept:
        raise ValueError("ics_stack: no ICS results")
    return ICSResult(*(np.stack([getattr(r, f) for r in kept])
                       for f in ("l2", "cosine", "grad_norm", "rel_l2")))
