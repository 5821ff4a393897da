"""The book's figure style and the plotting helpers that more than one chapter uses.

Colours are fixed per normalization kind so that "BN" looks the same in every figure. Plotting
takes results and draws them; it never runs a simulation (the experiments compute, see
:mod:`bncore.book.panels` for the interactive panels that do both).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bncore.experiments.explosion import GradientProfile
from bncore.experiments.landscape_trace import ProbeTrace
from bncore.experiments.lr_sweep import LRSweep
from bncore.experiments.signal_prop import SignalProp
from bncore.theory import gradient_explosion_rate, residual_stream_variance

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


# --- Smoothing chapter (Santurkar et al. 2018, Fig. 4; Bjorck et al. 2018): landscape figures ---


def landscape_figure(traces: dict[str, list[ProbeTrace]]) -> Figure:
    """Santurkar et al. (2018), Fig. 4, for ``traces = {norm: [ProbeTrace per seed]}``
    (:class:`bncore.experiments.landscape_trace.ProbeTrace`).

    Three panels over training steps: (a) the range of L(θ − ηg) over the step sizes η (and
    seeds) around the median, (b) the range of ‖∇L(θ) − ∇L(θ − ηg)‖, (c) the effective
    β-smoothness, with the range over seeds shaded. Colours from :data:`NORM_COLORS`.
    """
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.3))
    for norm, runs in traces.items():
        color, label = NORM_COLORS.get(norm, "k"), NORM_LABELS.get(norm, norm)
        step = runs[0].step
        losses = np.concatenate([r.losses.T for r in runs])  # (seeds·K, P)
        change = np.concatenate([r.grad_change.T for r in runs])
        beta = np.stack([r.beta for r in runs])  # (seeds, P)
        band(axes[0], step, losses, color=color, label=label)
        band(axes[1], step, change, color=color, label=label)
        band(axes[2], step, beta, color=color, label=label)
    titles = ("(a) loss along the gradient", "(b) gradient predictiveness",
              "(c) effective β-smoothness")
    ylabels = (r"$L(\theta-\eta g)$", r"$\|\nabla L(\theta)-\nabla L(\theta-\eta g)\|$",
               r"$\max_\eta \|\Delta\nabla L\| / \|\eta g\|$")
    for ax, t, yl in zip(axes, titles, ylabels, strict=True):
        ax.set_title(t)
        ax.set_xlabel("training step")
        ax.set_ylabel(yl)
        ax.set_yscale("log")
    axes[0].legend(loc="upper right")
    fig.tight_layout()
    return fig


def lr_sweep_figure(sweeps: dict[str, LRSweep], *, threshold: float | None = None) -> Figure:
    """Final test accuracy against the learning rate for ``sweeps = {norm: LRSweep}``
    (:class:`bncore.experiments.lr_sweep.LRSweep`).

    The median over seeds is drawn with the min–max range shaded; crosses mark diverged runs
    and dotted verticals the largest rate at which every seed trained.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for norm, sw in sweeps.items():
        color, label = NORM_COLORS.get(norm, "k"), NORM_LABELS.get(norm, norm)
        band(ax, sw.lrs, sw.acc, color=color, label=label)
        ax.plot(sw.lrs, sw.acc.T, ".", color=color, alpha=0.5, markersize=4)
        s_idx, l_idx = np.nonzero(sw.diverged)
        if s_idx.size:
            ax.plot(sw.lrs[l_idx], np.zeros(l_idx.size), "x", color=color, markersize=6)
        best = sw.largest_stable_lr()
        assert isinstance(best, float)  # without per_seed it is one rate, a float
        if np.isfinite(best):
            ax.axvline(best, color=color, linestyle=":", linewidth=1.2)
    level = threshold if threshold is not None else next(iter(sweeps.values())).threshold
    ax.axhline(level, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def draw_landscape_run(ax: Axes, trace: ProbeTrace, norm: str) -> Figure:
    """One run's training loss L(θ_t) with the range of L(θ_t − ηg_t) over η shaded.

    Used by the smoothing chapter's simulator (live panel and static small multiples);
    returns the axes' figure. A diverged run is drawn up to its last probe, and a cross at the
    top of the panel marks the step where it blew up.
    """
    color, label = NORM_COLORS.get(norm, "k"), NORM_LABELS.get(norm, norm)
    ax.fill_between(trace.step, trace.losses.min(axis=1), trace.losses.max(axis=1),
                    color=color, alpha=0.25, linewidth=0)
    ax.plot(trace.step, trace.loss0, color=color, label=label)
    if trace.diverged:  # a cross at the top of the panel where the run blew up
        ax.plot(trace.last_step, 0.93, "x", color=color, markersize=8, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False)
    ax.set_yscale("log")
    return _figure_of(ax)


def _figure_of(ax: Axes) -> Figure:
    """The figure ``ax`` is on; the book's panels are drawn on axes of a Figure, not a SubFigure."""
    fig = ax.figure
    assert isinstance(fig, Figure), "expected axes of a Figure, not of a SubFigure"
    return fig


__all__ += ["draw_landscape_run", "landscape_figure", "lr_sweep_figure"]


# --- residual chapter (bncore.experiments.resnets, bncore.experiments.signal_prop) ---


def draw_stream_variance(
    ax: Axes, sp: SignalProp, variant: str, alpha: float | None = None
) -> Figure:
    """Measured E[x_ℓ²] of residual networks (one line per seed) against the prediction of
    :func:`bncore.theory.residual_stream_variance`, on a log axis; returns the axes' figure.

    ``sp`` is what :func:`bncore.experiments.signal_prop.signal_propagation_seeds` measured for
    the residual ``variant`` (and SkipInit's ``alpha``); the prediction starts from the measured
    mean E[x_0²]. Used by the residual chapter's SkipInit-α simulator.
    """
    q = sp.second_moment  # (S, L + 1)
    depth = q.shape[1] - 1
    ell = np.arange(depth + 1)
    color = NORM_COLORS.get(variant, "k")
    ax.plot(ell, q.T, color=color, alpha=0.6, linewidth=1.0)
    pred = residual_stream_variance(depth, variant, alpha=alpha, input_var=float(q[:, 0].mean()))
    ax.plot(ell, pred, "--", color=NORM_COLORS["theory"], linewidth=1.2)
    ax.set_yscale("log")
    # At least a factor 2 either side of the input, so that a flat stream is not zoomed into
    # its float noise; label decades only.
    ax.set_ylim(min(0.5, 0.8 * float(q.min())), max(2.0, 1.25 * float(q.max())))
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    ax.set_xlabel("block ℓ")
    return _figure_of(ax)


__all__ += ["draw_stream_variance"]


# --- gradient-explosion chapter (bncore.experiments.explosion, bncore.theory) ---

ACTIVATION_COLORS: dict[str, str] = {"linear": "#ff7f0e", "relu": "#1f77b4", "tanh": "#2ca02c"}


def plot_gradient_profile(
    ax: Axes,
    profile: GradientProfile,
    *,
    which: str = "weight",
    rate: float | None = None,
    color: str | None = None,
    label: str | None = None,
) -> Axes:
    """Per-layer squared gradient norms of a :class:`bncore.experiments.explosion.GradientProfile`.

    One thin line per network, their geometric mean in bold, and (if ``rate`` is given) the
    theory's slope, a line ∝ rate^(−l) through the geometric mean at the middle layer.
    """
    layers, sq = profile.norms(which)
    color = color or ACTIVATION_COLORS.get(profile.activation, "k")
    gmean = np.exp(np.log(sq).mean(axis=0))
    ax.plot(layers, sq.T, color=color, alpha=0.3, linewidth=0.8)
    ax.plot(layers, gmean, color=color, linewidth=1.8, label=label)
    if rate is not None:
        mid = len(layers) // 2
        line = gmean[mid] * float(rate) ** (layers[mid] - layers)
        ax.plot(layers, line, "--", color=NORM_COLORS["theory"], linewidth=1.1)
    ax.set_yscale("log")
    ax.set_xlabel("layer $l$")
    return ax


def draw_gradient_profile(ax: Axes, profile: GradientProfile) -> Figure:
    """Weight-gradient profiles of simulated BN MLPs against Yang et al.'s rate; returns the figure.

    ``profile`` is what :func:`bncore.experiments.explosion.simulate` measured. The theory's slope
    (ε → 0, :func:`bncore.theory.gradient_explosion_rate`) is drawn for linear and ReLU networks
    with B ≥ 4, and the rate fitted over the middle three fifths of the layers is written in the
    panel. Used by the gradient-explosion chapter's simulator.
    """
    b, act, depth = profile.batch_size, profile.activation, profile.depth
    theory = gradient_explosion_rate(b, act) if act in ("linear", "relu") and b >= 4 else None
    plot_gradient_profile(ax, profile, rate=theory)
    skip = max(1, depth // 5)
    fit = profile.fit("weight", skip=(skip, skip))
    text = f"measured λ = {fit.rate:.3f}"
    if theory is not None:
        text += f"\ntheory (ε→0) λ = {theory:.3f}"
    ax.text(0.97, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    return _figure_of(ax)


__all__ += ["ACTIVATION_COLORS", "draw_gradient_profile", "plot_gradient_profile"]
