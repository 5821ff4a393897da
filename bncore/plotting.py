"""The book's figure style and the plotting helpers that more than one chapter uses.

Colours are fixed per normalization kind so that "BN" looks the same in every figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes

__all__ = ["NORM_COLORS", "NORM_LABELS", "band", "use_book_style"]

NORM_COLORS: dict[str, str] = {
    "none": "#d62728",  # red: unnormalized
    "bn": "#1f77b4",  # blue: batch norm
    "noisy_bn": "#2ca02c",  # green: BN + injected noise
    "skipinit": "#9467bd",
    "fixup": "#ff7f0e",
    "nf": "#8c564b",
    "theory": "#222222",
}

NORM_LABELS: dict[str, str] = {
    "none": "no normalization",
    "bn": "batch norm",
    "noisy_bn": "noisy batch norm",
    "skipinit": "SkipInit",
    "fixup": "Fixup",
    "nf": "NF scaling",
    "theory": "theory",
}


def use_book_style() -> None:
    """Set matplotlib defaults for the book: compact, readable at ~700 px, no top/right spines."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "font.size": 10,
            "axes.titlesize": 10,
            "axes.labelsize": 10,
            "legend.fontsize": 8.5,
            "legend.frameon": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "lines.linewidth": 1.6,
        }
    )


def band(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    samples: np.ndarray,
    *,
    color: str,
    label: str | None = None,
    quantiles: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Draw the median of ``samples: (n_runs, len(x))`` with a shaded band between two quantiles.

    The default band is the full range (min to max), as in Santurkar et al. (2018), Fig. 4.
    """
    samples = np.asarray(samples)
    lo, hi = np.quantile(samples, quantiles, axis=0)
    ax.fill_between(x, lo, hi, color=color, alpha=0.25, linewidth=0)
    ax.plot(x, np.median(samples, axis=0), color=color, label=label)


