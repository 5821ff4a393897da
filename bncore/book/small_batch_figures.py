"""Figures of the small-batch chapter: the four normalization sets, error against batch, and
what one feature looks like in training and eval (the simulator panel and its static grid).

Plotting only: the numbers come from :mod:`bncore.experiments.small_batch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from bncore.book.interactive import small_multiples
from bncore.experiments.data import Dataset
from bncore.experiments.small_batch import feature_values

__all__ = [
    "NORM_AXES",
    "SMALL_BATCH_COLORS",
    "SMALL_BATCH_LABELS",
    "draw_feature_values",
    "error_vs_batch_figure",
    "feature_values_grid",
    "feature_values_panel",
    "norm_axes_figure",
]

#: Which cells of the (N, C, H×W) block one normalization set covers, as a predicate of
#: (n, c, s) for the set of sample 0, channel 0 (Wu & He 2018, Fig. 2); GN's group has ``size``
#: channels.
NORM_AXES = {
    "Batch norm": lambda n, c, s, size: c == 0,
    "Layer norm": lambda n, c, s, size: n == 0,
    "Instance norm": lambda n, c, s, size: n == 0 and c == 0,
    "Group norm": lambda n, c, s, size: n == 0 and c < size,
}

SMALL_BATCH_COLORS = {"bn": "#1f77b4", "brn": "#2ca02c", "ghost": "#9467bd", "gn": "#ff7f0e",
                      "ln": "#8c564b"}
SMALL_BATCH_LABELS = {"bn": "batch norm", "brn": "batch renorm", "ghost": "ghost BN",
                      "gn": "group norm", "ln": "layer norm"}


def _cube(ax: Axes, x: float, y: float, z: float, shaded: bool) -> None:
    """One unit cell at (x = C, y = H×W, z = N) in an oblique projection: front, top, side."""
    dx, dy = 0.45, 0.35  # the depth axis (N) drawn up and to the right
    ox, oy = x + z * dx, y + z * dy
    face = "#4c8bd6" if shaded else "white"
    faces = [
        [(ox, oy), (ox + 1, oy), (ox + 1, oy + 1), (ox, oy + 1)],
        [(ox, oy + 1), (ox + 1, oy + 1), (ox + 1 + dx, oy + 1 + dy), (ox + dx, oy + 1 + dy)],
        [(ox + 1, oy), (ox + 1 + dx, oy + dy), (ox + 1 + dx, oy + 1 + dy), (ox + 1, oy + 1)],
    ]
    for shade, pts in zip((1.0, 0.8, 0.65), faces, strict=True):
        poly = Polygon(pts, closed=True, edgecolor="#333333", linewidth=0.4,
                       facecolor=face, alpha=1.0 if shaded else 0.9)
        if shaded:
            poly.set_facecolor((0.30 * shade, 0.55 * shade, 0.84 * shade))
        ax.add_patch(poly)


def norm_axes_figure(n: int = 4, c: int = 6, s: int = 4, group_size: int = 2) -> Figure:
    """The (N, C, H×W) block four times, the cells of one normalization set shaded.

    Wu & He (2018), Fig. 2: batch norm over (N, H, W), layer norm over (C, H, W), instance norm
    over (H, W), group norm over (H, W) and C/G channels.
    """
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 4.6))
    for ax, (title, covered) in zip(axes.ravel(), NORM_AXES.items(), strict=True):
        for z in reversed(range(n)):  # back to front, so nearer cells cover farther ones
            for y in range(s):
                for x in reversed(range(c)):
                    _cube(ax, x, y, z, covered(z, x, y, group_size))
        ax.set_xlim(-1.2, c + n * 0.45 + 0.5)
        ax.set_ylim(-1.3, s + n * 0.35 + 0.6)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        ax.text(c / 2, -0.8, "C (channels)", ha="center", fontsize=9)
        ax.text(-0.5, s / 2, "H×W", ha="center", va="center", rotation=90, fontsize=9)
        ax.text(c + n * 0.45 * 0.6 + 0.4, n * 0.35 * 0.3 - 0.2, "N", fontsize=9)
    fig.tight_layout()
    return fig


def error_vs_batch_figure(
    ms: Sequence[int], means: Mapping[str, np.ndarray], sems: Mapping[str, np.ndarray],
) -> Figure:
    """Test error (%) against the batch per device m, mean ± s.e. over seeds, per norm."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for kind, mean in means.items():
        ax.errorbar(ms, 100 * np.asarray(mean), yerr=100 * np.asarray(sems[kind]), marker="o",
                    ms=4, capsize=3, color=SMALL_BATCH_COLORS[kind],
                    label=SMALL_BATCH_LABELS[kind])
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ms), [str(m) for m in ms])
    ax.invert_xaxis()
    ax.set_xlabel("batch per device $m$ (examples per batch statistic)")
    ax.set_ylabel("test error (%)")
    ax.legend(ncol=2)
    fig.tight_layout()
    return fig


def draw_feature_values(ax: Axes, train: np.ndarray, evaluated: np.ndarray) -> None:
    """Histograms of one normalized feature in training mode and in eval mode."""
    bins = np.linspace(-3.5, 3.5, 36).tolist()
    ax.hist(np.clip(train, -3.5, 3.5), bins=bins, density=True, alpha=0.6, color="#1f77b4",
            label="training")
    ax.hist(np.clip(evaluated, -3.5, 3.5), bins=bins, density=True, histtype="step",
            color="#d62728", linewidth=1.4, label="eval")
    ax.set_xlabel(r"normalized feature $\hat x$", fontsize=9)
    ax.set_yticks([])


def feature_values_panel(data: Dataset, norm: str, m: int) -> Figure:
    """The simulator: one norm at one batch per device, training against eval values."""
    fig, ax = plt.subplots(figsize=(5, 3))
    train, evaluated = feature_values(norm, m, data)
    draw_feature_values(ax, train.numpy(), evaluated.numpy())
    ax.set_title(f"{SMALL_BATCH_LABELS[norm]}, $m = {m}$", fontsize=10)
    ax.legend()
    return fig


def feature_values_grid(data: Dataset, ms: Sequence[int], norms: Sequence[str]) -> Figure:
    """Small multiples of :func:`feature_values_panel`: m (rows) × norm (columns)."""

    def draw(ax: Axes, m: int, norm: str) -> None:
        train, evaluated = feature_values(norm, m, data)
        draw_feature_values(ax, train.numpy(), evaluated.numpy())

    fig = small_multiples(draw, rows=("m", list(ms)), cols=("norm", list(norms)),
                          panel_size=(3.1, 1.7))
    fig.axes[0].legend(fontsize=8)
    return fig
