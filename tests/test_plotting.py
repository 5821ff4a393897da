"""Plotting takes results and draws them; it never runs a simulation (bncore.book.plotting)."""

from __future__ import annotations

import ast
import inspect
from importlib import import_module
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bncore.book import plotting
from bncore.experiments.explosion import GradientProfile
from bncore.experiments.signal_prop import SignalProp
from bncore.theory import gradient_explosion_rate, residual_stream_variance


def test_plotting_imports_only_result_types_from_experiments() -> None:
    # A simulation is a function of bncore.experiments; plotting may name only the classes that
    # hold what a simulation returned.
    tree = ast.parse(Path(plotting.__file__).read_text())
    imported = [
        (node.module, alias.name)
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bncore.experiments")
        for alias in node.names
    ]
    assert imported, "expected plotting to import the result types it draws"
    for module, name in imported:
        obj = getattr(import_module(module), name)
        assert inspect.isclass(obj), f"plotting imports {module}.{name}, which is not a result type"


def _stream(variant: str, depth: int, alpha: float | None, seeds: int = 3) -> SignalProp:
    q = np.tile(residual_stream_variance(depth, variant, alpha=alpha), (seeds, 1))  # (S, L + 1)
    q *= np.linspace(0.9, 1.1, seeds)[:, None]  # one line per seed, the mean still q_0 = 1
    zeros = np.zeros((seeds, depth))
    return SignalProp(sq_mean=np.zeros_like(q), var=q, branch_sq_mean=zeros, branch_var=zeros)


def test_draw_stream_variance_draws_the_given_measurement_and_the_prediction() -> None:
    sp = _stream("skipinit", depth=6, alpha=0.5)
    fig, ax = plt.subplots()
    try:
        assert plotting.draw_stream_variance(ax, sp, "skipinit", 0.5) is fig
        lines = ax.get_lines()
        assert len(lines) == 3 + 1  # one per seed, then the prediction
        for line, row in zip(lines[:3], sp.second_moment, strict=True):
            np.testing.assert_array_equal(line.get_ydata(), row)
        pred = residual_stream_variance(6, "skipinit", alpha=0.5, input_var=1.0)
        np.testing.assert_allclose(lines[3].get_ydata(), pred, rtol=1e-12)
        assert ax.get_yscale() == "log"
    finally:
        plt.close(fig)


def _profile(batch_size: int, activation: str, rate: float, depth: int = 20) -> GradientProfile:
    layers = np.arange(1, depth + 1)
    grad_w_sq = np.stack([s * rate ** (depth - layers) for s in (1.0, 2.0)])  # (S, L)
    return GradientProfile(
        batch_size=batch_size, width=64, depth=depth, activation=activation, eps=1e-5,
        weight_scale=1.0, normalize=True, seeds=(0, 1), grad_z_sq=np.ones((2, depth + 1)),
        grad_w_sq=grad_w_sq, act_var=np.ones((2, depth + 1)),
    )


def test_draw_gradient_profile_fits_the_given_profile_and_draws_the_theory_slope() -> None:
    theory = gradient_explosion_rate(8, "relu")
    profile = _profile(8, "relu", rate=1.3)
    fig, ax = plt.subplots()
    try:
        assert plotting.draw_gradient_profile(ax, profile) is fig
        (text,) = ax.texts
        assert "measured λ = 1.300" in text.get_text()
        assert f"theory (ε→0) λ = {theory:.3f}" in text.get_text()
        lines = ax.get_lines()
        assert len(lines) == 2 + 1 + 1  # per network, geometric mean, theory slope
        slope = lines[-1].get_ydata()
        np.testing.assert_allclose(slope[:-1] / slope[1:], theory, rtol=1e-12)
    finally:
        plt.close(fig)


@pytest.mark.parametrize(("batch_size", "activation"), [(2, "relu"), (8, "tanh")])
def test_draw_gradient_profile_omits_the_theory_outside_its_range(
    batch_size: int, activation: str
) -> None:
    fig, ax = plt.subplots()
    try:
        plotting.draw_gradient_profile(ax, _profile(batch_size, activation, rate=1.1))
        assert len(ax.get_lines()) == 2 + 1
        assert "theory" not in ax.texts[0].get_text()
    finally:
        plt.close(fig)
