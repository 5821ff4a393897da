r"""GDNP against plain gradient descent on one least-squares problem, measured against theory.

:func:`compare_least_squares` runs GDNP with step factor 2 (the setting of Kohler et al.'s
theorem) and factor 1, and GD from the same effective weight, then fits their per-step rates
(:func:`bncore.experiments.convergence.fitted_rate`) and sets them beside the closed forms of
:mod:`bncore.theory.kohler`: the guarantee R(w_t) − R* ≤ (1 − ν₁/ν_d)^{2t}(R(w_0) − R*), GD's
asymptotic rate (1 − ν₁/ν_d)² and GDNP's (1 − ν̃₁/ν_d)², with ν₁ ≤ … ≤ ν_d the eigenvalues of S
and ν̃₁ the smallest eigenvalue of S compressed to the hyperplane orthogonal to S^{−1/2}b (b the
problem's ``u``; Kohler et al. write μ, L for ν₁, ν_d and ρ for R).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncore import theory
from bncore.experiments.convergence import (
    ROUNDOFF_FLOOR,
    first_violation,
    fitted_rate,
    iterations_to,
)
from bncore.experiments.gdnp_least_squares import (
    LeastSquaresProblem,
    check_direction,
    gd_least_squares,
    gdnp_least_squares,
    least_squares_from_data,
    make_least_squares_data,
    optimal_gain,
)

__all__ = ["RateComparison", "compare_least_squares", "compare_on_random_problem"]


@dataclass(frozen=True)
class RateComparison:
    """GDNP (step factor 2 and 1) against plain GD on one least-squares problem.

    Attributes
    ----------
    lam1, lam2, L
        The two smallest and the largest eigenvalue of S: ν₁, ν₂ and ν_d.
    theta1
        ν̃₁, the smallest eigenvalue of S compressed to b̃^⊥ (ν₁ ≤ ν̃₁ ≤ ν₂), see
        :func:`bncore.theory.gdnp_compressed_spectrum`.
    gdnp_rate, gdnp_predicted
        Fitted per-step contraction of R − R* for GDNP (factor 2) and (1 − ν̃₁/ν_d)².
    gd_rate, gd_predicted
        Fitted contraction of f − f* for GD with step 1/(2ν_d), and (1 − ν₁/ν_d)².
    bound_rate
        (1 − ν₁/ν_d)², the per-step factor of both guarantees.
    max_bound_ratio
        max_t gap_t/bound_t for GDNP with factor 2 (≤ 1 when the theorem holds).
    factor1_first_violation
        First t at which GDNP with factor 1 exceeds the bound, or −1 if it never does.
    factor1_predicted_rate
        Asymptotic contraction of GDNP with factor 1, max_i (1 − 2ν̃_i/ν_d)².
    gdnp_iters, gd_iters
        Iterations GDNP (factor 2) and GD need to bring their gap below 1e-8 of its start.
    """

    lam1: float
    lam2: float
    L: float
    theta1: float
    gdnp_rate: float
    gdnp_predicted: float
    gd_rate: float
    gd_predicted: float
    bound_rate: float
    max_bound_ratio: float
    factor1_first_violation: int
    factor1_predicted_rate: float
    gdnp_iters: int
    gd_iters: int


def compare_least_squares(
    problem: LeastSquaresProblem, w0: np.ndarray, steps: int
) -> RateComparison:
    """Run GDNP (factors 2 and 1) from ``w0`` and GD from the same effective weight, and compare.

    GD starts at w̃_0 = g*(w0)·w0/‖w0‖_S, the effective weight of GDNP's first iterate, so both
    start from the same loss.
    """
    w0 = check_direction(w0, problem.d, "w0")
    S, u = problem.S, problem.u
    lam = problem.eigenvalues
    mu, L = float(lam[0]), float(lam[-1])
    scale = abs(problem.rho_star)
    two = gdnp_least_squares(problem, w0, steps)
    one = gdnp_least_squares(problem, w0, steps, factor=1.0)
    w_tilde0 = optimal_gain(w0, S, u) * w0 / np.sqrt(w0 @ S @ w0)
    gd = gd_least_squares(problem, w_tilde0, steps)
    bound = theory.kohler_gdnp_bound(two.gap[0], mu, L, steps)
    above = two.gap > ROUNDOFF_FLOOR * scale
    theta = theory.gdnp_compressed_spectrum(S, u)
    return RateComparison(
        lam1=mu,
        lam2=float(lam[1]),
        L=L,
        theta1=float(theta[0]),
        gdnp_rate=fitted_rate(two.gap),
        gdnp_predicted=theory.gdnp_asymptotic_rate(S, u),
        gd_rate=fitted_rate(gd.gap),
        gd_predicted=theory.gd_least_squares_rate(lam, 1.0 / (2.0 * L)),
        bound_rate=(1.0 - mu / L) ** 2,
        max_bound_ratio=float(np.max(two.gap[above] / bound[above])),
        factor1_first_violation=first_violation(
            one.gap, theory.kohler_gdnp_bound(one.gap[0], mu, L, steps), scale
        ),
        factor1_predicted_rate=theory.gdnp_asymptotic_rate(S, u, factor=1.0),
        gdnp_iters=iterations_to(two.gap, 1e-8),
        gd_iters=iterations_to(gd.gap, 1e-8),
    )


def compare_on_random_problem(
    steps: int,
    *,
    seed: int,
    n: int = 2000,
    d: int = 20,
    kappa: float = 100.0,
    noise: float = 0.5,
) -> RateComparison:
    """:func:`compare_least_squares` on random problem ``seed``.

    The data come from :func:`~bncore.experiments.gdnp_least_squares.make_least_squares_data`
    (``n`` samples, ``d`` features, condition number ``kappa``, label noise ``noise``) and the
    start is standard normal from generator ``1000 + seed``; made for
    :func:`bncore.experiments.grid.run_grid` over seeds.
    """
    X, y = make_least_squares_data(n=n, d=d, kappa=kappa, noise=noise, seed=seed)
    start = np.random.default_rng(1000 + seed).standard_normal(d)
    return compare_least_squares(least_squares_from_data(X, y), start, steps)
