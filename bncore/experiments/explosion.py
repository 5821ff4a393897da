r"""Gradient explosion at initialization in deep batch-normalized MLPs: the simulation.

Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz (2019), *A Mean Field Theory of Batch
Normalization* (ICLR), study the fully connected network

.. math::

    x^l = W^l\,\varphi\big(\mathrm{BN}(x^{l-1})\big),\qquad l = 1, \dots, L,\qquad
    W^l_{ij} \sim \mathcal N(0, \sigma_w^2/n),

with γ = 1, β = 0, batch size m and width n (their B and N), and predict that at
initialization the squared gradient norm grows by a factor λ per layer from the output toward
the input (:func:`bncore.theory.gradient_explosion_rate`). This module measures that growth.

:func:`simulate` runs many independent networks at once. A stack of S networks (one per seed)
is a tensor ``z: (S, B, N)`` = (seeds, batch size m, width n) holding the pre-activations x^l;
each layer is one batched matmul ``torch.bmm`` and one call of
:func:`bncore.norm.torch_bn.batch_norm` on the ``(m, S·n)`` view, so that the batch statistics
are per (network, unit) over the m examples, exactly as in S separate networks. The loss is a
random linear readout of the last layer, ℓ = Σ_{b,i} V_{bi} x^L_{bi} with V_{bi} ~ N(0, 1), and
autograd backpropagates it through the book's own BN backward. We record, per network and
layer, ‖∂ℓ/∂x^l‖² (pre-activation gradient, summed over the batch) and ‖∂ℓ/∂W^l‖_F² (weight
gradient), and :func:`fit_rate` fits λ by least squares on log-norms over the middle layers.

Why only the middle layers: the theory describes the *stationary* regime, in which the
forward activations have reached BN's fixed-point Gram matrix and the backward gradients
their own fixed point. The first layers carry the transient of the input (here i.i.d.
Gaussian, close to but not at the fixed point), the last ones that of the readout V, which
does not lie in the range of BN's backward (it is not centred). Both transients decay
geometrically within a few layers; the chapter shows the local per-layer ratio settling.
What the explosion does to training is measured in :mod:`bncore.experiments.depth_sweep`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bncore.experiments.grid import standard_error
from bncore.experiments.runtime import default_device
from bncore.norm.torch_bn import batch_norm

__all__ = [
    "ACTIVATIONS",
    "GradientProfile",
    "RateFit",
    "fit_rate",
    "simulate",
]

ACTIVATIONS: tuple[str, ...] = ("linear", "relu", "tanh")


@dataclass(frozen=True)
class RateFit:
    """A fitted per-layer growth factor λ of a squared gradient norm.

    ``rate`` = exp(−mean slope) of log‖g^l‖² against l over ``fit_layers`` (inclusive), the
    mean taken over networks; ``per_seed`` the same for each network alone; ``stderr`` the
    standard error of ``rate`` from the spread of ``per_seed`` (std/√S, delta method).
    """

    rate: float
    stderr: float
    per_seed: np.ndarray
    fit_layers: tuple[int, int]

    @property
    def spread(self) -> float:
        """Sample standard deviation of the per-network rates (0 for one network)."""
        return float(self.per_seed.std(ddof=1)) if len(self.per_seed) > 1 else 0.0


@dataclass(frozen=True)
class GradientProfile:
    """Per-layer squared gradient norms of S independent networks at initialization.

    Attributes
    ----------
    grad_z_sq: (S, L + 1) ‖∂ℓ/∂x^l‖² for l = 0, …, L (x^0 is the input batch).
    grad_w_sq: (S, L) ‖∂ℓ/∂W^l‖_F² for l = 1, …, L.
    act_var: (S, L + 1) the batch variance of x^l averaged over units (the scale BN divides).
    The remaining fields record the setting.
    """

    batch_size: int
    width: int
    depth: int
    activation: str
    eps: float
    weight_scale: float
    normalize: bool
    seeds: tuple[int, ...]
    grad_z_sq: np.ndarray
    grad_w_sq: np.ndarray
    act_var: np.ndarray

    def norms(self, which: str = "weight") -> tuple[np.ndarray, np.ndarray]:
        """``(layers, sq_norms)`` for ``which`` in {"weight", "preact"}; sq_norms is (S, len)."""
        if which == "weight":
            return np.arange(1, self.depth + 1), self.grad_w_sq
        if which == "preact":
            return np.arange(0, self.depth + 1), self.grad_z_sq
        raise ValueError(f"which must be 'weight' or 'preact', got {which!r}")

    def fit(self, which: str = "weight", skip: tuple[int, int] = (10, 10)) -> RateFit:
        """Fit λ over the layers left after dropping ``skip = (first, last)`` boundary layers."""
        layers, sq = self.norms(which)
        lo, hi = int(layers[0]) + skip[0], int(layers[-1]) - skip[1]
        return fit_rate(layers, sq, (lo, hi))

    def local_rate(self, which: str = "weight") -> tuple[np.ndarray, np.ndarray]:
        """The per-layer ratio ‖g^{l−1}‖²/‖g^l‖², geometric mean over networks.

        Returns ``(layers, ratio)`` with the ratio indexed by the deeper layer l.
        """
        layers, sq = self.norms(which)
        logs = np.log(sq)
        return layers[1:], np.exp((logs[:, :-1] - logs[:, 1:]).mean(axis=0))


def fit_rate(layers: np.ndarray, sq_norms: np.ndarray, fit_layers: tuple[int, int]) -> RateFit:
    r"""Least-squares fit of log‖g^l‖² = a − l·ln λ over ``fit_layers = (lo, hi)`` (inclusive).

    Parameters
    ----------
    layers: (K,) layer indices l; sq_norms: (S, K) or (K,) squared norms, one row per network.
    fit_layers: the first and last layer used; at least two layers.
    """
    layers = np.asarray(layers, dtype=float)
    sq = np.atleast_2d(np.asarray(sq_norms, dtype=float))
    if sq.shape[1] != layers.shape[0]:
        raise ValueError(f"sq_norms has {sq.shape[1]} layers but layers has {layers.shape[0]}")
    lo, hi = fit_layers
    mask = (layers >= lo) & (layers <= hi)
    if mask.sum() < 2:
        raise ValueError(f"fit_layers {fit_layers} selects fewer than two of layers {layers}")
    if not np.all(np.isfinite(sq[:, mask])) or np.any(sq[:, mask] <= 0):
        raise ValueError("squared norms in the fit range must be finite and > 0 (underflow?)")
    x = layers[mask]
    y = np.log(sq[:, mask])
    xc = x - x.mean()
    slopes = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)  # (S,)
    per_seed = np.exp(-slopes)
    rate = float(np.exp(-slopes.mean()))
    stderr = rate * standard_error(slopes)  # delta method: d rate = rate · d(mean slope)
    return RateFit(rate=rate, stderr=stderr, per_seed=per_seed, fit_layers=(int(lo), int(hi)))


def _act(name: str, u: Tensor) -> Tensor:
    if name == "relu":
        return torch.relu(u)
    return torch.tanh(u) if name == "tanh" else u


def _bn_stack(z: Tensor, eps: float) -> Tensor:
    """BN of a stack ``z: (S, B, N)`` per (network, unit) over the batch axis (size m)."""
    s, b, n = z.shape
    flat = z.transpose(0, 1).reshape(b, s * n)  # (B, S·N): channel = (network, unit)
    y = batch_norm(flat, None, None, None, None, training=True, eps=eps)
    return y.reshape(b, s, n).transpose(0, 1)


def _check(batch_size: int, width: int, depth: int, activation: str, eps: float) -> None:
    for name, v, low in (("batch_size", batch_size, 2), ("width", width, 1), ("depth", depth, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if v < low:
            raise ValueError(f"{name} must be >= {low}, got {v}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (batch_norm in training needs it), got {eps}")


def _run_chunk(
    seeds: list[int],
    *,
    batch_size: int,
    width: int,
    depth: int,
    activation: str,
    eps: float,
    weight_scale: float,
    normalize: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward and backward through a stack of len(seeds) networks; per-seed squared norms."""
    b, n = batch_size, width
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(b, n, generator=g, dtype=dtype, device=device)
                     for g in gens])  # (S, B, N)
    readout = torch.stack([torch.randn(b, n, generator=g, dtype=dtype, device=device)
                           for g in gens])
    std = weight_scale / math.sqrt(n)
    z = x.requires_grad_(True)
    zs, hs = [z], []
    for _ in range(depth):
        u = _bn_stack(z, eps) if normalize else z
        h = _act(activation, u)  # (S, B, N): the layer's input φ(BN(z^{l−1}))
        with torch.no_grad():
            w = torch.stack([torch.randn(n, n, generator=g, dtype=dtype, device=device)
                             for g in gens]) * std
        z = torch.bmm(h, w.transpose(1, 2))  # z_b = W h_b for every example b
        zs.append(z)
        hs.append(h)
    loss = (readout * z).sum()
    grads = torch.autograd.grad(loss, zs)  # ∂L/∂z^l for l = 0, …, L
    with torch.no_grad():
        grad_z = torch.stack([g.square().sum(dim=(1, 2)) for g in grads], dim=1)
        # ∂L/∂W^l = Σ_b g_b h_bᵀ, so ‖∂L/∂W^l‖_F² = Σ_{b,b'} (g gᵀ)_{bb'} (h hᵀ)_{bb'}: B×B Grams.
        grad_w = torch.stack(
            [
                (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(h, h.transpose(1, 2)))
                .sum(dim=(1, 2))
                for g, h in zip(grads[1:], hs, strict=True)
            ],
            dim=1,
        )
        act_var = torch.stack([t.var(dim=1, unbiased=False).mean(dim=1) for t in zs], dim=1)
    return (grad_z.double().cpu().numpy(), grad_w.double().cpu().numpy(),
            act_var.double().cpu().numpy())


def simulate(
    batch_size: int,
    *,
    activation: str = "relu",
    width: int = 500,
    depth: int = 50,
    eps: float = 1e-5,
    weight_scale: float = 1.0,
    normalize: bool = True,
    seeds: Iterable[int] = range(4),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    max_chunk_bytes: int = 2**27,
) -> GradientProfile:
    r"""Per-layer squared gradient norms of deep BN MLPs at initialization, one per seed.

    The network is x^l = W^l φ(BN(x^{l−1})), l = 1…``depth``, W^l_ij ~ N(0, σ_w²/n) with
    σ_w = ``weight_scale``, n = ``width``, batch size m = ``batch_size``, γ = 1, β = 0 and BN's
    ``eps``; the input x^0 and the readout V of the loss ℓ = ⟨V, x^L⟩ have i.i.d. N(0, 1)
    entries. ``normalize=False`` drops BN (x^l = W^l φ(x^{l−1})) for comparison. Each seed
    gives an independent network (its own ``torch.Generator``), so the result does not depend
    on how the seeds are grouped.

    Seeds run as a stack ``(S, B, N)``, in chunks whose saved weights (autograd keeps every
    W^l for the backward) fit in ``max_chunk_bytes``. Use ``dtype=torch.float64`` where the
    norms span more than float32's range (e.g. large ``eps``, where activations shrink
    geometrically with depth).
    """
    _check(batch_size, width, depth, activation, eps)
    if not weight_scale > 0:
        raise ValueError(f"weight_scale must be > 0, got {weight_scale}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must name at least one network")
    device = torch.device(device) if device is not None else default_device()
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_seed = depth * width * width * itemsize
    chunk = max(1, int(max_chunk_bytes // per_seed))
    parts = [
        _run_chunk(
            list(seeds[i : i + chunk]),
            batch_size=int(batch_size),
            width=int(width),
            depth=int(depth),
            activation=activation,
            eps=float(eps),
            weight_scale=float(weight_scale),
            normalize=normalize,
            dtype=dtype,
            device=device,
        )
        for i in range(0, len(seeds), chunk)
    ]
    grad_z, grad_w, act_var = (np.concatenate(p, axis=0) for p in zip(*parts, strict=True))
    return GradientProfile(
        batch_size=int(batch_size),
        width=int(width),
        depth=int(depth),
        activation=activation,
        eps=float(eps),
        weight_scale=float(weight_scale),
        normalize=normalize,
        seeds=seeds,
        grad_z_sq=grad_z,
        grad_w_sq=grad_w,
        act_var=act_var,
    )
