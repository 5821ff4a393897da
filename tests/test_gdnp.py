"""GDNP on least squares and halfspaces, bisection, and scale-invariant SGD
(bncore.experiments.gdnp_least_squares, gdnp_halfspace, gdnp_rates, scale_invariant_sgd).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bncore import theory
from bncore.experiments.gdnp_halfspace import (
    HalfspaceProblem,
    bisection,
    gd_halfspace,
    gdnp_halfspace,
)
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
from bncore.experiments.gdnp_rates import compare_least_squares, compare_on_random_problem
from bncore.experiments.scale_invariant_sgd import bn_classifier_loss_grad, scale_invariant_sgd


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


def test_compare_least_squares_reports_consistent_rates() -> None:
    X, y = make_least_squares_data(n=500, d=6, kappa=10.0, noise=0.3, seed=2)
    problem = least_squares_from_data(X, y)
    r = compare_least_squares(problem, np.random.default_rng(0).standard_normal(6), 400)
    assert r.max_bound_ratio <= 1 + 1e-9
    assert r.lam1 - 1e-12 <= r.theta1 <= r.lam2 + 1e-12
    assert r.gdnp_predicted <= r.gd_predicted + 1e-15
    assert r.gdnp_rate <= r.bound_rate and r.gd_rate <= r.bound_rate + 1e-9
    assert r.gdnp_iters > 0 and r.gd_iters > 0


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


# --- bisection and halfspaces -------------------------------------------------------------


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


# --- scale invariance before BN in a network (torch) ----------------------------------------


@pytest.fixture(scope="module")
def classification() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(96, 8, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    W = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    return X, y, W


def test_bn_gradient_is_orthogonal_to_w_and_scales_inversely(classification) -> None:
    X, y, W = classification
    loss, grad = bn_classifier_loss_grad(W, X, y, gamma=2.0)
    cos = (W * grad).sum(1) / (W.norm(dim=1) * grad.norm(dim=1))
    assert cos.abs().max().item() < 1e-10
    loss5, grad5 = bn_classifier_loss_grad(5.0 * W, X, y, gamma=2.0)
    assert loss5.item() == pytest.approx(loss.item(), rel=1e-10)
    torch.testing.assert_close(5.0 * grad5, grad, rtol=1e-9, atol=1e-12)


def test_sgd_grows_norms_by_pythagoras_and_scaled_runs_coincide(classification) -> None:
    X, y, W = classification
    lr = 0.3
    tr = scale_invariant_sgd(W, X, y, lr=lr, steps=30, batch_size=32, seed=1, gamma=2.0)
    growth = tr.row_norms[1:] ** 2 - tr.row_norms[:-1] ** 2
    np.testing.assert_allclose(growth, lr**2 * tr.grad_norms**2, rtol=1e-8)
    assert np.all(np.diff(tr.row_norms, axis=0) > 0)
    a = 4.0
    tr_a = scale_invariant_sgd(
        a * W, X, y, lr=lr * a**2, steps=30, batch_size=32, seed=1, gamma=2.0
    )
    torch.testing.assert_close(tr_a.W, a * tr.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tr_a.losses, tr.losses, rtol=1e-9)
    tr_b = scale_invariant_sgd(W, X, y, lr=lr, steps=30, batch_size=32, seed=1, gamma=2.0)
    torch.testing.assert_close(tr_b.W, tr.W, rtol=0, atol=0)


def test_compare_on_random_problem_is_compare_least_squares_on_that_problem():
    from_grid = compare_on_random_problem(60, seed=3, n=200, d=5, kappa=10.0)
    X, y = make_least_squares_data(n=200, d=5, kappa=10.0, noise=0.5, seed=3)
    start = np.random.default_rng(1003).standard_normal(5)
    assert from_grid == compare_least_squares(least_squares_from_data(X, y), start, 60)
