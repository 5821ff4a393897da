"""The chapters' interactive panels: what each slider setting computes, and how it is drawn.

Each panel is a pair for :func:`bncore.book.interactive.simulator`: a ``*_panel`` function that
runs one setting (through :mod:`bncore.experiments`) and draws it (through
:mod:`bncore.book.plotting`), and a ``*_grid`` function that draws the static small multiples
the rendered book shows instead of the live controls. A notebook binds the data with
``functools.partial``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bncore.book.interactive import small_multiples
from bncore.book.plotting import draw_landscape_run
from bncore.experiments.data import Dataset
from bncore.experiments.landscape_trace import simulate_mlp

__all__ = ["landscape_grid", "landscape_panel"]


def landscape_panel(data: Dataset, lr: float, depth: int, bn: bool) -> Figure:
    """Train and probe one small MLP (:func:`~bncore.experiments.landscape_trace.simulate_mlp`) and
    draw its loss with the range of L(θ − ηg) shaded."""
    norm = "bn" if bn else "none"
    _, ax = plt.subplots(figsize=(5, 3))
    return draw_landscape_run(ax, simulate_mlp(data, depth=depth, lr=lr, norm=norm), norm)


def landscape_grid(data: Dataset, depths: Sequence[int], lrs: Sequence[float]) -> Figure:
    """Small multiples of :func:`landscape_panel`, both networks per panel: depth × η."""

    def draw(ax: Axes, depth: int, lr: float) -> None:
        for norm in ("none", "bn"):
            draw_landscape_run(ax, simulate_mlp(data, depth=depth, lr=lr, norm=norm), norm)

    return small_multiples(draw, rows=("depth", list(depths)), cols=("η", list(lrs)))
