"""The teaching diagrams draw, carry the book's symbols, and are drawn from the right numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

from bncore.book import diagrams
from bncore.norm import numpy_bn


def texts(fig: Figure) -> str:
    """Every piece of text drawn in ``fig`` (titles, labels, legends, free text), joined."""
    fig.canvas.draw()  # lays out, and fails on mathtext that does not parse
    found = [t.get_text() for t in fig.findobj(Text) if not isinstance(t, Annotation)]
    return "\n".join(found)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_network_diagram_shows_bn_between_linear_and_relu_and_its_batch_axis():
    text = texts(diagrams.network_diagram(batch=6, units=5))
    for label in ("Linear", "BN", "ReLU", "head", r"$\ell$", "$m$ = 6", "5 units",
                  r"\mu_B", r"\sigma_B^2", r"y = \gamma\hat x + \beta"):
        assert label in text


def test_network_diagram_rejects_a_unit_outside_the_grid():
    with pytest.raises(ValueError, match="unit must be in"):
        diagrams.network_diagram(units=3, unit=3)


def test_computational_graph_has_every_node_and_the_vanishing_edge():
    text = texts(diagrams.computational_graph())
    for label in ("$x_i$", r"$\mu_B$", r"$\sigma_B^2$", r"$\hat x_i$", "$y_i$", r"$\gamma$",
                  r"$\beta$", r"$\ell$", r"\sum_i (x_i-\mu_B) = 0"):
        assert label in text


def test_activation_histograms_label_each_unit_and_both_sides():
    rng = np.random.default_rng(0)
    before = rng.normal([0.0, 3.0, -2.0], [1.0, 0.5, 2.0], size=(64, 3))
    after = (before - before.mean(0)) / before.std(0)
    fig = diagrams.activation_histograms(before, after)
    text = texts(fig)
    for label in ("before BN", "after BN", "unit 1", "unit 3", "m = 64"):
        assert label in text
    assert len(fig.axes) == 2


def test_activation_histograms_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        diagrams.activation_histograms(np.zeros((8, 2)), np.zeros((8, 3)))


def test_projection_diagram_draws_the_backward_of_numpy_bn_as_the_orthogonal_part():
    x = np.array([0.3, -1.1, 2.0])
    delta = np.array([0.96, -0.75, 0.32])
    fig = diagrams.projection_diagram(x, delta, gamma=2.0)
    text = texts(fig)
    for label in (r"\gamma s\,\delta", r"\partial\ell/\partial x", "span", "perp", "m = 3"):
        assert label in text
    # The backward keeps exactly the part of γsδ orthogonal to 1 and x̂ (ε → 0).
    _, cache = numpy_bn.batch_norm_forward(x[:, None], np.array([2.0]), np.zeros(1), 1e-12)
    dx = numpy_bn.batch_norm_backward(delta[:, None], cache)[0][:, 0]
    ones, xhat = np.ones(3) / np.sqrt(3), cache.xhat[:, 0] / np.linalg.norm(cache.xhat[:, 0])
    g = 2.0 * cache.invstd[0] * delta
    orthogonal = g - ones * (ones @ g) - xhat * (xhat @ g)
    np.testing.assert_allclose(dx, orthogonal, atol=1e-9)


def test_projection_diagram_needs_three_values():
    with pytest.raises(ValueError, match="m >= 3"):
        diagrams.projection_diagram([1.0, 2.0], [0.5, 0.1])
