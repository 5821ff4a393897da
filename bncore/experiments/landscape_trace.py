r"""Landscape probes over a training run, and the smoothing chapter's small simulator.

:func:`trace_landscape` trains a network with SGD and, every few steps, probes the landscape
along the gradient (:func:`bncore.experiments.landscape.probe_landscape`) without changing the
training trajectory. Its :class:`ProbeTrace` stacks, for probe points t and step sizes η,
ℓ(θ_t − ηg_t), ‖∇ℓ(θ_t) − ∇ℓ(θ_t − ηg_t)‖ and the effective smoothness K_eff

.. math::

    \beta_t = \max_\eta
    \frac{\|\nabla L(\theta_t) - \nabla L(\theta_t - \eta g_t)\|}{\eta\,\|g_t\|},

the curves of Santurkar et al. (2018), Fig. 4. :func:`simulate_mlp` is the same for a small MLP
probed at half, once and twice its learning rate: what the chapter's interactive panel runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from torch import nn

from bncore.experiments.data import Dataset
from bncore.experiments.landscape import LandscapeProbe, landscape_probe
from bncore.experiments.nets import MLP
from bncore.experiments.runtime import seed_everything
from bncore.experiments.train import train

__all__ = ["ProbeTrace", "simulate_mlp", "trace_landscape"]


@dataclass
class ProbeTrace:
    """Landscape probes of one training run, stacked (P probe points, K step sizes).

    Attributes
    ----------
    step: (P,) training steps at which the probes ran.
    etas: (K,) step sizes.
    losses: (P, K) ℓ(θ_t − ηg_t). loss0: (P,) ℓ(θ_t).
    grad_change: (P, K) ‖∇ℓ(θ_t) − ∇ℓ(θ_t − ηg_t)‖. grad_norm: (P,) ‖g_t‖.
    beta: (P,) effective smoothness K_eff at each probe point.
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
        """(P,) max − min of ℓ(θ_t − ηg_t) over η: the width of Fig. 4(a)'s band."""
        return self.losses.max(axis=1) - self.losses.min(axis=1)

    @property
    def max_grad_change(self) -> np.ndarray:
        """(P,) max over η of ‖∇ℓ(θ_t) − ∇ℓ(θ_t − ηg_t)‖: the top of Fig. 4(b)'s band."""
        return self.grad_change.max(axis=1)

    @property
    def max_relative_grad_change(self) -> np.ndarray:
        """(P,) max over η of ‖∇ℓ(θ_t) − ∇ℓ(θ_t − ηg_t)‖ / ‖∇ℓ(θ_t)‖."""
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
        partial(MLP, data.in_dim, width, depth, data.num_classes, norm=norm),
        data, lr=lr, steps=steps, etas=lr * np.array([0.5, 1.0, 2.0]),
        probe_every=probe_every, seed=seed,
    )
