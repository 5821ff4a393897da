"""The static-HTML panels carry every frame and their controls, and reach for nothing outside."""

from __future__ import annotations

import base64
import json
import re
from functools import partial

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from bncore.book import interactive, static_panels
from bncore.experiments.data import digits


def draw(width: float, kind: str) -> Figure:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, width], label=kind)
    return fig


def payload(html: str) -> dict:
    """The JSON block of frames and control labels embedded in a panel."""
    match = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S)
    assert match, "no JSON block of frames"
    return json.loads(match.group(1))


def assert_offline(html: str) -> None:
    """No URL of any scheme, no script or image loaded from elsewhere."""
    assert "://" not in html
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert all(src.startswith("data:image/png;base64,")
               for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', html))
    assert "<link" not in html and "@import" not in html


def test_slider_panel_holds_one_png_frame_per_setting_and_a_control_per_name():
    panel = static_panels.slider_panel(draw, {"width": [1.0, 2.0, 3.0], "kind": ["a", "b"]},
                                       labels={"width": "slope"})
    html = panel._repr_html_()
    data = payload(html)
    assert panel.frames == 6
    assert sorted(data["frames"]) == [f"{i},{j}" for i in range(3) for j in range(2)]
    for frame in data["frames"].values():
        assert base64.b64decode(frame).startswith(b"\x89PNG")
    assert data["labels"] == [["1", "2", "3"], ["a", "b"]]
    assert html.count('type="range"') == 1 and html.count("<select") == 1
    assert "slope" in html and 'addEventListener("input"' in html
    assert plt.get_fignums() == []  # every frame's figure was closed


def test_slider_panel_reaches_for_nothing_outside_the_page():
    assert_offline(static_panels.slider_panel(draw, {"width": [1.0, 2.0], "kind": ["a"]}).data)


def test_slider_panel_starts_at_the_requested_setting():
    panel = static_panels.slider_panel(draw, {"width": [1.0, 2.0, 3.0], "kind": ["a", "b"]},
                                       initial={"width": 3.0, "kind": "b"})
    frames = payload(panel.data)["frames"]
    assert f'src="data:image/png;base64,{frames["2,1"]}"' in panel.data
    assert 'value="2"' in panel.data and '<option value="1" selected>' in panel.data


def test_slider_panel_rejects_an_initial_value_it_has_no_frame_for():
    with pytest.raises(ValueError, match="not one of"):
        static_panels.slider_panel(draw, {"width": [1.0, 2.0], "kind": ["a"]},
                                   initial={"width": 5.0})


def test_simulator_displays_a_panel_fallback_when_widgets_are_off(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setenv("BNCORE_WIDGETS", "0")
    monkeypatch.setattr(IPython.display, "display", shown.append)
    panel = static_panels.slider_panel(draw, {"width": [1.0], "kind": ["a"]})
    interactive.simulator(draw, {"width": (1.0, 2.0)}, static=lambda: panel)
    assert shown == [panel]


def test_gradient_profile_slider_has_a_frame_per_batch_size_activation_and_eps():
    panel = static_panels.gradient_profile_slider((4, 8), ("relu",), (1e-5, 1.0), depth=6,
                                                  width=16, seeds=(0,))
    data = payload(panel.data)
    assert panel.frames == 4
    assert data["labels"] == [["4", "8"], ["relu"], ["10⁻⁵", "1"]]
    assert "batch size m" in panel.data
    assert_offline(panel.data)


def test_gradient_profile_slider_offers_eps_only_with_more_than_one_value():
    panel = static_panels.gradient_profile_slider((4, 8), ("relu",), depth=6, width=16,
                                                  seeds=(0,))
    assert panel.frames == 2
    assert payload(panel.data)["labels"] == [["4", "8"], ["relu"]]
    assert "BN's ε" not in panel.data


def test_landscape_slider_has_a_frame_per_depth_and_learning_rate():
    panel = static_panels.landscape_slider(digits(), depths=(1,), lrs=(0.1, 0.2), steps=3)
    assert panel.frames == 2
    assert payload(panel.data)["labels"] == [["1"], ["0.1", "0.2"]]
    assert_offline(panel.data)


def test_simulator_builds_a_live_panel_for_a_partial_when_widgets_are_on(monkeypatch):
    """The chapters pass ``partial(panel, data)``; ipywidgets needs a named function."""
    pytest.importorskip("ipywidgets")
    import ipywidgets

    built = []
    monkeypatch.setenv("BNCORE_WIDGETS", "1")
    monkeypatch.setattr(ipywidgets.widgets.interaction, "display", built.append)
    interactive.simulator(partial(draw, kind="a"), {"width": [1.0, 2.0]},
                          static=lambda: None)
    assert len(built) == 1 and isinstance(built[0], ipywidgets.interactive)
