"""The pictures that teach: diagrams of batch norm drawn from code, each a matplotlib Figure.

Every other figure in the book is a measurement; these explain. They are drawn here, not in
the chapters, so that their symbols are the book's (see the notation page: x, x̂, y, γ, β,
μ_B, σ_B², ε, m, ℓ, δ) and stay consistent with the text:

- :func:`activation_histograms`: one layer's pre-activations, a few units across a batch,
  before and after BN (the opening chapter);
- :func:`network_diagram`: where BN sits in a network, and which values it normalizes over;
- :func:`computational_graph`: the forward graph of Ioffe & Szegedy (2015), §3, through which
  the backprop chapter derives the backward;
- :func:`projection_diagram`: BN's backward as a projection: for ε → 0, ∂ℓ/∂x is γ·s times
  the orthogonal projection of δ = ∂ℓ/∂y onto the complement of span{1, x̂}, drawn from the
  numbers of :func:`bncore.norm.numpy_bn.batch_norm_backward` for a channel of m = 3 values.

The axes that BN, LN, IN and GN normalize over are drawn by the small-batches chapter's helper.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, FancyBboxPatch, Rectangle

from bncore.book.claims import format_number
from bncore.book.plotting import NORM_COLORS
from bncore.norm import numpy_bn

__all__ = [
    "activation_histograms",
    "computational_graph",
    "network_diagram",
    "projection_diagram",
]

_UNIT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
_BN_FILL = "#dbe9f6"
_BOX_FILL = "#f2f2f2"


def _blank(ax: Axes) -> None:
    ax.set_position((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.axis("off")


def _box(ax: Axes, xy: tuple[float, float], text: str, *, width: float, height: float,
         fill: str = _BOX_FILL, fontsize: float = 10.0) -> None:
    """A rounded box centred at ``xy`` (axes coordinates) holding ``text``."""
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.008,rounding_size=0.02",
                                facecolor=fill, edgecolor="#444444", linewidth=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], *,
           color: str = "#444444", style: str = "-", label: str | None = None,
           label_offset: tuple[float, float] = (0.0, 0.0), shrink: float = 4.0,
           rad: float = 0.0) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": color, "linestyle": style,
                            "shrinkA": shrink, "shrinkB": shrink, "lw": 1.2,
                            "connectionstyle": f"arc3,rad={rad}"})
    if label is not None:
        mx = (start[0] + end[0]) / 2 + label_offset[0]
        my = (start[1] + end[1]) / 2 + label_offset[1]
        ax.text(mx, my, label, ha="center", va="center", fontsize=9, color=color)


def activation_histograms(before: np.ndarray, after: np.ndarray, *, bins: int = 20) -> Figure:
    """Histograms of a few units' values over one batch, before BN (left) and after (right).

    Parameters
    ----------
    before: (m, k) the pre-activations x of k units over a batch of m examples.
    after: (m, k) the same units after BN, x̂ (γ = 1, β = 0).

    Each unit has one colour in both panels: on the left every unit has its own batch mean μ_B
    and spread σ_B; on the right all of them are centred at 0 with unit spread.
    """
    before = np.asarray(before, dtype=float)
    after = np.asarray(after, dtype=float)
    if before.ndim != 2 or before.shape != after.shape:
        raise ValueError("before and after must both have shape (m, k), got "
                         f"{before.shape} and {after.shape}")
    k = before.shape[1]
    if not 1 <= k <= len(_UNIT_COLORS):
        raise ValueError(f"draw between 1 and {len(_UNIT_COLORS)} units, got {k}")
    fig, axes = plt.subplots(1, 2, figsize=(6.6, 2.9))
    panels = ((axes[0], before, "before BN: pre-activations $x$"),
              (axes[1], after, r"after BN: $\hat x = (x-\mu_B)/\sqrt{\sigma_B^2+\epsilon}$"))
    for ax, values, title in panels:
        edges = np.linspace(values.min(), values.max(), bins + 1)
        for j in range(k):
            ax.hist(values[:, j], bins=edges, histtype="stepfilled", alpha=0.3,
                    color=_UNIT_COLORS[j])
            ax.hist(values[:, j], bins=edges, histtype="step", color=_UNIT_COLORS[j],
                    label=f"unit {j + 1}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("value over the batch")
    axes[0].set_ylabel(f"examples (of m = {before.shape[0]})")
    axes[0].legend(loc="upper right")
    fig.tight_layout()
    return fig


def network_diagram(*, batch: int = 6, units: int = 5, unit: int = 2) -> Figure:
    """Where BN sits: ``Linear → BN → ReLU`` blocks, and what BN averages over.

    The top row is a fully connected network in the placement of Ioffe & Szegedy (2015), §3.2:
    BN acts on the pre-activation x = Wz, before the nonlinearity. The grid below zooms into
    one BN layer: a batch of ``batch`` examples (rows) by ``units`` units (columns). BN takes
    the mean μ_B and the variance σ_B² of each column, here column ``unit``, over the m
    examples of the batch, normalizes that column with them, and gives it back its own γ, β.
    """
    if not 0 <= unit < units:
        raise ValueError(f"unit must be in [0, {units}), got {unit}")
    fig, ax = plt.subplots(figsize=(6.6, 3.6))
    _blank(ax)
    names = [("Linear\n$W$", _BOX_FILL), ("BN\n$\\gamma, \\beta$", _BN_FILL),
             ("ReLU", _BOX_FILL), ("Linear\n$W$", _BOX_FILL), ("BN\n$\\gamma, \\beta$", _BN_FILL),
             ("ReLU", _BOX_FILL), ("head", _BOX_FILL)]
    xs = np.linspace(0.12, 0.86, len(names))
    top, width, height = 0.84, 0.085, 0.18
    for x, (text, fill) in zip(xs, names, strict=True):
        _box(ax, (x, top), text, width=width, height=height, fill=fill, fontsize=9)
    flow = ["$z$", "$x$", "$y$", "", "$x$", "$y$", "", r"$\ell$"]
    stops = [0.0, *xs, 1.0]
    for k, label in enumerate(flow):
        a = stops[k] + (width / 2 if k else 0.035)
        b = stops[k + 1] - (width / 2 if k < len(flow) - 1 else 0.035)
        _arrow(ax, (a, top), (b, top), shrink=1.0)
        ax.text((a + b) / 2, top + 0.035, label, ha="center", va="bottom", fontsize=10)
    # The zoom: one BN layer's input as a batch × units grid.
    x0, y0, cell = 0.13, 0.05, 0.06
    gw, gh = units * cell, batch * cell * 0.85
    for i in range(batch):
        for j in range(units):
            fill = NORM_COLORS["bn"] if j == unit else "white"
            ax.add_patch(Rectangle((x0 + j * cell, y0 + i * gh / batch), cell, gh / batch,
                                   facecolor=fill, alpha=0.55 if j == unit else 1.0,
                                   edgecolor="#666666", linewidth=0.6))
    bn_x = xs[1]
    for corner, gx in ((-width / 2, x0), (width / 2, x0 + gw)):
        ax.plot([bn_x + corner, gx], [top - height / 2 - 0.01, y0 + gh], color="#888888",
                linestyle=":", linewidth=1.0)
    ax.text(x0 - 0.015, y0 + gh / 2, f"$m$ = {batch}\nexamples", ha="right", va="center",
            fontsize=9)
    ax.text(x0 + gw / 2, y0 - 0.01, f"{units} units (channels) of $x$", ha="center",
            va="top", fontsize=9)
    tx = x0 + gw + 0.05
    ax.text(tx, y0 + gh * 0.8, "BN normalizes each unit over the batch:\n"
            r"$\mu_B$, $\sigma_B^2$ of its column,", ha="left", va="center", fontsize=9)
    ax.text(tx, y0 + gh * 0.42, r"$\hat x = (x-\mu_B)/\sqrt{\sigma_B^2+\epsilon}$,",
            ha="left", va="center", fontsize=10)
    ax.text(tx, y0 + gh * 0.12, r"then its own scale and shift: $y = \gamma\hat x + \beta$",
            ha="left", va="center", fontsize=9)
    return fig


def computational_graph() -> Figure:
    """The forward graph of one channel, x → μ_B, σ_B² → x̂ → y → ℓ (Ioffe & Szegedy 2015, §3).

    Each x_i reaches the loss along three paths: directly through x̂_i, through μ_B and through
    σ_B². The edge μ_B → σ_B² is dashed: its gradient multiplies Σ_i(x_i − μ_B), which is
    zero, so it carries nothing but round-off (the backprop chapter's first proposition).
    """
    fig, ax = plt.subplots(figsize=(6.6, 3.0))
    _blank(ax)
    aspect = 6.6 / 3.0  # circles in axes coordinates of a full-figure axes
    nodes = {
        "x": (0.07, 0.45, "$x_i$"),
        "mu": (0.3, 0.76, r"$\mu_B$"),
        "var": (0.52, 0.76, r"$\sigma_B^2$"),
        "xhat": (0.58, 0.32, r"$\hat x_i$"),
        "gamma": (0.7, 0.13, r"$\gamma$"),
        "beta": (0.86, 0.13, r"$\beta$"),
        "y": (0.78, 0.45, "$y_i$"),
        "loss": (0.95, 0.45, r"$\ell$"),
    }
    for key, (x, y, text) in nodes.items():
        fill = _BN_FILL if key in ("mu", "var", "xhat") else _BOX_FILL
        ax.add_patch(Ellipse((x, y), 0.07, 0.07 * aspect, facecolor=fill,
                             edgecolor="#444444", linewidth=1.0))
        ax.text(x, y, text, ha="center", va="center", fontsize=11)

    def at(key: str) -> tuple[float, float]:
        return nodes[key][0], nodes[key][1]

    shrink = 15.0
    _arrow(ax, at("x"), at("mu"), shrink=shrink, label=r"$\frac{1}{m}\sum_i x_i$",
           label_offset=(-0.07, 0.04))
    _arrow(ax, at("x"), at("var"), shrink=shrink, rad=-0.05)
    _arrow(ax, at("mu"), at("var"), shrink=shrink, style="--", color="#999999",
           label=r"carries $\sum_i (x_i-\mu_B) = 0$", label_offset=(0.0, 0.15))
    _arrow(ax, at("x"), at("xhat"), shrink=shrink)
    _arrow(ax, at("mu"), at("xhat"), shrink=shrink)
    _arrow(ax, at("var"), at("xhat"), shrink=shrink)
    _arrow(ax, at("xhat"), at("y"), shrink=shrink)
    _arrow(ax, at("gamma"), at("y"), shrink=shrink)
    _arrow(ax, at("beta"), at("y"), shrink=shrink)
    _arrow(ax, at("y"), at("loss"), shrink=shrink)
    ax.text(0.87, 0.6, r"$\delta_i = \partial\ell/\partial y_i$", ha="center", fontsize=9)
    ax.text(0.3, 0.2, "three paths from $x_i$ to $\\ell$:\n"
            r"via $\hat x_i$, via $\mu_B$, via $\sigma_B^2$", ha="center", va="center",
            fontsize=9)
    return fig


def projection_diagram(
    x: Sequence[float] = (0.3, -1.1, 2.0),
    delta: Sequence[float] = (0.96, -0.75, 0.32),
    *,
    gamma: float = 1.0,
    eps: float = 1e-12,
) -> Figure:
    """BN's backward as a projection, drawn from the numbers of one channel of m values.

    With s = (σ_B² + ε)^{−1/2}, the backward of :func:`bncore.norm.numpy_bn.batch_norm_backward`
    is ∂ℓ/∂x = γs·(P + (1 − ρ)Π_x̂)δ, where P projects onto {1, x̂}^⊥ and ρ = σ_B²/(σ_B² + ε).
    The figure splits γsδ into its part in span{1, x̂} (horizontal: the directions that shift
    or rescale the channel, which BN's output ignores) and its part orthogonal to them
    (vertical), and draws the backward's output, which keeps only the vertical part (up to
    1 − ρ, negligible at the default ε). The coordinates are the norms of the two parts, so the
    picture is exact for any m; with m = 3 the complement is a line.
    """
    xv = np.asarray(x, dtype=float).reshape(-1, 1)
    dv = np.asarray(delta, dtype=float).reshape(-1, 1)
    if xv.shape != dv.shape or xv.shape[0] < 3:
        raise ValueError("x and delta must have the same length m >= 3, got "
                         f"{xv.shape[0]} and {dv.shape[0]}")
    _, cache = numpy_bn.batch_norm_forward(xv, np.array([gamma]), np.zeros(1), eps)
    dx, _, _ = numpy_bn.batch_norm_backward(dv, cache)
    m = xv.shape[0]
    ones = np.ones(m) / np.sqrt(m)
    xhat = cache.xhat[:, 0] / np.linalg.norm(cache.xhat[:, 0])
    basis = np.stack([ones, xhat], axis=1)  # orthonormal: 1 ⟂ x̂
    scaled = gamma * float(cache.invstd[0]) * dv[:, 0]  # γ·s·δ

    def split(v: np.ndarray) -> tuple[float, float]:
        inside = basis @ (basis.T @ v)
        return float(np.linalg.norm(inside)), float(np.linalg.norm(v - inside))

    h, v = split(scaled)
    dh, dvert = split(dx[:, 0])
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    lim = 1.15 * max(h, v, dvert)
    ax.axhline(0.0, color="#888888", linewidth=1.0)
    ax.axvline(0.0, color="#888888", linewidth=1.0)
    arrow = {"arrowstyle": "-|>", "lw": 1.6, "shrinkA": 0, "shrinkB": 0}
    ax.annotate("", xy=(h, v), xytext=(0, 0), arrowprops={**arrow, "color": "#444444"})
    ax.annotate("", xy=(dh, dvert), xytext=(0, 0),
                arrowprops={**arrow, "color": NORM_COLORS["bn"], "lw": 2.4})
    ax.annotate("", xy=(h, 0.0), xytext=(0, 0), arrowprops={**arrow, "color": "#999999"})
    ax.plot([h, h], [0, v], linestyle="--", color="#999999", linewidth=1.0)
    ax.plot([0, h], [v, v], linestyle=":", color="#999999", linewidth=1.0)
    ax.text(h, v, r"  $\gamma s\,\delta$", ha="left", va="bottom", fontsize=10)
    ax.text(dh - 0.03 * lim, dvert * 0.5,
            r"$\partial\ell/\partial x$" + "\n" + r"$= \gamma s P\delta$", ha="right", va="center",
            fontsize=10, color=NORM_COLORS["bn"])
    ax.text(h / 2, -0.03 * lim, "removed: shifts and\nrescalings of the channel",
            ha="center", va="top", fontsize=9, color="#555555")
    ax.set_xlim(-0.55 * lim, lim)
    ax.set_ylim(-0.3 * lim, lim)
    ax.set_xlabel(r"component in span$\{\mathbf{1}, \hat x\}$")
    ax.set_ylabel(r"component in $\{\mathbf{1}, \hat x\}^\perp$")
    ax.set_title(f"one channel of m = {m} values, ε = {format_number(eps, 2)}", fontsize=10)
    ax.set_aspect("equal")
    ticks = [t for t in ax.get_xticks() if 0.0 <= t <= lim]  # norms: no negative ticks
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    fig.tight_layout()
    return fig
