"""GDNP against GD on one least-squares problem, measured against theory
(bncore.experiments.gdnp_rates).
"""

from __future__ import annotations

import numpy as np

from bncore.experiments.gdnp_least_squares import (
    least_squares_from_data,
    make_least_squares_data,
)
from bncore.experiments.gdnp_rates import compare_least_squares, compare_on_random_problem


def test_compare_least_squares_reports_consistent_rates() -> None:
    X, y = make_least_squares_data(n=500, d=6, kappa=10.0, noise=0.3, seed=2)
    problem = least_squares_from_data(X, y)
    r = compare_least_squares(problem, np.random.default_rng(0).standard_normal(6), 400)
    assert r.max_bound_ratio <= 1 + 1e-9
    assert r.lam1 - 1e-12 <= r.theta1 <= r.lam2 + 1e-12
    assert r.gdnp_predicted <= r.gd_predicted + 1e-15
    assert r.gdnp_rate <= r.bound_rate and r.gd_rate <= r.bound_rate + 1e-9
    assert r.gdnp_iters > 0 and r.gd_iters > 0


def test_compare_on_random_problem_is_compare_least_squares_on_that_problem():
    from_grid = compare_on_random_problem(60, seed=3, n=200, d=5, kappa=10.0)
    X, y = make_least_squares_data(n=200, d=5, kappa=10.0, noise=0.5, seed=3)
    start = np.random.default_rng(1003).standard_normal(5)
    assert from_grid == compare_least_squares(least_squares_from_data(X, y), start, 60)
