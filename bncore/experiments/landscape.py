r"""Probes of the loss landscape along the gradient (Santurkar et al. 2018, §3 and Fig. 4).

At parameters θ with mini-batch loss ℓ and gradient g = ∇ℓ(θ), a probe moves along the gradient
direction by several step sizes η and measures, on the same batch,

- the **variation of the loss**: the values ℓ(θ − ηg), whose range over η says how far the loss
  can move in one step (Lipschitzness of the loss),
- the **gradient predictiveness**: the ℓ2 change ‖∇ℓ(θ) − ∇ℓ(θ − ηg)‖, small when the gradient
  at θ still describes the landscape a step away,
- the **effective smoothness** K_eff: max over η of ‖∇ℓ(θ) − ∇ℓ(θ − ηg)‖ / ‖ηg‖, the largest
  Lipschitz constant of the gradient seen along the step.

:func:`probe_landscape` measures one point and restores the model exactly
(:func:`preserved_state`: parameters, ``.grad``, BN running statistics, train/eval flags and
random-number states), so it can run in the middle of training; :func:`landscape_probe` wraps it
for ``bncore.experiments.train.train(probes=...)``, and
:func:`bncore.experiments.landscape_trace.trace_landscape` stacks the probes of a whole run.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.nets import probe_mode

__all__ = [
    "LandscapeProbe",
    "LossFn",
    "landscape_probe",
    "preserved_state",
    "probe_landscape",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# Saving and restoring everything a probe could touch


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


# The landscape probe


@dataclass
class LandscapeProbe:
    """What one probe measured along the gradient at θ (arrays indexed like ``etas``).

    Attributes
    ----------
    etas: (K,) step sizes η.
    loss0: ℓ(θ) on the batch.
    grad_norm: ‖g‖ = ‖∇ℓ(θ)‖ over all parameters.
    losses: (K,) ℓ(θ − ηg).
    grad_change: (K,) ‖∇ℓ(θ) − ∇ℓ(θ − ηg)‖ (gradient predictiveness; smaller is better).
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
        """(min, max) of ℓ(θ − ηg) over the step sizes: the "variation of the loss"."""
        return float(np.min(self.losses)), float(np.max(self.losses))

    @property
    def beta_smoothness(self) -> float:
        """Effective smoothness K_eff: max over η of ‖∇ℓ(θ) − ∇ℓ(θ − ηg)‖ / (η‖g‖)."""
        return float(np.max(self.grad_change / self.step_lengths))

    @property
    def relative_grad_change(self) -> np.ndarray:
        """(K,) ‖∇ℓ(θ) − ∇ℓ(θ − ηg)‖ / ‖∇ℓ(θ)‖, the change relative to the gradient's size."""
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

    For each η in ``etas`` the parameters are set to θ − η·g, with g = ∇ℓ(θ) on the batch
    ``(xb, yb)``, and ℓ(θ − ηg) and ∇ℓ(θ − ηg) are computed on the same batch (Santurkar et al.
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

