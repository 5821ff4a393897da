"""Tests for the Kohler et al. (2019) section of bncore.theory (GDNP and GD rates)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bncore import theory
from bncore.experiments.convergence import fitted_rate
from bncore.experiments.gdnp_least_squares import (
    LeastSquaresProblem,
    gd_least_squares,
    gdnp_least_squares,
    spectrum_covariance,
)


def test_kohler_bound_hand_computed() -> None:
    # μ = 1, L = 4: per step (1 − 1/4)² = 9/16.
    b = theory.kohler_gdnp_bound(2.0, 1.0, 4.0, 3)
    np.testing.assert_allclose(b, [2.0, 2.0 * 9 / 16, 2.0 * (9 / 16) ** 2, 2.0 * (9 / 16) ** 3])


def test_gd_bound_is_the_same_bound_as_gdnp() -> None:
    np.testing.assert_allclose(
        theory.gd_least_squares_bound(0.7, 0.3, 5.0, 50),
        theory.kohler_gdnp_bound(0.7, 0.3, 5.0, 50),
        rtol=1e-14,
    )


@pytest.mark.parametrize("mu,L", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bounds_reject_bad_eigenvalues(mu: float, L: float) -> None:
    with pytest.raises(ValueError, match="0 < mu <= L"):
        theory.kohler_gdnp_bound(1.0, mu, L, 3)
    with pytest.raises(ValueError, match="0 < mu <= L"):
        theory.gd_least_squares_bound(1.0, mu, L, 3)


def test_gd_rate_hand_computed() -> None:
    # eigenvalues 1, 4 with η = 1/(2·4): factors (1 − 1/4)² and 0.
    assert theory.gd_least_squares_rate(np.array([1.0, 4.0]), 1 / 8) == pytest.approx(9 / 16)


def test_gd_rate_is_attained_by_gd() -> None:
    S = np.diag([1.0, 2.0, 10.0])
    problem = LeastSquaresProblem(S=S, u=np.array([1.0, -1.0, 2.0]), ey2=10.0)
    trace = gd_least_squares(problem, np.zeros(3), 60)
    # f − f* = Σ λ_i e_i² (1 − λ_i/L)^{2t} exactly (factors 0.81, 0.64, 0), so the late ratio is
    # the slowest factor up to the next mode, (0.64/0.81)^60 ≈ 7e-7 relative.
    ratio = trace.gap[60] / trace.gap[59]
    assert ratio == pytest.approx(theory.gd_least_squares_rate(np.diag(S), 1 / 20), rel=1e-5)


def test_compressed_spectrum_two_dimensional_hand_case() -> None:
    # S = diag(1, 4), u = (1, 2): ũ = S^{-1/2}u = (1, 1)/√2, ũ^⊥ = (1, −1)/√2, θ = (1 + 4)/2.
    theta = theory.gdnp_compressed_spectrum(np.diag([1.0, 4.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(theta, [2.5], rtol=1e-12)
    assert theory.gdnp_asymptotic_rate(np.diag([1.0, 4.0]), np.array([1.0, 2.0])) == (
        pytest.approx((1 - 2.5 / 4) ** 2)
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=2, max_value=8), st.integers(min_value=0, max_value=10_000))
def test_compressed_spectrum_interlaces_eigenvalues(d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.1, 10.0, d))
    S = spectrum_covariance(lam, rng)
    theta = theory.gdnp_compressed_spectrum(S, rng.standard_normal(d))
    assert theta.shape == (d - 1,)
    tol = 1e-9 * lam[-1]
    assert np.all(lam[:-1] - tol <= theta) and np.all(theta <= lam[1:] + tol)


def test_gdnp_asymptotic_rate_matches_simulation() -> None:
    rng = np.random.default_rng(3)
    S = spectrum_covariance(np.array([1.0, 1.5, 3.0, 6.0, 10.0]), rng)
    problem = LeastSquaresProblem(S=S, u=rng.standard_normal(5), ey2=100.0)
    trace = gdnp_least_squares(problem, rng.standard_normal(5), 600)
    measured = fitted_rate(trace.gap)
    predicted = theory.gdnp_asymptotic_rate(S, problem.u)
    # Late in the run only the slowest mode is left: the log-rates agree to < 1 %.
    assert np.log(measured) == pytest.approx(np.log(predicted), rel=0.01)
    # With factor 2, GDNP is asymptotically at least as fast as GD (θ1 ≥ λ1).
    assert predicted <= theory.gd_least_squares_rate(np.linalg.eigvalsh(S), 1 / (2 * 10.0)) + 1e-12


def test_asymptotic_rate_rejects_bad_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        theory.gdnp_asymptotic_rate(np.eye(2), np.ones(2), factor=0.0)
