"""Bisection and GDNP on a halfspace: the length by bisection, the direction by gradient
(bncore.experiments.gdnp_halfspace).
"""

from __future__ import annotations

import numpy as np
import pytest

from bncore.experiments.gdnp_halfspace import (
    HalfspaceProblem,
    bisection,
    gd_halfspace,
    gdnp_halfspace,
)
from bncore.experiments.gdnp_least_squares import (
    LeastSquaresProblem,
    gdnp_least_squares,
    spectrum_covariance,
)


def test_bisection_halves_the_bracket_exactly() -> None:
    trace = bisection(lambda x: x**3 - 2.0, 0.0, 4.0, 40)
    np.testing.assert_array_equal(trace.widths[1:] / trace.widths[:-1], 0.5)
    err = np.abs(trace.midpoints - 2.0 ** (1 / 3))
    # The midpoint is within half the bracket of the root.
    assert np.all(err <= trace.widths / 2 * (1 + 1e-12))
    assert trace.root == pytest.approx(2.0 ** (1 / 3), abs=4.0 / 2**41)


def test_bisection_rejects_non_bracketing_interval() -> None:
    with pytest.raises(ValueError, match="does not bracket"):
        bisection(lambda x: x + 10.0, 0.0, 1.0, 5)
    with pytest.raises(ValueError, match="lo < hi"):
        bisection(lambda x: x, 1.0, 0.0, 5)


def _halfspace(seed: int = 0, d: int = 6) -> tuple[HalfspaceProblem, np.ndarray]:
    rng = np.random.default_rng(seed)
    Sigma = spectrum_covariance(np.geomspace(1.0, 10.0, d), rng)
    m = rng.standard_normal(d)
    m *= 1.5 / np.sqrt(m @ np.linalg.solve(Sigma, m))
    problem = HalfspaceProblem(m=m, Sigma=Sigma)
    w0 = rng.standard_normal(d)
    return problem, (-w0 if problem.margin(w0) > 0 else w0)


def test_halfspace_derivatives_match_finite_differences() -> None:
    problem, w = _halfspace()
    g, h = 1.3, 1e-6
    fd_g = (problem.loss(w, g + h) - problem.loss(w, g - h)) / (2 * h)
    assert problem.dloss_dg(w, g) == pytest.approx(fd_g, rel=1e-7)
    fd_w = np.array(
        [(problem.loss(w + h * e, g) - problem.loss(w - h * e, g)) / (2 * h) for e in np.eye(6)]
    )
    np.testing.assert_allclose(problem.grad_w(w, g), fd_w, rtol=1e-6, atol=1e-9)


def test_gdnp_halfspace_bisection_halves_and_direction_converges() -> None:
    problem, w0 = _halfspace()
    trace = gdnp_halfspace(problem, w0, 60, bisection_steps=25)
    np.testing.assert_array_equal(trace.bisection_width[:, 1:] / trace.bisection_width[:, :-1], 0.5)
    assert np.all(trace.bisection_error <= trace.bisection_width / 2 * (1 + 1e-9))
    assert np.all(np.diff(trace.direction_error) <= 0)
    assert trace.direction_error[-1] < 1e-6 * trace.direction_error[0]


def test_gdnp_halfspace_direction_is_least_squares_gdnp() -> None:
    # The step size divides out the scalar factor of ∇_w f, so the directions coincide.
    problem, w0 = _halfspace(seed=1)
    hs = gdnp_halfspace(problem, w0, 40)
    ls = gdnp_least_squares(LeastSquaresProblem(problem.Sigma, problem.m, 1.0), w0, 40)
    np.testing.assert_allclose(hs.rho_gap, ls.gap, rtol=1e-8, atol=1e-14)


def test_gd_halfspace_gradient_matches_finite_differences() -> None:
    problem, w0 = _halfspace(seed=2)
    w0 = w0 / np.sqrt(w0 @ problem.Sigma @ w0)  # ‖w̃‖_Σ = 1
    step = 0.1
    trace = gd_halfspace(problem, w0, 1, step=step)
    grad = (w0 - trace.w) / step

    def f(w: np.ndarray) -> float:
        return problem.loss(w, float(np.sqrt(w @ problem.Sigma @ w)))

    h = 1e-6
    fd = np.array([(f(w0 + h * e) - f(w0 - h * e)) / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_halfspace_is_deterministic_and_validates() -> None:
    problem, w0 = _halfspace()
    a, b = gdnp_halfspace(problem, w0, 10), gdnp_halfspace(problem, w0, 10)
    np.testing.assert_array_equal(a.bisection_error, b.bisection_error)
    np.testing.assert_array_equal(a.w, b.w)
    with pytest.raises(ValueError, match="correct side"):
        gdnp_halfspace(problem, -w0, 5)
    with pytest.raises(ValueError, match="non-zero"):
        HalfspaceProblem(m=np.zeros(2), Sigma=np.eye(2))
