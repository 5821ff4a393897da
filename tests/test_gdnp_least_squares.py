"""GDNP and GD on least squares: the length–direction reparametrization, ρ and its
gradient, the rate bound of Kohler et al. (2019) (bncore.experiments.gdnp_least_squares).
"""

from __future__ import annotations

import numpy as np
import pytest

from bncore import theory
from bncore.experiments.gdnp_least_squares import (
    LeastSquaresProblem,
    bn_least_squares_grad_w,
    bn_linear_loss,
    gd_least_squares,
    gdnp_least_squares,
    least_squares_from_data,
    make_least_squares_data,
    optimal_gain,
    rayleigh_gradient,
    rayleigh_quotient,
    spectrum_covariance,
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_least_squares_data(n=400, d=5, kappa=20.0, noise=0.3, seed=0)


def _random_problem(d: int, seed: int, kappa: float = 30.0) -> LeastSquaresProblem:
    rng = np.random.default_rng(seed)
    S = spectrum_covariance(np.geomspace(1.0, kappa, d), rng)
    return LeastSquaresProblem(S=S, u=rng.standard_normal(d), ey2=1e3)


# --- the reparametrization and ρ ----------------------------------------------------------


def test_bn_of_linear_unit_is_the_length_direction_reparametrization(data) -> None:
    X, y = data
    problem = least_squares_from_data(X, y)
    w = np.array([0.3, -1.0, 2.0, 0.1, 0.5])
    g = 1.7
    # γ·BN(Xw) = X w̃ with w̃ = γ w/‖w‖_S, so the two losses agree.
    w_tilde = g * w / np.sqrt(w @ problem.S @ w)
    direct = np.mean((y - X @ w_tilde) ** 2)
    assert bn_linear_loss(X, y, w, g) == pytest.approx(direct, rel=1e-10)
    assert bn_linear_loss(X, y, 7.0 * w, g) == pytest.approx(direct, rel=1e-10)


def test_rho_formula_matches_brute_force_minimum_over_length(data) -> None:
    X, y = data
    problem = least_squares_from_data(X, y)
    rng = np.random.default_rng(1)
    for _ in range(3):
        w = rng.standard_normal(5)
        # |g*| ≤ √E[y²] by Cauchy–Schwarz, so the grid covers the minimizer.
        r = np.sqrt(problem.ey2)
        grid = np.linspace(-r, r, 2001)
        brute = min(bn_linear_loss(X, y, w, g) for g in grid)
        step = grid[1] - grid[0]
        # f is quadratic in g with curvature 2: the grid minimum is within (Δ/2)² of the true one.
        expected = problem.ey2 + rayleigh_quotient(w, problem.S, problem.u)
        assert expected - 1e-10 <= brute <= expected + (step / 2) ** 2 + 1e-10
        g_star = optimal_gain(w, problem.S, problem.u)
        assert bn_linear_loss(X, y, w, g_star) == pytest.approx(expected, rel=1e-10)


def test_rho_is_scale_invariant_and_minimized_at_least_squares_solution() -> None:
    problem = _random_problem(4, 2)
    w = np.array([1.0, 2.0, -1.0, 0.5])
    assert rayleigh_quotient(-3.0 * w, problem.S, problem.u) == pytest.approx(
        rayleigh_quotient(w, problem.S, problem.u), rel=1e-13
    )
    assert rayleigh_quotient(problem.w_star, problem.S, problem.u) == pytest.approx(
        problem.rho_star, rel=1e-13
    )
    # E[y²] + ρ* is the least-squares minimum.
    assert problem.ey2 + problem.rho_star == pytest.approx(problem.loss(problem.w_star), rel=1e-12)


def test_gradient_at_optimal_length_is_rayleigh_gradient_orthogonal_to_w() -> None:
    problem = _random_problem(6, 3)
    S, u = problem.S, problem.u
    w = np.random.default_rng(4).standard_normal(6)
    g = optimal_gain(w, S, u)
    grad = bn_least_squares_grad_w(w, g, S, u)
    np.testing.assert_allclose(grad, rayleigh_gradient(w, S, u), rtol=1e-12, atol=1e-14)
    assert abs(w @ grad) <= 1e-12 * np.linalg.norm(w) * np.linalg.norm(grad)
    # Central finite differences of ρ.
    h = 1e-6
    fd = np.array(
        [
            (rayleigh_quotient(w + h * e, S, u) - rayleigh_quotient(w - h * e, S, u)) / (2 * h)
            for e in np.eye(6)
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# --- GDNP and GD on least squares ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_gdnp_rate_bound_holds_on_small_instances(seed: int) -> None:
    problem = _random_problem(5, seed)
    w0 = np.random.default_rng(100 + seed).standard_normal(5)
    trace = gdnp_least_squares(problem, w0, 300)
    bound = theory.kohler_gdnp_bound(trace.gap[0], problem.mu, problem.L, 300)
    scale = abs(problem.rho_star)
    # Below ~1e-12·|ρ*| the gap ρ − ρ* is round-off (a difference of two numbers of size |ρ*|).
    keep = trace.gap > 1e-12 * scale
    assert np.all(trace.gap[keep] <= bound[keep] * (1 + 1e-9))
    # Step by step, too: each step contracts the gap by at most (1 − μ/L)².
    ratio = trace.gap[1:][keep[:-1] & keep[1:]] / trace.gap[:-1][keep[:-1] & keep[1:]]
    assert np.all(ratio <= (1 - problem.mu / problem.L) ** 2 * (1 + 1e-9))


def test_gdnp_without_factor_two_can_violate_the_bound() -> None:
    # S with a near-degenerate top and u with no weight on the top directions (in S^{-1/2}
    # coordinates): the compressed spectrum reaches almost L, so |1 − 2θ/L| ≈ 1.
    S = np.diag([1.0, 3.0, 9.9, 10.0])
    u = np.array([1.0, 1.0, 0.01, 0.01])
    problem = LeastSquaresProblem(S=S, u=u, ey2=10.0)
    w0 = np.array([1.0, -0.5, 1.0, 1.0])
    one = gdnp_least_squares(problem, w0, 300, factor=1.0)
    bound = theory.kohler_gdnp_bound(one.gap[0], problem.mu, problem.L, 300)
    assert theory.gdnp_asymptotic_rate(S, u, factor=1.0) > (1 - problem.mu / problem.L) ** 2
    assert np.any(one.gap > 1.5 * bound)
    # The same start with the paper's factor 2 stays below the same bound.
    two = gdnp_least_squares(problem, w0, 300, factor=2.0)
    keep = two.gap > 1e-12 * abs(problem.rho_star)
    assert two.gap[0] == one.gap[0]
    assert np.all(two.gap[keep] <= bound[keep] * (1 + 1e-9))


def test_gd_matches_closed_form_iteration() -> None:
    problem = _random_problem(4, 5)
    w0 = np.array([0.5, -1.0, 0.0, 2.0])
    trace = gd_least_squares(problem, w0, 25)
    M = np.eye(4) - problem.S / problem.L
    e = np.linalg.matrix_power(M, 25) @ (w0 - problem.w_star)
    np.testing.assert_allclose(trace.w, problem.w_star + e, rtol=1e-10, atol=1e-12)
    assert trace.gap[-1] == pytest.approx(e @ problem.S @ e, rel=1e-10)


def test_gdnp_and_gd_are_deterministic(data) -> None:
    X2, y2 = make_least_squares_data(n=400, d=5, kappa=20.0, noise=0.3, seed=0)
    np.testing.assert_array_equal(data[0], X2)
    np.testing.assert_array_equal(data[1], y2)
    problem = least_squares_from_data(*data)
    w0 = np.ones(5)
    a, b = gdnp_least_squares(problem, w0, 50), gdnp_least_squares(problem, w0, 50)
    np.testing.assert_array_equal(a.gap, b.gap)
    np.testing.assert_array_equal(a.w, b.w)
    c, d = gd_least_squares(problem, w0, 50), gd_least_squares(problem, w0, 50)
    np.testing.assert_array_equal(c.gap, d.gap)
    X3, _ = make_least_squares_data(n=400, d=5, kappa=20.0, noise=0.3, seed=1)
    assert not np.array_equal(data[0], X3)


def test_least_squares_validation() -> None:
    with pytest.raises(ValueError, match="positive definite"):
        LeastSquaresProblem(S=np.diag([1.0, -1.0]), u=np.ones(2), ey2=1.0)
    with pytest.raises(ValueError, match="symmetric"):
        LeastSquaresProblem(S=np.array([[1.0, 0.5], [0.0, 1.0]]), u=np.ones(2), ey2=1.0)
    with pytest.raises(ValueError, match="shape"):
        LeastSquaresProblem(S=np.eye(2), u=np.ones(3), ey2=1.0)
    problem = LeastSquaresProblem(S=np.eye(2), u=np.ones(2), ey2=1.0)
    with pytest.raises(ValueError, match="non-zero"):
        gdnp_least_squares(problem, np.zeros(2), 3)
    with pytest.raises(ValueError, match="factor"):
        gdnp_least_squares(problem, np.ones(2), 3, factor=-1.0)
    with pytest.raises(ValueError, match="ρ"):
        gdnp_least_squares(problem, np.array([1.0, -1.0]), 3)  # w ⟂ u
