"""The gradient-explosion chapter's figures, drawn for the book's column (two panels a row).

Each function takes what the chapter measured (it never simulates) and returns the figure. The
panels are 3.3 inches wide at most, so that at the column's ~660 px the 10 pt text of
:func:`bncore.book.plotting.use_book_style` displays at 9 pt or more; legends use 9 pt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bncore.book.plotting import ACTIVATION_COLORS, NORM_COLORS, plot_gradient_profile
from bncore.experiments.explosion import GradientProfile
from bncore.theory import RELU_EXPLOSION_LIMIT, gradient_explosion_rate

__all__ = [
    "depth_sweep_figure",
    "eps_sweep_figure",
    "gradient_profiles_figure",
    "rate_vs_batch_figure",
]

_LEGEND = 9.0


def gradient_profiles_figure(
    profiles: Mapping[tuple[str, int], GradientProfile],
    shown: Sequence[tuple[str, int, str]],
    skip: tuple[int, int],
) -> Figure:
    r"""Left: ‖∂ℓ/∂W^l‖² per layer against the theory's slope; right: the per-layer ratio.

    ``profiles`` maps (activation, batch size m) to a simulated profile; ``shown`` lists the
    (activation, m, colour) to draw; ``skip`` shades the boundary layers left out of the fit.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.6, 3.4))
    depth = 0
    for act, m, color in shown:
        prof = profiles[(act, m)]
        rate = gradient_explosion_rate(m, act)
        label = f"{act}, $m = {m}$"
        plot_gradient_profile(ax1, prof, rate=rate, color=color, label=label)
        layers, local = prof.local_rate("weight")
        ax2.plot(layers, local, color=color, label=label)
        ax2.axhline(rate, color=color, linestyle="--", linewidth=1)
        depth = prof.depth
    for lo, hi in [(1, 1 + skip[0]), (depth - skip[1], depth)]:
        ax2.axvspan(lo, hi, color="0.85", zorder=0)
    ax1.set_ylabel(r"$\|\partial\ell/\partial W^l\|_F^2$")
    ax1.legend(loc="upper right", fontsize=_LEGEND)
    ax2.set_xlabel("layer $l$")
    ax2.set_ylabel(r"$\|\nabla_{W^{l-1}}\ell\|^2 / \|\nabla_{W^{l}}\ell\|^2$")
    ax2.set_ylim(0.9, 2.2)
    fig.tight_layout()
    return fig


def rate_vs_batch_figure(
    batch_sizes: Sequence[int],
    meas: Mapping[str, np.ndarray],
    se: Mapping[str, np.ndarray],
    tolerance: float,
) -> Figure:
    r"""Left: Yang et al.'s λ(m) (lines) and the measured rates (±2 s.e.); right: the relative
    deviation in per cent, with the band ±``tolerance`` (a fraction) shaded.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.6, 3.4))
    m_fine = np.arange(4, max(batch_sizes) + 1)
    for act in meas:
        color = ACTIVATION_COLORS[act]
        th = np.array([gradient_explosion_rate(int(m), act) for m in batch_sizes])
        ax1.plot(m_fine, [gradient_explosion_rate(int(m), act) for m in m_fine], color=color,
                 label=f"{act}: theory")
        ax1.errorbar(batch_sizes, meas[act], yerr=2 * se[act], fmt="o", color=color, ms=4,
                     capsize=2, label=f"{act}: measured")
        ax2.errorbar(batch_sizes, 100 * (meas[act] / th - 1), yerr=200 * se[act] / th,
                     fmt="o-", color=color, ms=4, capsize=2, label=act)
    ax1.axhline(RELU_EXPLOSION_LIMIT, color=NORM_COLORS["theory"], linestyle=":", linewidth=1)
    ax1.text(max(batch_sizes), RELU_EXPLOSION_LIMIT + 0.05, r"$\pi/(\pi-1)$", ha="right",
             fontsize=10)
    ax1.axhline(1.0, color="0.6", linewidth=0.8)
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("batch size $m$")
    ax1.set_ylabel(r"rate $\lambda$ of $\|\nabla\ell\|^2$ per layer")
    ax1.legend(fontsize=_LEGEND)
    ax2.axhspan(-100 * tolerance, 100 * tolerance, color="0.9", zorder=0)
    ax2.axhline(0, color="0.5", linewidth=0.8)
    ax2.set_xscale("log", base=2)
    ax2.set_ylim(-9, 5)
    ax2.set_xlabel("batch size $m$")
    ax2.set_ylabel("measured / theory − 1 (%)")
    ax2.legend(fontsize=_LEGEND)
    fig.tight_layout()
    return fig


def eps_sweep_figure(
    eps_grid: Sequence[float],
    lam_eps: Mapping[str, np.ndarray],
    se_eps: Mapping[str, np.ndarray],
    var_eps: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    k: Mapping[str, float],
    lam_inf: float,
) -> Figure:
    r"""Left: λ against BN's ε (±2 s.e.) with Yang et al.'s ε → 0 rates (dashed) and the ReLU
    λ_∞ (dotted); right: the mid-depth batch variance against k − ε (dashed), where ``k`` maps
    an activation to the variance at which the forward signal collapses.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.6, 3.4))
    for act in lam_eps:
        color = ACTIVATION_COLORS[act]
        ax1.errorbar(eps_grid, lam_eps[act], yerr=2 * se_eps[act], fmt="o-", ms=4, capsize=2,
                     color=color, label=act)
        ax2.loglog(eps_grid, var_eps[act], "o-", ms=4, color=color, label=act)
    for act, kv in k.items():
        color = ACTIVATION_COLORS[act]
        ax1.axhline(gradient_explosion_rate(batch_size, act), color=color, linestyle="--",
                    linewidth=1)
        ax1.axvline(kv, color=color, linewidth=0.8, alpha=0.6)
        eps_line = np.logspace(-4, math.log10(0.97 * kv), 50)
        ax2.loglog(eps_line, kv - eps_line, color=color, linestyle="--", linewidth=1)
    ax1.axhline(lam_inf, color=ACTIVATION_COLORS["relu"], linestyle=":", linewidth=1)
    ax1.text(1.5e-4, lam_inf + 0.008, r"ReLU $\lambda_\infty$", fontsize=10, va="bottom")
    ax1.axhline(1.0, color="0.6", linewidth=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel(r"$\epsilon$")
    ax1.set_ylabel(rf"rate $\lambda$ ($m = {batch_size}$)")
    ax1.set_ylim(0.97, 1.75)
    ax1.legend(loc="upper right", fontsize=_LEGEND)
    ax2.set_ylim(1e-6, 3)  # the collapsed points continue far below
    ax2.set_xlabel(r"$\epsilon$")
    ax2.set_ylabel("batch variance at mid-depth")
    fig.tight_layout()
    return fig


def depth_sweep_figure(
    depths: Sequence[int],
    test_acc: np.ndarray,
    spread: np.ndarray,
    *,
    lam: float,
    l_star: float,
    steps: int,
) -> Figure:
    r"""Left: test accuracy against depth (dots: seeds, line: mean) with 16/ln λ dashed; right:
    ln(‖∇_{W^1}‖²/‖∇_{W^L}‖²) at initialization against (L − 1) ln λ.

    ``test_acc`` is ``(depths, seeds)``; ``spread`` holds one mean log-ratio per depth.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.6, 3.4))
    for j in range(test_acc.shape[1]):
        ax1.plot(depths, test_acc[:, j], "o", ms=3.5, color=NORM_COLORS["bn"], alpha=0.5)
    ax1.plot(depths, test_acc.mean(axis=1), "-", color=NORM_COLORS["bn"],
             label="BN MLP (mean)")
    ax1.axhline(0.1, color="0.5", linestyle=":", linewidth=1)
    ax1.text(max(depths) * 0.6, 0.04, "chance", ha="center", fontsize=10)
    ax1.axvline(l_star, color=NORM_COLORS["theory"], linestyle="--", linewidth=1)
    ax1.text(l_star + 1, 0.6, r"$16/\ln\lambda$", fontsize=10)
    ax1.set_xlabel("depth $L$ (BN blocks)")
    ax1.set_ylabel(f"test accuracy after {steps} steps")
    ax1.set_ylim(0, 1)
    ax1.legend(loc="upper right", fontsize=_LEGEND)
    ax2.plot(depths, spread, "o-", color=NORM_COLORS["bn"], label="measured at init")
    ax2.plot(depths, [(d - 1) * math.log(lam) for d in depths], "--",
             color=NORM_COLORS["theory"], label=r"$(L-1)\ln\lambda$")
    ax2.axhline(16, color="0.5", linestyle=":", linewidth=1)
    ax2.axvline(l_star, color=NORM_COLORS["theory"], linestyle="--", linewidth=1)
    ax2.set_xlabel("depth $L$")
    ax2.set_ylabel(r"$\ln(\|\nabla_{W^1}\ell\|^2/\|\nabla_{W^L}\ell\|^2)$")
    ax2.legend(loc="upper left", fontsize=_LEGEND)
    fig.tight_layout()
    return fig
