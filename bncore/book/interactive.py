"""Interactive "simulator" panels with a static fallback.

In Jupyter a panel is a set of ipywidgets controls that re-run a small experiment and redraw its
figure. In the rendered book (``BNCORE_WIDGETS=0``, see
:func:`bncore.experiments.runtime.widgets_enabled`) there is no kernel to re-run it, so the same
experiment is shown precomputed: as small multiples over a grid of settings, or as a slider over
precomputed frames that works in the static HTML (:mod:`bncore.book.static_panels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bncore.experiments.runtime import widgets_enabled

__all__ = ["simulator", "small_multiples"]


def small_multiples(
    draw: Callable[[Axes, Any, Any], None],
    rows: tuple[str, Sequence[Any]],
    cols: tuple[str, Sequence[Any]],
    *,
    panel_size: tuple[float, float] = (2.6, 2.1),
    sharey: bool = True,
) -> Figure:
    """A grid of panels: ``draw(ax, row_value, col_value)`` for each pair of settings.

    ``rows`` and ``cols`` are ``(name, values)``; the names label the grid's margins.
    """
    (rname, rvals), (cname, cvals) = rows, cols
    fig, axes = plt.subplots(
        len(rvals), len(cvals), squeeze=False, sharex=True, sharey=sharey,
        figsize=(panel_size[0] * len(cvals), panel_size[1] * len(rvals)),
    )
    for i, rv in enumerate(rvals):
        for j, cv in enumerate(cvals):
            ax = axes[i, j]
            draw(ax, rv, cv)
            if i == 0:
                ax.set_title(f"{cname} = {cv}", fontsize=9)
            if j == 0:
                ax.annotate(
                    f"{rname} = {rv}", xy=(-0.42, 0.5), xycoords="axes fraction",
                    rotation=90, ha="center", va="center", fontsize=9,
                )
    fig.tight_layout()
    return fig


def simulator(
    run: Callable[..., Figure | None],
    controls: dict[str, Any],
    static: Callable[[], object],
) -> None:
    """Show a live panel in Jupyter, or the static fallback in the book.

    Parameters
    ----------
    run
        Draws a figure for one setting, called with keyword arguments named as ``controls``.
    controls
        ipywidgets controls (or abbreviations such as ``(1, 10)`` or ``["a", "b"]``) passed to
        ``ipywidgets.interact_manual``.
    static
        Draws the fallback: a figure, typically :func:`small_multiples` over the same grid, or
        a slider over precomputed frames (:func:`bncore.book.static_panels.slider_panel`),
        which carries its own HTML.

    Either way the output is displayed by the notebook: the inline backend shows a figure, and
    any other fallback is displayed here.
    """
    if not widgets_enabled():
        shown = static()
        if shown is not None and not isinstance(shown, Figure):
            from IPython.display import display  # present wherever a notebook runs

            display(shown)
        return
    import ipywidgets  # optional (the book extra): imported only where a live panel is shown

    def panel(**setting: Any) -> Figure | None:  # a named function, whatever ``run`` is
        return run(**setting)  # (ipywidgets reads __name__, which a partial lacks)

    ipywidgets.interact_manual(panel, **controls)
