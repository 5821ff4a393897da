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

    Three panels over training steps, two a row: (a) the range of ℓ(θ − ηg) over the step sizes
    η (and seeds) around the median, (b) the range of ‖∇ℓ(θ) − ∇ℓ(θ − ηg)‖, (c) the effective
    smoothness K_eff, with the range over seeds shaded; the legend fills the fourth cell.
    Colours from :data:`NORM_COLORS`.
    """
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 5.4))
    panels = axes.ravel()[:3]
    for norm, runs in traces.items():
        color, label = NORM_COLORS.get(norm, "k"), NORM_LABELS.get(norm, norm)
        step = runs[0].step
        losses = np.concatenate([r.losses.T for r in runs])  # (seeds·K, P)
        change = np.concatenate([r.grad_change.T for r in runs])
        beta = np.stack([r.beta for r in runs])  # (seeds, P)
        for ax, values in zip(panels, (losses, change, beta), strict=True):
            band(ax, step, values, color=color, label=label)
    titles = ("(a) loss along the gradient", "(b) gradient predictiveness",
              "(c) effective smoothness")
    ylabels = (r"$\ell(\theta-\eta g)$", r"$\|\nabla\ell(\theta)-\nabla\ell(\theta-\eta g)\|$",
               r"$K_{\mathrm{eff}}$")
    for ax, t, yl in zip(panels, titles, ylabels, strict=True):
        ax.set_title(t)
        ax.set_ylabel(yl)
        ax.set_yscale("log")
    for ax in panels[1:]:  # (b) and (c) have no panel below them
        ax.set_xlabel("training step")
    axes[1, 1].axis("off")
    handles, labels = panels[0].get_legend_handles_labels()
    axes[1, 1].legend(handles, labels, loc="center", title="median and range")
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
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def draw_landscape_run(ax: Axes, trace: ProbeTrace, norm: str) -> Figure:
    """One run's training loss ℓ(θ_t) with the range of ℓ(θ_t − ηg_t) over η shaded.

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
    """Measured E[x_l²] of residual networks (one line per seed) against the prediction of
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
    ax.set_xlabel("block $l$")
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
    with m ≥ 4, and the rate fitted over the middle three fifths of the layers is written in the
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


def percentile_figure(
    steps: np.ndarray, pct: dict[str, np.ndarray], unit: int, layer: int
) -> Figure:
    """Ioffe & Szegedy's Fig. 1(b, c): the 15th, 50th and 85th percentiles of one unit's input to
    its nonlinearity over training, one panel per normalization (at most two, side by side).

    ``pct[norm]``: ``(T, 3, C)`` percentiles of one run at ``steps``; ``unit`` picks the column,
    ``layer`` (0-based) only labels the axis. Used by the covariate-shift chapter.
    """
    norms = list(pct)[:2]
    fig, axes = plt.subplots(1, len(norms), figsize=(6.4, 3.0), sharey=True, squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        for q, style in zip(range(3), [":", "-", ":"], strict=True):
            ax.plot(steps, pct[norm][:, q, unit], style, color=NORM_COLORS[norm])
        ax.set(xlabel="step", title=NORM_LABELS[norm])
    axes[0, 0].set_ylabel(f"input of unit {unit}, layer {layer + 1}")
    axes[0, 0].plot([], [], "-", color="grey", label="median")
    axes[0, 0].plot([], [], ":", color="grey", label="15th, 85th pct.")
    axes[0, 0].legend(loc="upper left")
    fig.tight_layout()
    return fig


def noisy_bn_figure(
    eval_steps: np.ndarray,
    test_acc: dict[str, np.ndarray],
    probe_steps: np.ndarray,
    pct: dict[str, np.ndarray],
    unit: int,
    drifts: dict[str, np.ndarray],
    theory: float,
) -> Figure:
    """Santurkar et al.'s noisy-BN experiment in three panels: (a) test accuracy (median and
    range over seeds, ``test_acc[norm]: (seeds, evals)``), (b) one unit's median and 15–85th
    percentile band (``pct[norm]: (T, 3, C)``, BN and noisy BN), (c) the mean drift per layer
    (``drifts[norm]: (seeds, layers)``, bars: mean, whiskers: range) against ``theory``.

    Two panels a row: (a) and (b) on top, (c) across the bottom. Used by the covariate-shift
    chapter.
    """
    fig = plt.figure(figsize=(6.4, 5.8))
    grid = fig.add_gridspec(2, 2)
    ax_acc, ax_pct = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_drift = fig.add_subplot(grid[1, :])
    for norm, acc in test_acc.items():
        band(ax_acc, eval_steps, acc, color=NORM_COLORS[norm], label=NORM_LABELS[norm])
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="(a) test accuracy")
    ax_acc.legend(loc="lower right")
    for norm in ("bn", "noisy_bn"):
        p = pct[norm]
        ax_pct.fill_between(probe_steps, p[:, 0, unit], p[:, 2, unit], linewidth=0,
                            color=NORM_COLORS[norm], alpha=0.3)
        ax_pct.plot(probe_steps, p[:, 1, unit], color=NORM_COLORS[norm],
                    label=NORM_LABELS[norm])
    ax_pct.set(xlabel="step", ylabel=f"input of unit {unit}",
               title="(b) median, 15–85th pct.")
    ax_pct.legend(loc="lower right")
    x = np.arange(next(iter(drifts.values())).shape[1])
    width = 0.8 / len(drifts)
    for i, (norm, d) in enumerate(drifts.items()):
        mean = d.mean(axis=0)
        ax_drift.bar(x + (i - (len(drifts) - 1) / 2) * width, mean, width,
                     color=NORM_COLORS[norm], label=NORM_LABELS[norm],
                     yerr=[mean - d.min(axis=0), d.max(axis=0) - mean])
    ax_drift.axhline(theory, color=NORM_COLORS["theory"], ls="--", lw=1,
                     label="noise alone (theory)")
    ax_drift.set(yscale="log", xticks=x, xticklabels=[f"layer {i + 1}" for i in x],
                 ylabel="change of a unit's mean\nbetween records",
                 title="(c) drift of the unit means")
    lows = [d.min() for d in drifts.values()]
    highs = [d.max() for d in drifts.values()] + [theory]
    ax_drift.set_ylim(min(lows) / 3, max(highs) * 60)  # room for the legend
    ax_drift.legend(loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


__all__ += ["noisy_bn_figure", "percentile_figure"]
