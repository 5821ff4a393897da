"""The residual chapter's figures, drawn for the book's column (at most two panels a row).

Each function takes what the chapter measured (it never simulates) and returns the figure. A
figure with three panels puts them on a 2 × 2 grid and uses the fourth cell for the legend, so
that at the column's ~660 px every label stays at 9 pt or more.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bncore.book.plotting import NORM_COLORS, NORM_LABELS, band
from bncore.experiments.signal_prop import SignalProp
from bncore.theory import residual_stream_variance

__all__ = ["signal_propagation_figure", "stream_variance_figure"]

_STREAM_LABELS = {
    "bn": "BN",
    "none": "no normalization",
    "skipinit": r"SkipInit, $\alpha = 0$",
    "nf": r"NF, $\alpha = 0.2$",
    "skipinit_sqrt": r"SkipInit, $\alpha = 1/\sqrt{L}$",
}


def _legend_cell(ax: Axes, source: Axes) -> None:
    """Turn ``ax`` into a legend for the lines labelled on ``source``."""
    handles, labels = source.get_legend_handles_labels()
    ax.axis("off")
    ax.legend(handles, labels, loc="center", fontsize=9.5)


def stream_variance_figure(
    q: Mapping[str, np.ndarray],
    settings: Mapping[str, tuple[str, float | None]],
    frac: np.ndarray,
    pred_frac: np.ndarray,
) -> Figure:
    r"""The second moment q_l = E[x_l²] of the residual stream, and the share of the BN branch.

    ``q`` maps a setting's name (``"bn"``, ``"none"``, ``"skipinit"``, ``"skipinit_sqrt"``,
    ``"nf"``) to its measured q_l, shape ``(seeds, L + 1)``; ``settings`` maps the name to the
    (variant, α) of :func:`bncore.theory.residual_stream_variance`, whose prediction (from the
    measured mean q_0) is drawn dashed. ``frac``, ``(seeds, L)``, is E[r_l²]/E[x_l²] of the BN
    network and ``pred_frac`` its prediction 1/(q_0 + l). Panels: all five streams (log scale),
    the three slowest (linear scale), the BN branch's share (log–log), and the legend.
    """
    fig, axes = plt.subplots(2, 2, figsize=(6.6, 5.6))
    ax_all, ax_slow, ax_frac, ax_leg = axes.ravel()
    depth = next(iter(q.values())).shape[1] - 1
    ell = np.arange(depth + 1)
    slowest = ["nf", "skipinit_sqrt", "skipinit"]
    for ax, names in ((ax_all, list(_STREAM_LABELS)), (ax_slow, slowest)):
        for name in names:
            variant, alpha = settings[name]
            band(ax, ell, q[name], color=NORM_COLORS[variant], label=_STREAM_LABELS[name])
            if name == "skipinit_sqrt":
                ax.lines[-1].set_linestyle(":")
            pred = residual_stream_variance(depth, variant, alpha=alpha,
                                            input_var=float(q[name][:, 0].mean()))
            ax.plot(ell, pred, "--", color=NORM_COLORS["theory"], linewidth=1.0)
    ax_all.plot([], [], "--", color=NORM_COLORS["theory"], linewidth=1.0, label="theory")
    ax_all.set(yscale="log", xlabel="block $l$", ylabel=r"$q_l = E[x_l^2]$",
               title="all five (log scale)")
    ax_slow.set(xlabel="block $l$", ylabel=r"$q_l$", title="NF and SkipInit (linear)")
    blocks = np.arange(1, depth + 1)
    band(ax_frac, blocks, frac, color=NORM_COLORS["bn"])
    ax_frac.plot(blocks, pred_frac, "--", color=NORM_COLORS["theory"])
    ax_frac.set(xscale="log", yscale="log", xlabel="block $l$",
                ylabel=r"$E[r_l^2]\,/\,E[x_l^2]$", title=r"BN branch's share, $1/(q_0 + l)$")
    _legend_cell(ax_leg, ax_all)
    fig.tight_layout()
    return fig


def signal_propagation_figure(spp: Mapping[str, SignalProp]) -> Figure:
    """Signal-propagation plots (Brock et al. 2021) of the five kinds of residual block.

    ``spp`` maps a variant to what :func:`bncore.experiments.signal_prop.signal_propagation_seeds`
    measured. Panels: average channel squared mean, average channel variance, residual-branch
    variance (all per block, log scale, median and min–max band over the networks), and the
    legend. Fixup and SkipInit have zero branches at initialization and no curve in the third
    panel; SkipInit is dashed so that it shows on top of Fixup's identical flat line.
    """
    fig, axes = plt.subplots(2, 2, figsize=(6.6, 5.6))
    ax_mean, ax_var, ax_branch, ax_leg = axes.ravel()
    depth = next(iter(spp.values())).sq_mean.shape[1] - 1
    ell, blocks = np.arange(depth + 1), np.arange(1, depth + 1)
    for v in ("bn", "none", "fixup", "skipinit", "nf"):
        color, label = NORM_COLORS[v], NORM_LABELS[v]
        band(ax_mean, ell, spp[v].sq_mean, color=color, label=label)
        band(ax_var, ell, spp[v].var, color=color, label=label)
        if v not in ("fixup", "skipinit"):
            band(ax_branch, blocks, spp[v].branch_var, color=color, label=label)
        if v == "skipinit":
            for ax in (ax_mean, ax_var):
                ax.lines[-1].set_linestyle((0, (3, 3)))
    titles = ("avg. channel squared mean", "avg. channel variance", "residual-branch variance")
    for ax, title in zip((ax_mean, ax_var, ax_branch), titles, strict=True):
        ax.set(yscale="log", xlabel="block $l$", title=title)
    _legend_cell(ax_leg, ax_mean)
    fig.tight_layout()
    return fig
