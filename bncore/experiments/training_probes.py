r"""Diagnostics a practitioner can read during training (the kit of Karpathy's makemore, part 3).

Probes with the signature ``probe(model, xb, yb, step)`` of :func:`bncore.experiments.train.train`
(called after the backward pass, before the update), for the networks of
:mod:`bncore.experiments.nets`:

- :func:`activation_probe`: per block, a histogram of the activations (the outputs of the
  nonlinearity) on a fixed probe batch and the **saturated fraction**: for tanh, the share of
  values with \|tanh z\| > ``threshold`` (where tanh′ = 1 − tanh² < 1 − threshold², so the
  gradient through the unit nearly vanishes); for ReLU, the share of exact zeros.
- :func:`ratio_probe`: per weight matrix W (every block's and the head's), the
  **gradient-to-data ratio** std(∇W)/std(W) and, for plain SGD with learning rate η, the
  **update-to-data ratio** η·std(∇W)/std(W), the relative size of the step. Karpathy's rule of
  thumb puts log₁₀ of the latter near −3.

:func:`stack_records` turns a probe's records into arrays over time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bncore.experiments.nets import layer_weights, probe_mode

__all__ = ["activation_probe", "ratio_probe", "saturated_fraction", "stack_records"]

Probe = Callable[[nn.Module, Tensor, Tensor, int], dict[str, Any]]


def saturated_fraction(a: Tensor, activation: str, threshold: float = 0.97) -> float:
    r"""Share of activations ``a`` that pass (almost) no gradient: \|a\| > threshold for tanh,
    a = 0 for ReLU, a(1 − a) < threshold·(1 − threshold) for sigmoid (a near 0 or 1).
    """
    if activation == "tanh":
        return float((a.abs() > threshold).float().mean())
    if activation == "relu":
        return float((a == 0).float().mean())
    if activation == "sigmoid":
        return float((a * (1 - a) < threshold * (1 - threshold)).float().mean())
    raise ValueError(f"no saturation defined for activation {activation!r}")


def activation_probe(x_probe: Tensor, bins: Sequence[float] | np.ndarray) -> Probe:
    """A probe: ``{"hist": (depth, len(bins) − 1) counts, "saturated": (depth,)}`` of every
    block's activations on ``x_probe``, in the model's current mode, without side effects.
    """
    edges = np.asarray(bins, dtype=float)

    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int) -> dict[str, Any]:
        x = x_probe.to(next(model.parameters()).device)
        with probe_mode(model), torch.no_grad():
            _, pre = model.forward_collect(x)  # type: ignore[operator]
            acts = [block.act(z) for block, z in zip(model.blocks, pre, strict=True)]  # type: ignore[arg-type]
        kind = str(getattr(model, "activation", "relu"))
        hist = np.stack([np.histogram(a.double().cpu().numpy(), edges)[0] for a in acts])
        return {"hist": hist, "saturated": np.array([saturated_fraction(a, kind) for a in acts])}

    return probe


def ratio_probe(lr: float) -> Probe:
    """A probe: ``{"grad_data": (L,), "update_data": (L,)}`` over the L weight matrices:
    std(∇W)/std(W) and lr·std(∇W)/std(W) (the step of plain SGD relative to the weights).
    """
    def probe(model: nn.Module, xb: Tensor, yb: Tensor, step: int) -> dict[str, Any]:
        ratios = []
        for w in layer_weights(model):
            g = w.grad if w.grad is not None else torch.zeros_like(w)
            ratios.append(float(g.detach().std() / w.detach().std()))
        r = np.array(ratios)
        return {"grad_data": r, "update_data": lr * r}

    return probe


def stack_records(records: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """The entry ``key`` of each record, stacked along a new first (time) axis."""
    if not records:
        raise ValueError("stack_records: no records")
    return np.stack([np.asarray(r[key]) for r in records])
