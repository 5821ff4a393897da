"""Drivers shared by the tests of the other norms (group, layer, instance, renorm, ghost).

- :data:`CASES`: (bncore layer, torch.nn layer, input shape) triples built by name, so one test
  holds every drop-in to its ``torch.nn`` twin.
- :func:`tolerance`: the float64 agreement bound, derived from the unit round-off.
- :func:`randomize` and :func:`run_both`: give two layers the same random parameters and run
  forward and backward on the same input and output gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import bncore

U = 2.0 ** -53  #: unit round-off of float64


def tolerance(m: int, scale: float = 4.0) -> float:
    """Bound on |bncore − torch| in float64 for outputs and gradients of size O(1).

    Each statistic is a sum of m terms (error ≤ m·u by the recursive-summation bound; torch's
    pairwise or vectorized order is better), the output and gradient are a few such sums
    combined and scaled by x̂, with |x̂| ≤ ``scale`` here, so 4·scale·m·u bounds the difference
    between two correct implementations; a formula difference (eps outside the root, a biased
    running variance, a wrong axis) is orders of magnitude above it.
    """
    return 4 * scale * max(m, 16) * U


F64: dict[str, Any] = {"dtype": torch.float64}

#: name → (bncore factory, torch factory, input shape, values per reduction set)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module], tuple[int, ...], int]] = {
    "GN2d_G2": (lambda: bncore.GroupNorm(2, 6, **F64), lambda: nn.GroupNorm(2, 6, **F64),
                (3, 6, 4, 5), 60),
    "GN1d_G1_noaffine": (lambda: bncore.GroupNorm(1, 4, affine=False, **F64),
                         lambda: nn.GroupNorm(1, 4, affine=False, **F64), (5, 4, 3), 12),
    "GN_flat_GC": (lambda: bncore.GroupNorm(4, 4, **F64), lambda: nn.GroupNorm(4, 4, **F64),
                   (5, 4, 7), 7),
    "GN3d_nobias": (lambda: bncore.GroupNorm(3, 6, bias=False, **F64),
                    lambda: nn.GroupNorm(3, 6, bias=False, **F64), (2, 6, 2, 3, 2), 24),
    "LN_last": (lambda: bncore.LayerNorm(8, **F64), lambda: nn.LayerNorm(8, **F64),
                (4, 3, 8), 8),
    "LN_2d_shape": (lambda: bncore.LayerNorm([3, 5], **F64),
                    lambda: nn.LayerNorm([3, 5], **F64), (4, 3, 5), 15),
    "LN_noaffine": (lambda: bncore.LayerNorm(6, elementwise_affine=False, **F64),
                    lambda: nn.LayerNorm(6, elementwise_affine=False, **F64), (6,), 6),
    "LN_nobias": (lambda: bncore.LayerNorm(6, bias=False, **F64),
                  lambda: nn.LayerNorm(6, bias=False, **F64), (2, 6), 6),
    "IN1d": (lambda: bncore.InstanceNorm1d(3, **F64), lambda: nn.InstanceNorm1d(3, **F64),
             (4, 3, 9), 9),
    "IN1d_unbatched": (lambda: bncore.InstanceNorm1d(3, affine=True, **F64),
                       lambda: nn.InstanceNorm1d(3, affine=True, **F64), (3, 9), 9),
    "IN2d_tracked": (
        lambda: bncore.InstanceNorm2d(3, affine=True, track_running_stats=True, **F64),
        lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True, **F64),
        (4, 3, 4, 5), 20),
    "IN2d_unbatched_tracked": (
        lambda: bncore.InstanceNorm2d(3, track_running_stats=True, momentum=None, **F64),
        lambda: nn.InstanceNorm2d(3, track_running_stats=True, momentum=None, **F64),
        (3, 4, 5), 20),
    "IN3d": (lambda: bncore.InstanceNorm3d(2, affine=True, **F64),
             lambda: nn.InstanceNorm3d(2, affine=True, **F64), (2, 2, 3, 2, 4), 24),
}


def randomize(ours: nn.Module, theirs: nn.Module, seed: int) -> None:
    """Random parameters and running statistics in ``theirs``, loaded into ``ours``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (*theirs.parameters(), *theirs.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5)
    ours.load_state_dict(theirs.state_dict())


def run_both(
    ours: nn.Module, theirs: nn.Module, shape: tuple[int, ...], seed: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """Forward and backward of both layers on one input: [y, dx, *dparams] of each."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
    results = []
    for layer in (ours, theirs):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1),
                         dtype=y.dtype)
        params = list(layer.parameters())
        grads = torch.autograd.grad(y, [xi, *params], dy)
        results.append([y.detach(), *grads])
    return results[0], results[1]


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    """The largest |a − b| (0 for empty tensors)."""
    return float((a - b).abs().max()) if a.numel() else 0.0


def close(a: Tensor, b: Tensor, m: int) -> bool:
    """Whether a and b agree to :func:`tolerance` (relative to max(1, |b|))."""
    scale = max(1.0, float(b.abs().max()) if b.numel() else 1.0)
    return max_abs_diff(a, b) <= tolerance(m) * scale and not math.isnan(max_abs_diff(a, b))
