"""Interactive panels for the static HTML book: sliders over precomputed frames, no kernel.

In Jupyter the simulators are ipywidgets panels (:func:`bncore.book.interactive.simulator`),
which need a running kernel. The rendered book has none, so here every setting of the controls
is computed once, when the page is built, and drawn as a PNG frame; :func:`slider_panel` embeds
the frames in one HTML output with a slider (or a menu) per control and a few lines of inline
JavaScript that swap the picture. Nothing is fetched from the network: the frames are
``data:`` URIs and the script is inline, so the page works offline, like the rest of the book.

The chapters' panels:

- :func:`gradient_profile_slider`: the gradient-explosion simulator (batch size m, activation,
  BN's ε), each frame the per-layer squared weight-gradient norms of fresh BN networks;
- :func:`landscape_slider`: the smoothing simulator (depth, learning rate η), each frame the
  training loss of an MLP with and without BN, with the range of ℓ(θ − η′g) shaded.

Frames of one panel share their axes, so that moving a slider shows what changes.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import itertools
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from bncore.book.claims import format_number
from bncore.book.plotting import NORM_LABELS, draw_gradient_profile, draw_landscape_run
from bncore.experiments.data import Dataset
from bncore.experiments.explosion import GradientProfile, simulate
from bncore.experiments.landscape_trace import ProbeTrace, simulate_mlp
from bncore.experiments.runtime import progress_enabled

__all__ = ["SliderPanel", "gradient_profile_slider", "landscape_slider", "slider_panel"]


@dataclasses.dataclass(frozen=True)
class SliderPanel:
    """A self-contained HTML panel; notebooks and myst-nb display it as ``text/html``.

    ``data`` is the HTML (the name ``IPython.display.HTML`` uses). The class only adds
    ``_repr_html_``, so that bncore needs no IPython outside a notebook.
    """

    data: str
    frames: int

    def _repr_html_(self) -> str:
        return self.data

_SCRIPT = """
(function () {
  var root = document.getElementById("%(uid)s");
  var data = JSON.parse(document.getElementById("%(uid)s-data").textContent);
  var img = root.querySelector("img");
  var inputs = root.querySelectorAll("[data-control]");
  function update() {
    var key = [];
    inputs.forEach(function (el) {
      var i = parseInt(el.value, 10);
      key.push(i);
      var out = root.querySelector("output[data-for='" + el.id + "']");
      if (out) { out.textContent = data.labels[parseInt(el.dataset.control, 10)][i]; }
    });
    var frame = data.frames[key.join(",")];
    if (frame) { img.src = "data:image/png;base64," + frame; }
  }
  inputs.forEach(function (el) {
    el.addEventListener("input", update);
    el.addEventListener("change", update);
  });
})();
"""

_STYLE = (
    "<style>.bncore-panel-controls{display:flex;flex-wrap:wrap;gap:.4em 1.4em;"
    "margin:.3em 0 .6em;font-size:.9em}.bncore-panel-controls label{display:flex;"
    "align-items:center;gap:.4em}.bncore-panel img{max-width:100%;height:auto}</style>"
)


def _label(value: Any) -> str:
    """A control value as the reader sees it: ``10⁻⁵`` rather than ``1e-05``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return format_number(float(value), 3)


def _png(fig: Figure, dpi: float) -> str:
    """``fig`` as a base64 PNG, without matplotlib's metadata (which names a URL)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slider_panel(
    draw: Callable[..., Figure],
    controls: Mapping[str, Sequence[Any]],
    *,
    labels: Mapping[str, str] | None = None,
    initial: Mapping[str, Any] | None = None,
    alt: str = "",
    dpi: float = 90.0,
) -> SliderPanel:
    """A figure with one control per setting, every frame drawn in advance: HTML for the book.

    Parameters
    ----------
    draw
        Draws the figure for one setting, called with one keyword argument per control.
        Each figure is closed after it is encoded, so that the notebook shows only the panel.
    controls
        ``name → values``. Numeric values get a slider, others (names, booleans) a menu. Every
        combination is drawn: the number of frames is the product of the lengths.
    labels
        The text before each control (default: its name).
    initial
        The setting shown first (default: the middle value of each control).
    alt
        The image's alternative text.
    dpi
        Resolution of the frames.

    Returns
    -------
    A :class:`SliderPanel` whose HTML holds the frames as base64 PNGs in a JSON block, the
    controls, and an inline script; it refers to nothing outside itself.
    """
    names = list(controls)
    values = [list(controls[n]) for n in names]
    if not names or any(len(v) == 0 for v in values):
        raise ValueError("slider_panel needs at least one control, each with at least one value")
    labels = dict(labels or {})
    start = []
    for name, vals in zip(names, values, strict=True):
        if initial is not None and name in initial:
            if initial[name] not in vals:
                raise ValueError(f"initial {name} = {initial[name]!r} is not one of {vals}")
            start.append(vals.index(initial[name]))
        else:
            start.append((len(vals) - 1) // 2)
    settings = list(itertools.product(*(range(len(v)) for v in values)))
    frames: dict[str, str] = {}
    for idx in tqdm(settings, desc="frames", disable=not progress_enabled()):
        fig = draw(**{n: v[i] for n, v, i in zip(names, values, idx, strict=True)})
        frames[",".join(map(str, idx))] = _png(fig, dpi)
        plt.close(fig)
    uid = f"bncore-panel-{uuid.uuid4().hex[:12]}"
    shown = [[_label(v) for v in vals] for vals in values]
    rows = []
    for k, (name, vals) in enumerate(zip(names, values, strict=True)):
        cid, text = f"{uid}-c{k}", html.escape(labels.get(name, name))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            field = (f'<input type="range" id="{cid}" data-control="{k}" min="0" '
                     f'max="{len(vals) - 1}" step="1" value="{start[k]}">'
                     f'<output data-for="{cid}">{html.escape(shown[k][start[k]])}</output>')
        else:
            options = "".join(
                f'<option value="{i}"{" selected" if i == start[k] else ""}>'
                f"{html.escape(s)}</option>" for i, s in enumerate(shown[k]))
            field = f'<select id="{cid}" data-control="{k}">{options}</select>'
        rows.append(f'<label for="{cid}">{text} {field}</label>')
    payload = json.dumps({"frames": frames, "labels": shown}).replace("</", "<\\/")
    first = frames[",".join(map(str, start))]
    page = (
        f'{_STYLE}<div class="bncore-panel" id="{uid}">'
        f'<div class="bncore-panel-controls">{"".join(rows)}</div>'
        f'<img src="data:image/png;base64,{first}" alt="{html.escape(alt)}">'
        f'<script type="application/json" id="{uid}-data">{payload}</script>'
        f"<script>{_SCRIPT % {'uid': uid}}</script></div>"
    )
    return SliderPanel(page, len(frames))


def _relative_to_last_layer(profile: GradientProfile) -> GradientProfile:
    """The profile with every network's ‖∂ℓ/∂W^l‖² divided by the geometric mean at l = L."""
    last = math.exp(float(np.log(profile.grad_w_sq[:, -1]).mean()))
    return dataclasses.replace(profile, grad_w_sq=profile.grad_w_sq / last)


def gradient_profile_slider(
    batch_sizes: Sequence[int] = (4, 8, 16, 32, 128),
    activations: Sequence[str] = ("linear", "relu"),
    eps_values: Sequence[float] = (1e-5,),
    *,
    depth: int = 50,
    width: int = 256,
    seeds: Sequence[int] = (0, 1, 2),
    device: torch.device | str | None = None,
) -> SliderPanel:
    """The gradient-explosion simulator for the HTML book: a slider over the batch size m,
    a menu for the activation, and one for BN's ε when more than one value is given (each
    frame costs a simulation; the chapter's ε-sweep covers ε).

    Each frame simulates fresh BN networks (:func:`bncore.experiments.explosion.simulate`, in
    float64) and draws ‖∂ℓ/∂W^l‖² per layer relative to the last layer, one thin line per
    network and their geometric mean in bold, with Yang et al.'s slope (dashed) and the fitted
    rate λ (:func:`bncore.book.plotting.draw_gradient_profile`). All frames share the y axis.
    """
    grid = list(itertools.product(batch_sizes, activations, eps_values))
    profiles = {
        key: _relative_to_last_layer(simulate(key[0], activation=key[1], width=width, depth=depth,
                                              eps=key[2], seeds=seeds, dtype=torch.float64,
                                              device=device))
        for key in tqdm(grid, desc="networks", disable=not progress_enabled())
    }
    lo = min(float(p.grad_w_sq.min()) for p in profiles.values())
    hi = max(float(p.grad_w_sq.max()) for p in profiles.values())

    def draw(m: int, activation: str, eps: float = eps_values[0]) -> Figure:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        draw_gradient_profile(ax, profiles[m, activation, eps])
        ax.set_ylim(lo / 3, hi * 3)
        ax.set_ylabel(r"$\|\partial\ell/\partial W^l\|^2$ / last layer's")
        ax.set_title(f"{activation}, m = {m}, ε = {_label(eps)}: dashed = theory slope")
        fig.tight_layout()
        return fig

    controls: dict[str, list[Any]] = {"m": list(batch_sizes), "activation": list(activations)}
    if len(eps_values) > 1:
        controls["eps"] = list(eps_values)
    return slider_panel(
        draw, controls,
        labels={"m": "batch size m", "activation": "activation", "eps": "BN's ε"},
        initial={"m": batch_sizes[len(batch_sizes) // 2], "activation": activations[-1]},
        alt="per-layer squared weight-gradient norms of BN networks at initialization",
    )


def landscape_slider(
    data: Dataset,
    depths: Sequence[int] = (2, 8),
    lrs: Sequence[float] = (0.1, 0.4, 1.6, 3.2),
    *,
    width: int = 32,
    steps: int = 100,
) -> SliderPanel:
    """The smoothing simulator for the HTML book: sliders for the depth and the learning rate.

    Each frame trains the same MLP without normalization and with BN
    (:func:`bncore.experiments.landscape_trace.simulate_mlp`) and draws both training losses
    with the range of ℓ(θ − η′g) over η′ ∈ {η/2, η, 2η} shaded
    (:func:`bncore.book.plotting.draw_landscape_run`). All frames share their axes.
    """
    grid = list(itertools.product(depths, lrs, ("none", "bn")))
    traces: dict[tuple[int, float, str], ProbeTrace] = {
        (d, lr, norm): simulate_mlp(data, depth=d, lr=lr, norm=norm, width=width, steps=steps)
        for d, lr, norm in tqdm(grid, desc="networks", disable=not progress_enabled())
    }
    finite = np.concatenate([np.ravel(t.losses)[np.isfinite(np.ravel(t.losses))]
                             for t in traces.values()])
    lo, hi = max(float(finite.min()), 1e-4) / 2, min(float(finite.max()) * 2, 1e3)

    def draw(depth: int, lr: float) -> Figure:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        for norm in ("none", "bn"):
            draw_landscape_run(ax, traces[depth, lr, norm], norm)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("training step")
        ax.set_ylabel(r"loss $\ell$; band: $\ell(\theta-\eta' g)$")
        ax.set_title(f"depth {depth}, η = {_label(lr)}: {NORM_LABELS['none']} vs "
                     f"{NORM_LABELS['bn']}")
        ax.legend(loc="lower left")
        fig.tight_layout()
        return fig

    return slider_panel(
        draw, {"depth": list(depths), "lr": list(lrs)},
        labels={"depth": "depth", "lr": "learning rate η"},
        alt="training loss with and without BN, and how far one step can move it",
    )
