r"""Probes of the loss landscape along the gradient (Santurkar et al. 2018, §3 and Fig. 4).

At parameters θ with mini-batch loss L and gradient g = ∇L(θ), a probe moves along the gradient
direction by several step sizes η and measures, on the same batch,

- the **variation of the loss**: the values L(θ − ηg), whose range over η says how far the loss
  can move in one step (Lipschitzness of the loss),
- the **gradient predictiveness**: the ℓ2 change ‖∇L(θ) − ∇L(θ − ηg)‖, small when the gradient
  at θ still describes the landscape a step away,
- the **effective β-smoothness**: max over η of ‖∇L(θ) − ∇L(θ − ηg)‖ / ‖ηg‖, the largest
  Lipschitz constant of the gradient seen along the step.

:func:`probe_landscape` measures one point and restores the model exactly (parameters,
``.grad``, BN running statistics, train/eval flags and random-number states), so it can run in
the middle of training; :func:`landscape_probe` wraps it for
``bncore.experiments.train.train(probes=...)``.

:func:`bn_layer_terms` measures, for one BN layer, the quantities of Santurkar et al.'s
Theorems 4.1 and 4.2 (gradient and Hessian quadratic form through BN, by autograd through
:func:`bncore.norm.torch_bn.batch_norm`); their right-hand sides are in :mod:`bncore.theory`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.data import Dataset
from bncore.experiments.nets import MLP, probe_mode
from bncore.experiments.runtime import seed_everything
from bncore.experiments.train import train
from bncore.norm.torch_bn import batch_norm, mean_var

__all__ = [
    "BNLayerTerms",
    "LRSweep",
    "LandscapeProbe",
    "ProbeTrace",
    "bn_layer_terms",
    "landscape_probe",
    "log_ratio_interval",
    "lr_sweep",
    "network_bn_layer_terms",
    "preserved_state",
    "probe_landscape",
    "random_bn_instance",
    "simulate_mlp",
    "smooth_downstream",
    "trace_landscape",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Saving and restoring everything a probe could touch
# --------------------------------------------------------------------------------------------


def _generators(model: nn.Module) -> list[torch.Generator]:
    """``torch.Generator`` objects held as attributes of the model's modules (e.g. noisy BN)."""
    found: list[torch.Generator] = []
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Generator) and all(value is not g for g in found):
                found.append(value)
    return found


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run a block and put ``model`` back exactly as it was.

    Restores the values of all parameters and buffers (BN running mean/var and
    ``num_batches_tracked``), every parameter's ``.grad`` (including ``None``), every module's
    ``training`` flag, torch's global CPU (and CUDA) random state, and the state of any
    ``torch.Generator`` stored on a module. The state is restored even if the block raises.
    """
    state = copy.deepcopy(model.state_dict())
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    gens = _generators(model)
    gen_states = [g.get_state() for g in gens]
    try:
        yield
    finally:
        model.load_state_dict(state)
        for p, gr in zip(model.parameters(), grads, strict=True):
            p.grad = gr
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for g, s in zip(gens, gen_states, strict=True):
            g.set_state(s)


# --------------------------------------------------------------------------------------------
# The landscape probe
# --------------------------------------------------------------------------------------------


@dataclass
class LandscapeProbe:
    """What one probe measured along the gradient at θ (arrays indexed like ``etas``).

    Attributes
    ----------
    etas: (K,) step sizes η.
    loss0: L(θ) on the batch.
    grad_norm: ‖g‖ = ‖∇L(θ)‖ over all parameters.
    losses: (K,) L(θ − ηg).
    grad_change: (K,) ‖∇L(θ) − ∇L(θ − ηg)‖ (gradient predictiveness; smaller is better).
    """

    etas: np.ndarray
    loss0: float
    grad_norm: float
    losses: np.ndarray
    grad_change: np.ndarray

    @property
    def step_lengths(self) -> np.ndarray:
        """(K,) distances moved, ‖ηg‖ = η‖g‖."""
        return self.etas * self.grad_norm

    @property
    def loss_range(self) -> tuple[float, float]:
        """(min, max) of L(θ − ηg) over the step sizes: the "variation of the loss"."""
        return float(np.min(self.losses)), float(np.max(self.losses))

    @property
    def beta_smoothness(self) -> float:
        """Effective β-smoothness: max over η of ‖∇L(θ) − ∇L(θ − ηg)‖ / (η‖g‖)."""
        return float(np.max(self.grad_change / self.step_lengths))

    @property
    def relative_grad_change(self) -> np.ndarray:
        """(K,) ‖∇L(θ) − ∇L(θ − ηg)‖ / ‖∇L(θ)‖, the change relative to the gradient's size."""
        return self.grad_change / self.grad_norm


def _loss_and_grad(
    model: nn.Module, params: list[nn.Parameter], xb: Tensor, yb: Tensor, loss_fn: LossFn
) -> tuple[float, Tensor]:
    """Mini-batch loss and the flattened gradient over ``params`` (no graph kept)."""
    loss = loss_fn(model(xb), yb)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = torch.cat(
        [torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
         for p, g in zip(params, grads, strict=True)]
    )
    return float(loss.detach()), flat.detach()


def probe_landscape(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    etas: Sequence[float] | np.ndarray,
    *,
    loss_fn: LossFn = F.cross_entropy,
    train_mode: bool = True,
) -> LandscapeProbe:
    """Move along the gradient from the current parameters and measure loss and gradient.

    For each η in ``etas`` the parameters are set to θ − η·g, with g = ∇L(θ) on the batch
    ``(xb, yb)``, and L(θ − ηg) and ∇L(θ − ηg) are computed on the same batch (Santurkar et al.
    2018, §3, Fig. 4). ``train_mode=True`` evaluates the training objective (BN with batch
    statistics); noisy BN layers keep the noise of the current step
    (:func:`bncore.experiments.nets.probe_mode`), so every η sees the same objective. Afterwards the
    model is restored exactly (see :func:`preserved_state`).

    Parameters
    ----------
    model: the network; all parameters with ``requires_grad`` move together.
    xb, yb: the batch.
    etas: positive step sizes η (at least one).
    loss_fn: ``loss_fn(model(xb), yb)`` → scalar; cross-entropy by default.
    train_mode: evaluate in training mode (batch statistics) if ``True``, else eval mode.
    """
    eta_arr = np.asarray(etas, dtype=float).reshape(-1)
    if eta_arr.size == 0 or not np.all(np.isfinite(eta_arr)) or np.any(eta_arr <= 0):
        raise ValueError(f"etas must be a non-empty sequence of positive step sizes, got {etas}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters that require grad; nothing to probe")
    with preserved_state(model), probe_mode(model):
        model.train(train_mode)
        theta0 = [p.detach().clone() for p in params]
        loss0, g0 = _loss_and_grad(model, params, xb, yb, loss_fn)
        # split g back into per-parameter pieces for the update θ − ηg
        pieces = list(torch.split(g0, [p.numel() for p in params]))
        losses = np.empty(eta_arr.size)
        change = np.empty(eta_arr.size)
        for k, eta in enumerate(eta_arr):
            with torch.no_grad():
                for p, t0, gp in zip(params, theta0, pieces, strict=True):
                    p.copy_(t0 - eta * gp.reshape(p.shape))
            loss_k, g_k = _loss_and_grad(model, params, xb, yb, loss_fn)
            losses[k] = loss_k
            change[k] = float(torch.linalg.vector_norm(g0 - g_k))
    return LandscapeProbe(
        etas=eta_arr,
        loss0=loss0,
        grad_norm=float(torch.linalg.vector_norm(g0)),
        losses=losses,
        grad_change=change,
    )


def landscape_probe(
    etas: Sequence[float] | np.ndarray,
    *,
    loss_fn: LossFn = F.cross_entropy,
    train_mode: bool = True,
) -> Callable[[nn.Module, Tensor, Tensor, int], LandscapeProbe]:
    """A probe for ``bncore.experiments.train.train(..., probes={"landscape":
    landscape_probe(etas)})``.

    The returned callable ``probe(model, xb, yb, step)`` runs :func:`probe_landscape` on the
    training batch and returns its :class:`LandscapeProbe`; training continues unaffected.
    """
    eta_arr = np.asarray(etas, dtype=float).reshape(-1)
    if eta_arr.size == 0 or np.any(eta_arr <= 0):
        raise ValueError(f"etas must be a non-empty sequence of positive step sizes, got {etas}")

    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int) -> LandscapeProbe:
        return probe_landscape(model, xb, yb, eta_arr, loss_fn=loss_fn, train_mode=train_mode)

    return probe


# --------------------------------------------------------------------------------------------
# One BN layer: the measured sides of Santurkar et al. (2018), Theorems 4.1 and 4.2
# --------------------------------------------------------------------------------------------


@dataclass
class BNLayerTerms:
    """Measured gradient and curvature through one BN layer, per channel j.

    For the loss L̂(y) = L(z) with z = BN(y) = γ·ŷ + β (training mode, γ and β constants):

    Attributes
    ----------
    grad_in: (m, C) v = ∇_y L̂, the gradient through BN.
    grad_out: (m, C) ĝ = ∇_z L, the gradient just above BN.
    yhat: (m, C) ŷ = (y − μ_B)/√(σ_B² + ε).
    var: (C,) the biased batch variance σ_B².
    sigma: (C,) √(σ_B² + ε), what BN divides by.
    quad_in: (C,) v_jᵀ (∂²L̂/∂y_j∂y_j) v_j, the loss Hessian's quadratic form along the
        gradient (channel j's part of v, the others held at 0).
    quad_out: (C,) v_jᵀ H_jj v_j with H_jj = ∂²L/∂z_j∂z_j.
    """

    grad_in: Tensor
    grad_out: Tensor
    yhat: Tensor
    var: Tensor
    sigma: Tensor
    quad_in: Tensor
    quad_out: Tensor


def _hvp(grad: Tensor, wrt: Tensor, direction: Tensor) -> Tensor:
    """Hessian-vector product ∇(grad · direction) by double backward; 0 for a linear loss."""
    if not grad.requires_grad:  # the gradient is constant: zero Hessian
        return torch.zeros_like(wrt)
    (hv,) = torch.autograd.grad(grad, wrt, grad_outputs=direction, retain_graph=True,
                                allow_unused=True)
    return torch.zeros_like(wrt) if hv is None else hv


def bn_layer_terms(
    y: Tensor,
    downstream: Callable[[Tensor], Tensor],
    gamma: Tensor,
    beta: Tensor,
    eps: float,
) -> BNLayerTerms:
    """Gradient and Hessian quadratic forms through a BN layer, by autograd.

    ``z = bncore.norm.torch_bn.batch_norm(y, None, None, γ, β, training=True, eps=eps)`` and
    L̂ = ``downstream(z)``. The Hessian quadratic forms are Hessian-vector products by double
    backward through BN's hand-written backward (which is itself differentiable).

    Parameters
    ----------
    y: (m, C) pre-BN activations (use float64 for checks at round-off level).
    downstream: maps z (m, C) to a scalar loss; must be twice differentiable.
    gamma, beta: (C,) BN's scale and shift, held constant.
    eps: ε > 0 (the library refuses ε = 0; use a tiny ε in float64 to approach it).
    """
    if y.dim() != 2:
        raise ValueError(f"y must have shape (m, C), got {tuple(y.shape)}")
    m, c = y.shape
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(f"gamma and beta must have shape ({c},)")
    y = y.detach().clone().requires_grad_(True)
    gamma, beta = gamma.detach(), beta.detach()
    z = batch_norm(y, None, None, gamma, beta, training=True, eps=eps)
    loss_hat = downstream(z)
    (v,) = torch.autograd.grad(loss_hat, y, create_graph=True)

    z0 = z.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(downstream(z0), z0, create_graph=True)

    quad_in = torch.empty(c, dtype=y.dtype, device=y.device)
    quad_out = torch.empty(c, dtype=y.dtype, device=y.device)
    for j in range(c):
        direction = torch.zeros_like(y)
        direction[:, j] = v[:, j].detach()
        quad_in[j] = (_hvp(v, y, direction) * direction).sum()
        quad_out[j] = (_hvp(g, z0, direction) * direction).sum()

    with torch.no_grad():
        mean, var = mean_var(y)
        sigma = torch.sqrt(var + eps)
        yhat = (y - mean) / sigma
    return BNLayerTerms(
        grad_in=v.detach(),
        grad_out=g.detach(),
        yhat=yhat,
        var=var,
        sigma=sigma,
        quad_in=quad_in.detach(),
        quad_out=quad_out.detach(),
    )


def smooth_downstream(
    num_channels: int, num_classes: int, labels: Tensor, *, seed: int, dtype: torch.dtype
) -> Callable[[Tensor], Tensor]:
    """A random, twice-differentiable loss on top of a BN layer's output, for theorem checks.

    L(z) = cross_entropy(tanh(z) W, labels) with W ~ N(0, 1/C) drawn from ``seed``: a small
    smooth "rest of the network" with a non-trivial Hessian.
    """
    if num_channels < 1 or num_classes < 2:
        raise ValueError("need num_channels >= 1 and num_classes >= 2")
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(num_channels, num_classes, generator=gen, dtype=dtype) / math.sqrt(
        num_channels
    )

    def loss(z: Tensor) -> Tensor:
        return F.cross_entropy(torch.tanh(z) @ w, labels)

    return loss


def random_bn_instance(
    seed: int, m: int = 16, num_channels: int = 4, eps: float = 1e-14, num_classes: int = 4
) -> tuple[BNLayerTerms, Tensor]:
    """A random float64 BN layer with a smooth loss on top, measured by :func:`bn_layer_terms`.

    Channel j has pre-activations y_j ~ N(2, s_j²) with s_j ~ U(0.2, 3.2), γ_j ~ U(0.1, 2.1),
    β_j ~ N(0, 1); the loss above is 3·:func:`smooth_downstream`. Returns ``(terms, gamma)``.
    ``eps = 1e-14`` stands for ε → 0 (the library refuses ε = 0).
    """
    if m < 2 or num_channels < 1:
        raise ValueError(f"need m >= 2 and num_channels >= 1, got m={m}, C={num_channels}")
    dt = torch.float64
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(num_channels, generator=gen, dtype=dt) * 3 + 0.2
    y = torch.randn(m, num_channels, generator=gen, dtype=dt) * scale + 2.0
    gamma = torch.rand(num_channels, generator=gen, dtype=dt) * 2 + 0.1
    beta = torch.randn(num_channels, generator=gen, dtype=dt)
    labels = torch.randint(0, num_classes, (m,), generator=gen)
    f = smooth_downstream(num_channels, num_classes, labels, seed=seed + 1000, dtype=dt)
    return bn_layer_terms(y, lambda z: 3.0 * f(z), gamma, beta, eps), gamma


# --------------------------------------------------------------------------------------------
# Experiments: probes over training, learning-rate sweeps, seed statistics
# --------------------------------------------------------------------------------------------


@dataclass
class ProbeTrace:
    """Landscape probes of one training run, stacked (P probe points, K step sizes).

    Attributes
    ----------
    step: (P,) training steps at which the probes ran.
    etas: (K,) step sizes.
    losses: (P, K) L(θ_t − ηg_t). loss0: (P,) L(θ_t).
    grad_change: (P, K) ‖∇L(θ_t) − ∇L(θ_t − ηg_t)‖. grad_norm: (P,) ‖g_t‖.
    beta: (P,) effective β-smoothness at each probe point.
    final_test_acc: the run's final test accuracy; diverged: whether it blew up.
    last_step: the last training step reached (where a diverged run stopped).
    """

    step: np.ndarray
    etas: np.ndarray
    losses: np.ndarray
    loss0: np.ndarray
    grad_change: np.ndarray
    grad_norm: np.ndarray
    beta: np.ndarray
    final_test_acc: float
    diverged: bool
    last_step: int

    @property
    def loss_variation(self) -> np.ndarray:
        """(P,) max − min of L(θ_t − ηg_t) over η: the width of Fig. 4(a)'s band."""
        return self.losses.max(axis=1) - self.losses.min(axis=1)

    @property
    def max_grad_change(self) -> np.ndarray:
        """(P,) max over η of ‖∇L(θ_t) − ∇L(θ_t − ηg_t)‖: the top of Fig. 4(b)'s band."""
        return self.grad_change.max(axis=1)

    @property
    def max_relative_grad_change(self) -> np.ndarray:
        """(P,) max over η of ‖∇L(θ_t) − ∇L(θ_t − ηg_t)‖ / ‖∇L(θ_t)‖."""
        return self.grad_change.max(axis=1) / self.grad_norm


def trace_landscape(
    build: Callable[[], nn.Module],
    data: Dataset,
    *,
    lr: float,
    steps: int,
    etas: Sequence[float] | np.ndarray,
    probe_every: int,
    seed: int,
    batch_size: int = 64,
) -> ProbeTrace:
    """Train ``build()`` with SGD and probe the landscape every ``probe_every`` steps.

    The model is built after ``seed_everything(seed)`` and trained by
    :func:`bncore.experiments.train.train` with the same ``seed`` (batch order), so a run is
    reproducible; the probes (:func:`landscape_probe`) do not change the training trajectory.
    """
    seed_everything(seed)
    model = build()
    hist = train(
        model, data, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=0,
        probes={"landscape": landscape_probe(etas)}, probe_every=probe_every, progress=False,
    )
    probes: list[LandscapeProbe] = hist.probes["landscape"]
    if not probes:
        raise ValueError("no probe ran; make probe_every <= steps")
    return ProbeTrace(
        step=np.asarray(hist.probe_step),
        etas=probes[0].etas,
        losses=np.stack([p.losses for p in probes]),
        loss0=np.array([p.loss0 for p in probes]),
        grad_change=np.stack([p.grad_change for p in probes]),
        grad_norm=np.array([p.grad_norm for p in probes]),
        beta=np.array([p.beta_smoothness for p in probes]),
        final_test_acc=hist.final_test_acc,
        diverged=hist.diverged,
        last_step=hist.step[-1],
    )


@dataclass
class LRSweep:
    """Final test accuracy over learning rates and seeds (Bjorck et al. 2018, Fig. 1 style).

    Attributes
    ----------
    lrs: (L,) learning rates. acc: (S, L) final test accuracy (0 where the run diverged).
    diverged: (S, L) whether the loss blew up. threshold: accuracy a run must reach to count
    as "trained".
    """

    lrs: np.ndarray
    acc: np.ndarray
    diverged: np.ndarray
    threshold: float

    @property
    def trained(self) -> np.ndarray:
        """(S, L) did not diverge and reached ``threshold`` test accuracy."""
        return (~self.diverged) & (self.acc >= self.threshold)

    def largest_stable_lr(self, per_seed: bool = False) -> float | np.ndarray:
        """The largest rate at which *every* seed trained (or, ``per_seed``, each seed's own
        largest); NaN where none did."""
        ok = self.trained
        if per_seed:
            return np.array([self.lrs[r].max() if r.any() else np.nan for r in ok])
        good = ok.all(axis=0)
        return float(self.lrs[good].max()) if good.any() else float("nan")


def lr_sweep(
    build: Callable[[], nn.Module],
    data: Dataset,
    lrs: Sequence[float] | np.ndarray,
    seeds: Sequence[int],
    *,
    steps: int,
    threshold: float = 0.8,
    batch_size: int = 64,
) -> LRSweep:
    """Train ``build()`` for ``steps`` SGD steps at each rate and seed; record the outcome.

    Each run is seeded with :func:`bncore.experiments.runtime.seed_everything` (init) and the same
    seed for the batch order; diverged runs (NaN/Inf or exploding loss, see
    :func:`bncore.experiments.train.train`) stop early and get accuracy 0.
    """
    lr_arr = np.asarray(lrs, dtype=float)
    if lr_arr.size == 0 or np.any(lr_arr <= 0) or not list(seeds):
        raise ValueError("lr_sweep needs positive learning rates and at least one seed")
    acc = np.zeros((len(seeds), lr_arr.size))
    div = np.zeros((len(seeds), lr_arr.size), dtype=bool)
    for i, seed in enumerate(seeds):
        for k, lr in enumerate(lr_arr):
            seed_everything(seed)
            hist = train(build(), data, steps=steps, lr=float(lr), batch_size=batch_size,
                         seed=seed, eval_every=0, progress=False)
            div[i, k] = hist.diverged
            acc[i, k] = 0.0 if hist.diverged else hist.final_test_acc
    return LRSweep(lrs=lr_arr, acc=acc, diverged=div, threshold=threshold)


def log_ratio_interval(
    numerator: Sequence[float] | np.ndarray,
    denominator: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Geometric-mean ratio of paired positive measurements and its t-interval.

    With r_s = log(a_s / b_s) over n ≥ 2 paired seeds, returns
    (exp(mean r), exp(mean r − t·se), exp(mean r + t·se)), se = sd(r)/√n and t the two-sided
    Student-t quantile with n − 1 degrees of freedom: "a is k times b" with its uncertainty.
    """
    from scipy import stats as sps

    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError("need two paired 1-D arrays with at least 2 entries each")
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("log-ratio intervals need positive measurements")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    r = np.log(a / b)
    se = r.std(ddof=1) / np.sqrt(r.size)
    t = float(sps.t.ppf(0.5 + confidence / 2, df=r.size - 1))
    mid = float(r.mean())
    return float(np.exp(mid)), float(np.exp(mid - t * se)), float(np.exp(mid + t * se))


def network_bn_layer_terms(
    model: nn.Module, xb: Tensor, yb: Tensor, layer: int
) -> tuple[BNLayerTerms, Tensor]:
    """:func:`bn_layer_terms` for BN layer ``layer`` of a :class:`bncore.experiments.nets.MLP` in
    place.

    A float64 copy of the model is cut at block ``layer``: y = the block's linear output on the
    batch ``xb`` (blocks before it run in training mode), and the downstream loss is the rest of
    the network, L(z) = cross_entropy(head(blocks[layer+1:](act(z))), yb), with BN's own γ, β
    and ε. The model itself is not changed. Returns ``(terms, gamma)``.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "head"):
        raise TypeError("network_bn_layer_terms needs a bncore.experiments.nets.MLP")
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer must be in [0, {len(blocks)}), got {layer}")
    net = copy.deepcopy(model).double().train()
    norm = net.blocks[layer].norm
    if not hasattr(norm, "eps") or getattr(norm, "weight", None) is None:
        raise ValueError(f"block {layer}'s norm is not an affine batch norm: {norm}")
    with torch.no_grad():
        h = xb.double().flatten(1)
        for block in net.blocks[:layer]:
            h = block(h)
        y = net.blocks[layer].linear(h)
    act, rest, head = net.blocks[layer].act, net.blocks[layer + 1:], net.head

    def downstream(z: Tensor) -> Tensor:
        h = act(z)
        for block in rest:
            h = block(h)
        return F.cross_entropy(head(h), yb)

    gamma = norm.weight.detach()
    terms = bn_layer_terms(y, downstream, gamma, norm.bias.detach(), norm.eps)
    return terms, gamma


def simulate_mlp(
    data: Dataset,
    *,
    depth: int,
    lr: float,
    norm: str,
    width: int = 32,
    steps: int = 100,
    probe_every: int = 10,
    seed: int = 0,
) -> ProbeTrace:
    """The smoothing chapter's simulator: a small MLP trained and probed along the way.

    Builds ``bncore.experiments.nets.MLP(in_dim, width, depth, classes, norm=norm)`` and runs
    :func:`trace_landscape` with step sizes η ∈ {lr/2, lr, 2·lr} (the training rate and a
    factor of two either side), so that each probe shows how much the loss can move in a step
    of about the size the optimizer takes.
    """
    if depth < 1 or width < 1 or steps < 1:
        raise ValueError("depth, width and steps must be >= 1")
    return trace_landscape(
        lambda: MLP(data.in_dim, width, depth, data.num_classes, norm=norm),
        data, lr=lr, steps=steps, etas=lr * np.array([0.5, 1.0, 2.0]),
        probe_every=probe_every, seed=seed,
    )
