r"""Signal propagation through residual networks at initialization: the simulations.

Brock, De & Smith (2021), *Characterizing Signal Propagation to Close the Performance Gap in
Unnormalized ResNets* (ICLR), summarize the forward pass of a ResNet at initialization by
three numbers per residual block, their *signal propagation plot* (SPP). For an activation
``x: (N, C, *spatial)`` (N = m examples) with per-channel batch mean μ_c and (biased) variance
σ_c² over the m·∏spatial values of channel c,

.. math::

    \begin{aligned}
    \text{average channel squared mean} &= \frac1C\sum_c \mu_c^2,\\
    \text{average channel variance} &= \frac1C\sum_c \sigma_c^2,
    \end{aligned}

measured on the stream x_l after every block, and the *residual-branch variance*, the
average channel variance of what block l adds to the stream, r_l(x_{l−1}) (here after
SkipInit's α or NF's α, i.e. exactly the term in x_l = x_{l−1} + r_l). Their sum, the second
moment E[x_l²], is what :func:`bncore.theory.residual_stream_variance` predicts
(De & Smith 2020).

:func:`gradient_profile` measures the backward pass the same way the gradient-explosion
chapter does (:mod:`bncore.experiments.explosion`): a random linear readout ℓ = ⟨V, x_L⟩ of the last
stream, V ~ N(0, 1), and the squared Frobenius norms ‖∂ℓ/∂W‖² of every branch weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bncore.experiments.resnets import ResNet, branch_weights
from bncore.experiments.runtime import seed_everything

__all__ = [
    "GradientProfileRes",
    "SignalProp",
    "channel_stats",
    "gradient_profile",
    "overall_growth",
    "signal_propagation",
    "signal_propagation_seeds",
]


def channel_stats(x: Tensor) -> tuple[float, float]:
    """(average channel squared mean, average channel variance) of ``x: (N, C, *spatial)``.

    Statistics per channel over the N·∏spatial values (biased variance), then averaged over
    the C channels (Brock et al. 2021).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"channel_stats expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"channel_stats expects (N, C, *spatial), got shape {tuple(x.shape)}")
    dims = [0, *range(2, x.dim())]
    x = x.detach().double()
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, unbiased=False)
    return float(mean.square().mean()), float(var.mean())


@dataclass(frozen=True)
class SignalProp:
    """A signal propagation plot's numbers; arrays over blocks, or (S, ·) stacks over seeds.

    ``sq_mean``, ``var``: (…, L + 1) for the stream x_0, …, x_L. ``branch_sq_mean``,
    ``branch_var``: (…, L) for the branch outputs r_1, …, r_L.
    """

    sq_mean: np.ndarray
    var: np.ndarray
    branch_sq_mean: np.ndarray
    branch_var: np.ndarray

    @property
    def second_moment(self) -> np.ndarray:
        """E[x_l²] averaged over channels: squared mean + variance, (…, L + 1)."""
        return self.sq_mean + self.var

    @property
    def branch_fraction(self) -> np.ndarray:
        """E[r_l²]/E[x_l²]: the share of block l's output carried by its branch, (…, L)."""
        return (self.branch_sq_mean + self.branch_var) / self.second_moment[..., 1:]


@torch.no_grad()
def signal_propagation(model: ResNet, x: Tensor) -> SignalProp:
    """The SPP numbers of ``model`` on the batch ``x`` in training mode (BN uses batch
    statistics, as at the first step of training); the model's mode is restored after.
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"expected a bncore.experiments.resnets.ResNet, got {type(model).__name__}")
    was_training = model.training
    model.train()
    try:
        _, streams, branches = model.forward_collect(x)
    finally:
        model.train(was_training)
    s = np.array([channel_stats(t) for t in streams])  # (L + 1, 2)
    b = np.array([channel_stats(t) for t in branches])  # (L, 2)
    return SignalProp(sq_mean=s[:, 0], var=s[:, 1], branch_sq_mean=b[:, 0], branch_var=b[:, 1])


def _gaussian_input(model: ResNet, in_features: int, batch_size: int, image_size: int,
                    generator: torch.Generator) -> Tensor:
    shape = ((batch_size, in_features) if model.dims == 1 else
             (batch_size, in_features, image_size, image_size))
    return torch.randn(shape, generator=generator)


def signal_propagation_seeds(
    variant: str,
    seeds: list[int] | range,
    *,
    width: int = 128,
    depth: int = 16,
    batch_size: int = 128,
    dims: int = 1,
    image_size: int = 8,
    alpha: float | None = None,
    x: Tensor | None = None,
) -> SignalProp:
    """SPP numbers of one freshly initialized ``ResNet`` per seed, stacked to (S, ·) arrays.

    For seed s: :func:`bncore.experiments.runtime.seed_everything` (s), build
    ``ResNet(in_features, width, depth, 10, variant, dims=dims, alpha=alpha)`` and measure it
    on ``x`` if given (then in_features = x.shape[1]), else on a fresh N(0, 1) batch with
    in_features = width (so that E[x_0²] ≈ 1) drawn from a generator seeded with s.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one network")
    in_features = width if x is None else int(x.shape[1])
    runs = []
    for s in seeds:
        seed_everything(s)
        model = ResNet(in_features, width, depth, 10, variant, dims=dims, alpha=alpha)
        gen = torch.Generator().manual_seed(10_000 + int(s))
        batch = x if x is not None else _gaussian_input(model, in_features, batch_size,
                                                        image_size, gen)
        runs.append(signal_propagation(model, batch))
    return SignalProp(*(np.stack([getattr(r, f) for r in runs]) for f in
                        ("sq_mean", "var", "branch_sq_mean", "branch_var")))


@dataclass(frozen=True)
class GradientProfileRes:
    """Squared gradient norms of S residual networks at initialization.

    ``grad_w_sq``: (S, 2L) ‖∂ℓ/∂W‖_F² of the branch weights W₁¹, W₂¹, …, W₂ᴸ (input to output).
    ``grad_x_sq``: (S, L + 1) ‖∂ℓ/∂x_l‖² of the stream, summed over the batch.
    """

    grad_w_sq: np.ndarray
    grad_x_sq: np.ndarray


def _grad(t: Tensor) -> Tensor:
    """``t.grad``, which the backward pass from the last stream has just filled."""
    assert t.grad is not None
    return t.grad


def gradient_profile(
    seeds: list[int] | range,
    *,
    variant: str = "bn",
    width: int = 128,
    depth: int = 16,
    batch_size: int = 64,
) -> GradientProfileRes:
    """Per-layer squared gradient norms of residual MLPs at initialization, one per seed.

    Same measurement as :func:`bncore.experiments.explosion.simulate` for the plain BN-MLP: N(0, 1)
    input of width ``width``, loss ℓ = ⟨V, x_L⟩ with V ~ N(0, 1) of the shape of the last stream, BN
    in training mode (batch statistics). The stem and head are not part of the profile.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one network")
    gw, gx = [], []
    for s in seeds:
        seed_everything(s)
        model = ResNet(width, width, depth, 10, variant)
        model.train()
        gen = torch.Generator().manual_seed(10_000 + int(s))
        x = torch.randn(batch_size, width, generator=gen)
        readout = torch.randn(batch_size, width, generator=gen)
        _, streams, _ = model.forward_collect(x)
        for t in streams:
            t.retain_grad()
        (readout * streams[-1]).sum().backward()
        gw.append([float(_grad(w).double().square().sum()) for w in branch_weights(model)])
        gx.append([float(_grad(t).double().square().sum()) for t in streams])
    return GradientProfileRes(grad_w_sq=np.array(gw), grad_x_sq=np.array(gx))


def overall_growth(sq_norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Growth of a squared gradient norm from the last layer to the first, per network.

    ``sq_norms``: (S, K) squared norms in input-to-output order. Returns ``(total, per_layer)``,
    each (S,): total = ‖g_1‖²/‖g_K‖² and per_layer = total^{1/(K−1)}, the geometric-mean
    ratio between consecutive layers (λ for a network whose norms grow geometrically).
    """
    sq = np.atleast_2d(np.asarray(sq_norms, dtype=float))
    if sq.shape[1] < 2:
        raise ValueError(f"need at least two layers, got shape {sq.shape}")
    if not np.all(np.isfinite(sq)) or np.any(sq <= 0):
        raise ValueError("squared norms must be finite and > 0")
    total = sq[:, 0] / sq[:, -1]
    return total, total ** (1.0 / (sq.shape[1] - 1))
