"""The chapters' interactive panels: what each slider setting computes, and how it is drawn.

Each panel is a pair for :func:`bncore.book.interactive.simulator`: a ``*_panel`` function that
runs one setting (through :mod:`bncore.experiments`) and draws it (through
:mod:`bncore.book.plotting`), and a static view for the rendered book, which has no kernel: a
``*_grid`` function that draws small multiples, or a slider over precomputed frames from
:mod:`bncore.book.static_panels` (the gradient-explosion and smoothing panels). A notebook binds
the data with ``functools.partial``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bncore.book.interactive import small_multiples
from bncore.book.plotting import (
    NORM_COLORS,
    NORM_LABELS,
    draw_gradient_profile,
    draw_landscape_run,
    draw_stream_variance,
)
from bncore.experiments.data import Dataset
from bncore.experiments.explosion import GradientProfile, simulate
from bncore.experiments.landscape_trace import simulate_mlp
from bncore.experiments.lr_init_grid import LRInitGrid, lr_init_grid
from bncore.experiments.signal_prop import signal_propagation_seeds
from bncore.theory import residual_stream_variance

__all__ = [
    "gradient_profile_panel",
    "landscape_panel",
    "lr_init_panel",
    "lr_init_small_multiples",
    "stream_variance_grid",
    "stream_variance_panel",
]


def landscape_panel(data: Dataset, lr: float, depth: int, bn: bool) -> Figure:
    """Train and probe one small MLP (:func:`~bncore.experiments.landscape_trace.simulate_mlp`) and
    draw its loss with the range of ℓ(θ − ηg) shaded.
    """
    norm = "bn" if bn else "none"
    _, ax = plt.subplots(figsize=(5, 3))
    return draw_landscape_run(ax, simulate_mlp(data, depth=depth, lr=lr, norm=norm), norm)


def stream_variance_panel(
    alpha: float, depth: int, width: int, *, variant: str = "skipinit",
    seeds: Sequence[int] = (0, 1, 2), batch_size: int = 64,
) -> Figure:
    """Measure the residual stream of fresh networks
    (:func:`~bncore.experiments.signal_prop.signal_propagation_seeds`) and draw E[x_ℓ²] against
    the prediction (:func:`~bncore.book.plotting.draw_stream_variance`).
    """
    _, ax = plt.subplots(figsize=(4.5, 3))
    sp = signal_propagation_seeds(variant, list(seeds), width=width, depth=depth,
                                  batch_size=batch_size, alpha=alpha)
    return draw_stream_variance(ax, sp, variant, alpha)


def stream_variance_grid(
    widths: Sequence[int], alphas: Sequence[float], *, depth: int, variant: str = "skipinit",
    seeds: Sequence[int] = (0, 1, 2), batch_size: int = 64,
) -> Figure:
    """One panel per width (two a row), the values of α overlaid in colours: E[x_l²] of fresh
    networks (solid, one line per seed) against (1 + α²)^l·q_0 (dashed).
    """
    ncols = min(2, len(widths))
    nrows = -(-len(widths) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.2 * nrows), squeeze=False,
                             sharey=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(alphas)))
    for ax, width in zip(axes.ravel(), widths, strict=False):
        for alpha, color in zip(alphas, colors, strict=True):
            sp = signal_propagation_seeds(variant, list(seeds), width=width, depth=depth,
                                          batch_size=batch_size, alpha=alpha)
            q = sp.second_moment  # (seeds, depth + 1)
            ell = np.arange(depth + 1)
            ax.plot(ell, q.T, color=color, alpha=0.7, linewidth=1.0)
            pred = residual_stream_variance(depth, variant, alpha=alpha,
                                            input_var=float(q[:, 0].mean()))
            ax.plot(ell, pred, "--", color="0.15", linewidth=1.0)
            ax.plot([], [], color=color, label=f"α = {alpha:g}")
        ax.set(yscale="log", xlabel="block $l$", title=f"width {width}")
    axes[0, 0].set_ylabel(r"$q_l = E[x_l^2]$")
    axes[0, 0].plot([], [], "--", color="0.15", linewidth=1.0, label="theory")
    axes[0, 0].legend(fontsize=9, loc="upper left")
    for ax in axes.ravel()[len(widths):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _explosion_profile(
    batch_size: int, activation: str, depth: int, eps: float, width: int, seeds: Sequence[int]
) -> GradientProfile:
    """:func:`~bncore.experiments.explosion.simulate` in float64: over 100 layers the norms span
    more than float32's range (m = 4, or a large ε).
    """
    return simulate(batch_size, activation=activation, width=width, depth=depth, eps=eps,
                    seeds=seeds, dtype=torch.float64)


def gradient_profile_panel(
    batch_size: int = 16, depth: int = 50, eps: float = 1e-5, activation: str = "relu", *,
    width: int = 256, seeds: Sequence[int] = (0, 1, 2),
) -> Figure:
    """Simulate fresh BN MLPs and draw their weight-gradient profiles against Yang et al.'s rate
    (:func:`~bncore.book.plotting.draw_gradient_profile`), titled with the setting.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    draw_gradient_profile(ax, _explosion_profile(batch_size, activation, depth, eps, width, seeds))
    ax.set_ylabel(r"$\|\partial\ell/\partial W^l\|_F^2$")
    ax.set_title(f"{activation}, m = {batch_size}, ε = {eps:g}: dashed = theory slope")
    fig.tight_layout()
    return fig


def _draw_lr_init_cell(ax: Axes, grids: dict[str, LRInitGrid], i: int, j: int) -> None:
    """Mean test accuracy over seeds against steps for cell (η_i, a_j) of each grid."""
    for norm, g in grids.items():
        ax.plot(g.eval_step, g.test_acc[:, i, j].mean(-1), color=NORM_COLORS[norm],
                label=NORM_LABELS[norm])
    ax.set_ylim(0, 1)


def lr_init_panel(data: Dataset, lr: float, init_scale: float, norm: str = "both",
                  steps: int = 200, seeds: Sequence[int] = (0, 1)) -> Figure:
    """Train the MLP of :func:`~bncore.experiments.lr_init_grid.lr_init_grid` at one (η, a),
    with BN, without, or both, and draw test accuracy against steps.
    """
    norms = ("none", "bn") if norm == "both" else (norm,)
    grids = {n: lr_init_grid(data, [lr], [init_scale], seeds, norm=n, steps=steps)
             for n in norms}
    fig, ax = plt.subplots(figsize=(5, 3))
    _draw_lr_init_cell(ax, grids, 0, 0)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"η = {lr:g}, init scale a = {init_scale:g}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def lr_init_small_multiples(
    grids: dict[str, LRInitGrid], lr_index: Sequence[int], scale_index: Sequence[int]
) -> Figure:
    """Small multiples of :func:`lr_init_panel` drawn from runs already made: rows η, columns a."""
    g0 = next(iter(grids.values()))
    row = {f"{g0.lrs[i]:.2g}": i for i in lr_index}
    col = {f"{g0.scales[j]:.2g}": j for j in scale_index}

    def draw(ax: Axes, lr: str, scale: str) -> None:
        _draw_lr_init_cell(ax, grids, row[lr], col[scale])

    fig = small_multiples(draw, rows=("η", list(row)), cols=("a", list(col)),
                          panel_size=(2.3, 1.8))
    fig.axes[0].legend(loc="lower right", fontsize=8)
    fig.supxlabel("SGD step", fontsize=9)
    fig.supylabel("test accuracy", fontsize=9)
    fig.tight_layout()
    return fig
