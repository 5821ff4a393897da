r"""Length–direction decoupling: GDNP (gradient descent in normalized parametrization).

Kohler, Daneshmand, Lucchi, Hofmann, Zhou & Neymeyr (2019), *Exponential Convergence Rates for
Batch Normalization: The Power of Length-Direction Decoupling in Non-Convex Optimization*
(AISTATS), read batch norm of a linear unit as a reparametrization of its weights. For a
zero-mean input x with second-moment matrix S = E[x xᵀ],

.. math::

    \mathrm{BN}(w^\top x) = g\,\frac{w^\top x}{\sqrt{w^\top S w}}
    \quad\Longleftrightarrow\quad \tilde w = g\,\frac{w}{\|w\|_S},\qquad
    \|w\|_S = \sqrt{w^\top S w},

so the length g and the direction w/‖w‖_S of the effective weight w̃ become separate
parameters. This module simulates the two problems the paper analyses:

* **Least squares** f(w̃) = E[(y − xᵀw̃)²] = E[y²] − 2uᵀw̃ + w̃ᵀSw̃ with u = E[y x].
  Minimizing over the length g in closed form, g*(w) = uᵀw/‖w‖_S, leaves the generalized
  Rayleigh quotient ρ(w) = −(wᵀu uᵀw)/(wᵀSw): f(w, g*(w)) = E[y²] + ρ(w).
  :func:`gdnp_least_squares` runs GDNP with the paper's step η_t = wₜᵀSwₜ/(2L|ρ(wₜ)|),
  L = λ_max(S) (or with any other factor in place of the 2), and :func:`gd_least_squares`
  runs plain gradient descent on w̃ for comparison.
* **Learning a halfspace** f(w̃) = E[φ(zᵀw̃)] with z = −y x Gaussian (the paper's assumption)
  and φ the softplus (logistic) loss. The length is found by bisection on ∂f/∂g
  (:func:`bisection`), the direction by gradient steps (:func:`gdnp_halfspace`).

It also holds the PyTorch side of the story, a scale-invariant layer followed by BN
(:func:`bn_classifier_loss_grad`, :func:`scale_invariant_sgd`), where the same decoupling shows up
as a gradient orthogonal to w with norm ∝ 1/‖w‖ (Ioffe & Szegedy 2015, §3.3).

Everything is NumPy float64 (PyTorch float64 for the network) and deterministic given its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bncore.norm.numpy_bn import batch_norm_forward
from bncore.norm.torch_bn import batch_norm

__all__ = [
    "BisectionTrace",
    "HalfspaceProblem",
    "HalfspaceTrace",
    "LeastSquaresProblem",
    "LeastSquaresTrace",
    "RateComparison",
    "SGDTrace",
    "bisection",
    "bn_classifier_loss_grad",
    "bn_linear_loss",
    "compare_least_squares",
    "first_violation",
    "fitted_rate",
    "bn_least_squares_grad_w",
    "gd_halfspace",
    "gd_least_squares",
    "gdnp_halfspace",
    "gdnp_least_squares",
    "iterations_to",
    "least_squares_from_data",
    "make_least_squares_data",
    "optimal_gain",
    "rayleigh_gradient",
    "rayleigh_quotient",
    "scale_invariant_sgd",
    "spectrum_covariance",
]


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _as_vector(w: np.ndarray, d: int, name: str = "w") -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (d,):
        raise ValueError(f"{name} must be a vector of shape ({d},), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or Inf")
    if not np.any(w):
        raise ValueError(f"{name} must be non-zero (its direction w/‖w‖ is undefined at 0)")
    return w


def _check_spd(S: np.ndarray, name: str = "S") -> np.ndarray:
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {S.shape}")
    if not np.allclose(S, S.T, rtol=1e-12, atol=1e-12 * float(np.abs(S).max())):
        raise ValueError(f"{name} must be symmetric")
    if np.linalg.eigvalsh(S)[0] <= 0:
        raise ValueError(f"{name} must be positive definite (its smallest eigenvalue is ≤ 0)")
    return S


def _check_steps(steps: int, name: str = "steps") -> None:
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {steps!r}")


# ----------------------------------------------------------------------------------------------
# Least squares
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeastSquaresProblem:
    r"""The population (or empirical) least-squares problem min E[(y − xᵀw̃)²].

    Attributes
    ----------
    S
        ``(d, d)`` second-moment matrix E[x xᵀ] (the covariance, as x has zero mean).
    u
        ``(d,)`` cross moment E[y x].
    ey2
        E[y²], the loss of w̃ = 0.
    """

    S: np.ndarray
    u: np.ndarray
    ey2: float

    def __post_init__(self) -> None:
        S = _check_spd(self.S)
        u = np.asarray(self.u, dtype=np.float64)
        if u.shape != (S.shape[0],):
            raise ValueError(f"u must have shape ({S.shape[0]},) to match S, got {u.shape}")
        if not np.any(u):
            raise ValueError("u = E[y x] must be non-zero (otherwise ρ ≡ 0 and w̃ = 0 is optimal)")
        object.__setattr__(self, "S", S)
        object.__setattr__(self, "u", u)

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.S.shape[0])

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of S, ascending."""
        return np.linalg.eigvalsh(self.S)

    @property
    def mu(self) -> float:
        """μ = λ_min(S), the smallest eigenvalue of S."""
        return float(self.eigenvalues[0])

    @property
    def L(self) -> float:
        """L = λ_max(S), the largest eigenvalue of S."""
        return float(self.eigenvalues[-1])

    @property
    def w_star(self) -> np.ndarray:
        """The least-squares solution w̃* = S⁻¹u (also the optimal GDNP direction)."""
        return np.linalg.solve(self.S, self.u)

    @property
    def rho_star(self) -> float:
        """ρ* = min_w ρ(w) = −uᵀS⁻¹u, attained on the ray w ∝ S⁻¹u."""
        return float(-self.u @ self.w_star)

    def loss(self, w_tilde: np.ndarray) -> float:
        """f(w̃) = E[y²] − 2uᵀw̃ + w̃ᵀSw̃ = E[(y − xᵀw̃)²]."""
        w = np.asarray(w_tilde, dtype=np.float64)
        return float(self.ey2 - 2.0 * self.u @ w + w @ self.S @ w)


def spectrum_covariance(eigenvalues: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random symmetric matrix Q diag(λ) Qᵀ with the given eigenvalues (Q Haar-orthogonal)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or np.any(lam <= 0):
        raise ValueError("eigenvalues must be a 1D array of positive numbers")
    q, r = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    q = q * np.sign(np.diag(r))  # Haar measure
    return (q * lam) @ q.T


def make_least_squares_data(
    n: int, d: int, kappa: float, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic regression data: x ~ N(0, Σ) with eigenvalues geomspace(1, κ, d), y = xᵀβ + ε.

    β ~ N(0, I/d), ε ~ N(0, noise²). The columns of ``X`` and ``y`` are centered, so that the
    empirical distribution has E[x] = 0 exactly and BN's mean subtraction is the identity.

    Returns
    -------
    X, y
        ``(n, d)`` and ``(n,)`` float64 arrays.
    """
    if n < 2 or d < 1:
        raise ValueError(f"need n >= 2 samples and d >= 1 features, got n={n}, d={d}")
    if kappa < 1:
        raise ValueError(f"the condition number kappa must be >= 1, got {kappa}")
    rng = np.random.default_rng(seed)
    sigma = spectrum_covariance(np.geomspace(1.0, kappa, d), rng)
    chol = np.linalg.cholesky(sigma)
    X = rng.standard_normal((n, d)) @ chol.T
    beta = rng.standard_normal(d) / np.sqrt(d)
    y = X @ beta + noise * rng.standard_normal(n)
    return X - X.mean(axis=0), y - y.mean()


def least_squares_from_data(X: np.ndarray, y: np.ndarray) -> LeastSquaresProblem:
    """The empirical problem: S = XᵀX/n, u = Xᵀy/n, E[y²] = yᵀy/n (X assumed centered)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    n = X.shape[0]
    return LeastSquaresProblem(S=X.T @ X / n, u=X.T @ y / n, ey2=float(y @ y / n))


def bn_linear_loss(X: np.ndarray, y: np.ndarray, w: np.ndarray, gamma: float) -> float:
    r"""Mean squared error of the batch-normalized linear unit γ·BN(Xw) against y.

    The unit is evaluated with :func:`bncore.norm.numpy_bn.batch_norm_forward` (one channel, batch
    statistics, eps = 1e-12, β = 0). For centered X it equals γ·Xw/√(wᵀSw + eps), the
    reparametrization w̃ = γ w/‖w‖_S, so its loss is f(w, γ) = E[y²] − 2γ uᵀw/‖w‖_S + γ².
    """
    X = np.asarray(X, dtype=np.float64)
    w = _as_vector(w, X.shape[1])
    out, _ = batch_norm_forward((X @ w)[:, None], np.array([gamma]), np.zeros(1), eps=1e-12)
    return float(np.mean((np.asarray(y, dtype=np.float64) - out[:, 0]) ** 2))


def rayleigh_quotient(w: np.ndarray, S: np.ndarray, u: np.ndarray) -> float:
    r"""ρ(w) = −(wᵀu uᵀw)/(wᵀSw), Kohler et al. (2019), least squares.

    The loss of the BN-reparametrized least-squares model after minimizing over its length g
    is f(w, g*(w)) = E[y²] + ρ(w). ρ is scale-invariant: ρ(c·w) = ρ(w) for c ≠ 0.
    """
    S = np.asarray(S, dtype=np.float64)
    w = _as_vector(w, S.shape[0])
    u = np.asarray(u, dtype=np.float64)
    return float(-((u @ w) ** 2) / (w @ S @ w))


def rayleigh_gradient(w: np.ndarray, S: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""∇ρ(w) = (2/wᵀSw)·(−(uᵀw) u − ρ(w) S w).

    It is orthogonal to w (wᵀ∇ρ = 0), as for every scale-invariant function.
    """
    S = np.asarray(S, dtype=np.float64)
    w = _as_vector(w, S.shape[0])
    u = np.asarray(u, dtype=np.float64)
    sw = S @ w
    quad = float(w @ sw)
    rho = -float((u @ w) ** 2) / quad
    return (2.0 / quad) * (-(u @ w) * u - rho * sw)


def optimal_gain(w: np.ndarray, S: np.ndarray, u: np.ndarray) -> float:
    """g*(w) = uᵀw/‖w‖_S, the length that minimizes f(w, g) = E[y²] − 2g uᵀw/‖w‖_S + g²."""
    S = np.asarray(S, dtype=np.float64)
    w = _as_vector(w, S.shape[0])
    return float(np.asarray(u, dtype=np.float64) @ w / np.sqrt(w @ S @ w))


def bn_least_squares_grad_w(w: np.ndarray, g: float, S: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""∂f/∂w of f(w, g) = E[y²] − 2g uᵀw/‖w‖_S + g², the BN-reparametrized least squares.

    .. math::

        \nabla_w f(w, g) = -\frac{2g}{\|w\|_S}\Big(u - \frac{u^\top w}{\|w\|_S^2} S w\Big).

    At g = g*(w) it equals ∇ρ(w) (the envelope theorem), which is what GDNP follows.
    """
    S = np.asarray(S, dtype=np.float64)
    w = _as_vector(w, S.shape[0])
    u = np.asarray(u, dtype=np.float64)
    sw = S @ w
    quad = float(w @ sw)
    return -(2.0 * g / np.sqrt(quad)) * (u - (u @ w) / quad * sw)


@dataclass(frozen=True)
class LeastSquaresTrace:
    """What :func:`gdnp_least_squares` and :func:`gd_least_squares` record, one entry per iterate.

    Attributes
    ----------
    gap
        ``(T+1,)`` excess loss f(w̃_t) − f*; for GDNP this is ρ(w_t) − ρ* exactly.
    direction_error
        ``(T+1,)`` sin² of the S-angle between w_t and w* = S⁻¹u, equal to (ρ(w_t) − ρ*)/abs(ρ*).
    norm
        ``(T+1,)`` Euclidean norm ‖w_t‖ of the iterate.
    step
        ``(T,)`` the step sizes used.
    w
        ``(d,)`` the last iterate.
    """

    gap: np.ndarray
    direction_error: np.ndarray
    norm: np.ndarray
    step: np.ndarray
    w: np.ndarray


def gdnp_least_squares(
    problem: LeastSquaresProblem, w0: np.ndarray, steps: int, *, factor: float = 2.0
) -> LeastSquaresTrace:
    r"""GDNP on least squares: optimal length, then a gradient step on the direction.

    For t = 0, …, T−1 (Kohler et al. 2019, GDNP with their least-squares step size):

    .. math::

        g_t = g^*(w_t) = \frac{u^\top w_t}{\|w_t\|_S},\qquad
        w_{t+1} = w_t - \eta_t \nabla_w f(w_t, g_t),\qquad
        \eta_t = \frac{w_t^\top S w_t}{c\,L\,|\rho(w_t)|},

    with L = λ_max(S) and c = ``factor`` (the paper's theorem uses c = 2 and then guarantees
    ρ(w_t) − ρ* ≤ (1 − μ/L)^{2t}(ρ(w_0) − ρ*), μ = λ_min(S); see
    :func:`bncore.theory.kohler_gdnp_bound`). ``factor=1`` takes twice as long a step.
    """
    w = _as_vector(w0, problem.d, "w0")
    _check_steps(steps)
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    S, u, L = problem.S, problem.u, problem.L
    rho_star = problem.rho_star
    gap = np.empty(steps + 1)
    norm = np.empty(steps + 1)
    eta = np.empty(steps)
    for t in range(steps + 1):
        rho = rayleigh_quotient(w, S, u)
        gap[t] = rho - rho_star
        norm[t] = np.linalg.norm(w)
        if t == steps:
            break
        if rho == 0.0:
            raise ValueError("ρ(w_t) = 0 (w_t ⟂ u): the GDNP step size w'Sw/(cL|ρ|) is undefined")
        eta[t] = float(w @ S @ w) / (factor * L * abs(rho))
        w = w - eta[t] * bn_least_squares_grad_w(w, optimal_gain(w, S, u), S, u)
    gap = np.maximum(gap, 0.0)  # ρ ≥ ρ*; round-off can leave −1e-16
    return LeastSquaresTrace(
        gap=gap, direction_error=gap / abs(rho_star), norm=norm, step=eta, w=w
    )


def gd_least_squares(
    problem: LeastSquaresProblem,
    w0: np.ndarray,
    steps: int,
    *,
    step: float | None = None,
) -> LeastSquaresTrace:
    r"""Plain gradient descent on f(w̃) = E[(y − xᵀw̃)²] (no normalization).

    w̃_{t+1} = w̃_t − η·2(S w̃_t − u). The default η = 1/(2L) is 1/λ_max(∇²f) (∇²f = 2S),
    the classical step that guarantees f(w̃_t) − f* ≤ (1 − μ/L)^{2t}(f(w̃_0) − f*).
    ``w0`` may be zero.
    """
    w = np.asarray(w0, dtype=np.float64)
    if w.shape != (problem.d,):
        raise ValueError(f"w0 must have shape ({problem.d},), got {w.shape}")
    _check_steps(steps)
    eta = 1.0 / (2.0 * problem.L) if step is None else float(step)
    if not eta > 0:
        raise ValueError(f"step must be positive, got {eta}")
    S, u = problem.S, problem.u
    w_star = problem.w_star
    gap = np.empty(steps + 1)
    direction = np.empty(steps + 1)
    norm = np.empty(steps + 1)
    for t in range(steps + 1):
        e = w - w_star
        gap[t] = float(e @ S @ e)  # = f(w̃_t) − f*, exact for a quadratic
        norm[t] = np.linalg.norm(w)
        direction[t] = (
            1.0 if not np.any(w) else 1.0 - (u @ w) ** 2 / (float(w @ S @ w) * -problem.rho_star)
        )
        if t == steps:
            break
        w = w - eta * 2.0 * (S @ w - u)
    return LeastSquaresTrace(
        gap=gap,
        direction_error=np.maximum(direction, 0.0),
        norm=norm,
        step=np.full(steps, eta),
        w=w,
    )


def fitted_rate(gap: np.ndarray, *, floor: float = 1e-12, tail: float = 0.25) -> float:
    """Per-step contraction factor r of a linearly converging ``gap`` (gap_t ≈ C·rᵗ).

    Fits log gap_t against t by least squares over the last ``tail`` fraction of the iterates
    with gap_t > ``floor``·gap_0 (earlier ones carry transients of faster modes, later ones
    round-off), and returns exp(slope).
    """
    gap = np.asarray(gap, dtype=np.float64)
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    idx = np.flatnonzero(gap > floor * gap[0])
    idx = idx[int(len(idx) * (1 - tail)) :]
    if len(idx) < 3:
        raise ValueError("fewer than 3 iterates above the floor: run more steps or lower it")
    slope = np.polyfit(idx.astype(np.float64), np.log(gap[idx]), 1)[0]
    return float(np.exp(slope))


ROUNDOFF_FLOOR = 1e-12
"""Gaps below ROUNDOFF_FLOOR·abs(ρ*) are not compared with bounds: ρ(w) − ρ* is a difference of two
numbers of size abs(ρ*) and carries an absolute float64 error of a few 1e-16·abs(ρ*)."""


@dataclass(frozen=True)
class RateComparison:
    """GDNP (step factor 2 and 1) against plain GD on one least-squares problem.

    Attributes
    ----------
    lam1, lam2, L
        The two smallest and the largest eigenvalue of S.
    theta1
        Smallest eigenvalue of S compressed to ũ^⊥ (λ1 ≤ θ1 ≤ λ2), see
        :func:`bncore.theory.gdnp_compressed_spectrum`.
    gdnp_rate, gdnp_predicted
        Fitted per-step contraction of ρ − ρ* for GDNP (factor 2) and (1 − θ1/L)².
    gd_rate, gd_predicted
        Fitted contraction of f − f* for GD with step 1/(2L), and (1 − λ1/L)².
    bound_rate
        (1 − μ/L)², the per-step factor of both guarantees (μ = λ1).
    max_bound_ratio
        max_t gap_t/bound_t for GDNP with factor 2 (≤ 1 when the theorem holds).
    factor1_first_violation
        First t at which GDNP with factor 1 exceeds the bound, or −1 if it never does.
    factor1_predicted_rate
        Asymptotic contraction of GDNP with factor 1, max_i (1 − 2θ_i/L)².
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


def first_violation(gap: np.ndarray, bound: np.ndarray, scale: float) -> int:
    """First t with gap_t > bound_t·(1 + 1e-9) and gap_t above the round-off floor; −1 if none."""
    bad = (gap > bound * (1.0 + 1e-9)) & (gap > ROUNDOFF_FLOOR * scale)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else -1


def compare_least_squares(
    problem: LeastSquaresProblem, w0: np.ndarray, steps: int
) -> RateComparison:
    """Run GDNP (factors 2 and 1) from ``w0`` and GD from the same effective weight, and compare.

    GD starts at w̃_0 = g*(w0)·w0/‖w0‖_S, the effective weight of GDNP's first iterate, so both
    start from the same loss.
    """
    from bncore import theory  # theory imports nothing from here; keep the import local

    w0 = _as_vector(w0, problem.d, "w0")
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


def iterations_to(gap: np.ndarray, tol: float) -> int:
    """First t with gap_t ≤ tol·gap_0, or −1 if the run never gets there."""
    gap = np.asarray(gap, dtype=np.float64)
    hits = np.flatnonzero(gap <= tol * gap[0])
    return int(hits[0]) if hits.size else -1


# ----------------------------------------------------------------------------------------------
# Bisection and the halfspace problem
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BisectionTrace:
    """Bisection for a root of an increasing function.

    Attributes
    ----------
    midpoints
        ``(T+1,)`` the estimate after k halvings, k = 0..T (the midpoint of the bracket).
    widths
        ``(T+1,)`` bracket width after k halvings: exactly (b − a)/2^k.
    root
        The last midpoint.
    """

    midpoints: np.ndarray
    widths: np.ndarray
    root: float


def bisection(fun: Callable[[float], float], lo: float, hi: float, steps: int) -> BisectionTrace:
    """Bisection on [lo, hi] for a root of ``fun`` with fun(lo) < 0 < fun(hi).

    Each step keeps the half whose end points still bracket the root, so the bracket width is
    (hi − lo)/2^k after k steps, and the midpoint is within half of that of a root.
    """
    _check_steps(steps)
    lo, hi = float(lo), float(hi)
    if not lo < hi:
        raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
    f_lo, f_hi = fun(lo), fun(hi)
    if not (f_lo < 0 < f_hi):
        raise ValueError(
            f"[{lo}, {hi}] does not bracket a root: fun(lo) = {f_lo:.3g}, fun(hi) = {f_hi:.3g} "
            "(need fun(lo) < 0 < fun(hi)); widen the interval"
        )
    mids = np.empty(steps + 1)
    widths = np.empty(steps + 1)
    for k in range(steps + 1):
        mid = 0.5 * (lo + hi)
        mids[k], widths[k] = mid, hi - lo
        if k == steps:
            break
        if fun(mid) < 0:
            lo = mid
        else:
            hi = mid
    return BisectionTrace(midpoints=mids, widths=widths, root=float(mids[-1]))


def _softplus(t: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, t)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


@dataclass(frozen=True)
class HalfspaceProblem:
    r"""Learning a halfspace with the logistic loss: min_w̃ E[φ(zᵀw̃)], φ(t) = log(1 + eᵗ).

    Here z = −y x is Gaussian, z ~ N(m, Σ), the distributional assumption of Kohler et al.
    (2019). In the reparametrization w̃ = g·w/‖w‖_Σ, zᵀw̃ = g·(a(w) + ε) with ε ~ N(0, 1) and
    a(w) = mᵀw/‖w‖_Σ, so

    .. math::

        f(w, g) = \mathbb E_\varepsilon\,\varphi\big(g\,(a(w) + \varepsilon)\big),

    computed with the trapezoidal rule on a uniform ε-grid (spacing ``grid_step`` on
    [−9, 9]). For the analytic integrands here the rule converges exponentially; its error is
    about exp(−2π²/(g·h)) (the sigmoid's poles sit at distance π/g from the real ε-axis), below
    1e-16 for g ≤ 50 at h = 0.01. The best direction minimizes a(w), i.e.
    w ∝ −Σ⁻¹m; a(w)² = −ρ(w) is the Rayleigh quotient of the least-squares section with
    u = m, S = Σ.

    Attributes
    ----------
    m
        ``(d,)`` mean of z.
    Sigma
        ``(d, d)`` covariance of z.
    grid_step
        Spacing h of the ε-grid.
    """

    m: np.ndarray
    Sigma: np.ndarray
    grid_step: float = 0.01

    def __post_init__(self) -> None:
        Sigma = _check_spd(self.Sigma, "Sigma")
        m = np.asarray(self.m, dtype=np.float64)
        if m.shape != (Sigma.shape[0],) or not np.any(m):
            raise ValueError(f"m must be a non-zero vector of shape ({Sigma.shape[0]},)")
        if not 0 < self.grid_step <= 0.1:
            raise ValueError(f"grid_step must be in (0, 0.1], got {self.grid_step}")
        object.__setattr__(self, "Sigma", Sigma)
        object.__setattr__(self, "m", m)
        half = int(round(9.0 / self.grid_step))
        x = self.grid_step * np.arange(-half, half + 1)
        wts = np.exp(-0.5 * x**2)
        object.__setattr__(self, "_x", x)
        object.__setattr__(self, "_wts", wts / wts.sum())  # E[h(ε)] ≈ Σ wts·h(x)

    @property
    def d(self) -> int:
        """Dimension."""
        return int(self.m.size)

    @property
    def mu(self) -> float:
        """λ_min(Σ)."""
        return float(np.linalg.eigvalsh(self.Sigma)[0])

    @property
    def L(self) -> float:
        """λ_max(Σ)."""
        return float(np.linalg.eigvalsh(self.Sigma)[-1])

    @property
    def w_star(self) -> np.ndarray:
        """The optimal direction −Σ⁻¹m (up to positive scale)."""
        return -np.linalg.solve(self.Sigma, self.m)

    @property
    def rho_star(self) -> float:
        """ρ* = −mᵀΣ⁻¹m."""
        return float(self.m @ self.w_star)

    def _quad(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x, self._wts  # type: ignore[attr-defined]

    def margin(self, w: np.ndarray) -> float:
        """a(w) = mᵀw/‖w‖_Σ, the mean of zᵀw/‖w‖_Σ."""
        w = _as_vector(w, self.d)
        return float(self.m @ w / np.sqrt(w @ self.Sigma @ w))

    def loss(self, w: np.ndarray, g: float) -> float:
        """f(w, g) = E φ(g(a(w) + ε))."""
        x, wts = self._quad()
        return float(wts @ _softplus(g * (self.margin(w) + x)))

    def dloss_dg(self, w: np.ndarray, g: float) -> float:
        """∂f/∂g = E[φ'(g(a + ε))·(a + ε)], increasing in g (f is convex in g)."""
        x, wts = self._quad()
        s = self.margin(w) + x
        return float(wts @ (_sigmoid(g * s) * s))

    def grad_w(self, w: np.ndarray, g: float) -> np.ndarray:
        r"""∇_w f(w, g) = c(w, g)·∇a(w), with c = g·E[φ'(g(a + ε))] and
        ∇a(w) = (m − a(w)·Σw/‖w‖_Σ)/‖w‖_Σ (orthogonal to w)."""
        w = _as_vector(w, self.d)
        x, wts = self._quad()
        nrm = np.sqrt(w @ self.Sigma @ w)
        a = self.m @ w / nrm
        c = g * float(wts @ _sigmoid(g * (a + x)))
        return c * (self.m - a * (self.Sigma @ w) / nrm) / nrm


@dataclass(frozen=True)
class HalfspaceTrace:
    """What :func:`gdnp_halfspace` records.

    Attributes
    ----------
    direction_error
        ``(T+1,)`` sin² of the Σ-angle between w_t and −Σ⁻¹m, = (ρ(w_t) − ρ*)/abs(ρ*).
    rho_gap
        ``(T+1,)`` ρ(w_t) − ρ* with ρ the Rayleigh quotient for u = m, S = Σ.
    gain
        ``(T,)`` the length g_t returned by the bisection at outer step t.
    bisection_error
        ``(T, T_s+1)`` the error abs(g_t^(k) − g*(w_t)) after k bisection halvings.
    bisection_width
        ``(T, T_s+1)`` bracket width after k halvings.
    loss
        ``(T,)`` f(w_t, g_t).
    w
        The last direction iterate.
    """

    direction_error: np.ndarray
    rho_gap: np.ndarray
    gain: np.ndarray
    bisection_error: np.ndarray
    bisection_width: np.ndarray
    loss: np.ndarray
    w: np.ndarray


def gdnp_halfspace(
    problem: HalfspaceProblem,
    w0: np.ndarray,
    steps: int,
    *,
    bisection_steps: int = 30,
    interval: tuple[float, float] = (0.0, 50.0),
    reference_steps: int = 60,
) -> HalfspaceTrace:
    r"""GDNP for learning a halfspace: bisection on the length, gradient steps on the direction.

    Outer step t (Kohler et al. 2019: length by bisection, direction by gradient):

    1. g_t = bisection of ∂f/∂g(w_t, ·) on ``interval`` with T_s = ``bisection_steps`` halvings;
    2. w_{t+1} = w_t − η_t ∇_w f(w_t, g_t) with η_t = ‖w_t‖²_Σ / (L·abs(a(w_t))·c_t),
       c_t = g_t E[φ'(g_t(a + ε))].

    The step size is our choice: it divides out the scalar c_t of ∇_w f = c_t ∇a and, as
    ∇ρ = −2a∇a, turns the direction update into the least-squares GDNP step of
    :func:`gdnp_least_squares` with u = m, S = Σ (for a(w_t) < 0, i.e. w_t on the correct side).
    The reference root g*(w_t), against which ``bisection_error`` is measured, is the same
    bisection run for ``reference_steps`` halvings (to float64 resolution).
    """
    w = _as_vector(w0, problem.d, "w0")
    _check_steps(steps)
    _check_steps(bisection_steps, "bisection_steps")
    if problem.margin(w) >= 0:
        raise ValueError(
            "w0 must be on the correct side, mᵀw0 < 0 (for mᵀw ≥ 0 the best length is "
            "g ≤ 0); flip its sign"
        )
    Sigma, L, rho_star = problem.Sigma, problem.L, problem.rho_star
    lo, hi = interval
    rho_gap = np.empty(steps + 1)
    gain = np.empty(steps)
    loss = np.empty(steps)
    b_err = np.empty((steps, bisection_steps + 1))
    b_wid = np.empty((steps, bisection_steps + 1))
    for t in range(steps + 1):
        a = problem.margin(w)
        rho_gap[t] = max(-(a**2) - rho_star, 0.0)
        if t == steps:
            break

        def dfdg(g: float, w: np.ndarray = w) -> float:
            return problem.dloss_dg(w, g)

        # The first T_s halvings of a longer bisection are the T_s-step bisection itself.
        ref = bisection(dfdg, lo, hi, max(reference_steps, bisection_steps))
        gain[t] = ref.midpoints[bisection_steps]
        b_err[t] = np.abs(ref.midpoints[: bisection_steps + 1] - ref.root)
        b_wid[t] = ref.widths[: bisection_steps + 1]
        loss[t] = problem.loss(w, gain[t])
        grad = problem.grad_w(w, gain[t])
        x, wts = problem._quad()
        c = gain[t] * float(wts @ _sigmoid(gain[t] * (a + x)))
        eta = float(w @ Sigma @ w) / (L * abs(a) * c)
        w = w - eta * grad
    return HalfspaceTrace(
        direction_error=rho_gap / abs(rho_star),
        rho_gap=rho_gap,
        gain=gain,
        bisection_error=b_err,
        bisection_width=b_wid,
        loss=loss,
        w=w,
    )


def gd_halfspace(
    problem: HalfspaceProblem, w0: np.ndarray, steps: int, *, step: float | None = None
) -> HalfspaceTrace:
    r"""Plain gradient descent on f(w̃) = E[φ(zᵀw̃)], z ~ N(m, Σ), for comparison with GDNP.

    With s = zᵀw̃ ~ N(mᵀw̃, w̃ᵀΣw̃) and Stein's lemma,
    ∇f(w̃) = m·E[φ'(s)] + Σw̃·E[φ''(s)]. Since φ'' ≤ 1/4, ∇²f ⪯ (Σ + m mᵀ)/4, and the default
    step is its inverse largest eigenvalue, 4/λ_max(Σ + m mᵀ). The fields of the returned
    trace that belong to the bisection are empty; ``gain`` holds ‖w̃_t‖_Σ and ``loss`` f(w̃_t).
    """
    w = _as_vector(w0, problem.d, "w0")
    _check_steps(steps)
    Sigma, m = problem.Sigma, problem.m
    eta = 4.0 / float(np.linalg.eigvalsh(Sigma + np.outer(m, m))[-1]) if step is None else step
    if not eta > 0:
        raise ValueError(f"step must be positive, got {eta}")
    x, wts = problem._quad()
    rho_gap = np.empty(steps + 1)
    gain = np.empty(steps)
    loss = np.empty(steps)
    for t in range(steps + 1):
        sw = Sigma @ w
        nrm = float(np.sqrt(w @ sw))
        a = float(m @ w) / nrm
        rho_gap[t] = max(-(a**2) - problem.rho_star, 0.0) if a < 0 else -problem.rho_star
        if t == steps:
            break
        s = float(m @ w) + nrm * x  # quadrature nodes of s
        p = _sigmoid(s)
        gain[t], loss[t] = nrm, float(wts @ _softplus(s))
        w = w - eta * (m * float(wts @ p) + sw * float(wts @ (p * (1.0 - p))))
    empty = np.empty((steps, 0))
    return HalfspaceTrace(
        direction_error=rho_gap / abs(problem.rho_star),
        rho_gap=rho_gap,
        gain=gain,
        bisection_error=empty,
        bisection_width=empty,
        loss=loss,
        w=w,
    )


# ----------------------------------------------------------------------------------------------
# The same decoupling inside a network: scale invariance before BN (PyTorch)
# ----------------------------------------------------------------------------------------------


def bn_classifier_loss_grad(
    W: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    gamma: float = 1.0,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cross-entropy of the scale-invariant classifier logits = γ·BN(X Wᵀ), and its gradient in W.

    BN is :func:`bncore.norm.torch_bn.batch_norm` in training mode (batch statistics, no β). Each
    row w_k of W feeds one BN channel, so up to eps the loss is invariant to w_k → a·w_k
    (Ioffe & Szegedy 2015, §3.3). Hence ∂ℓ/∂w_k ⟂ w_k and ∂ℓ/∂(a w_k) = (1/a) ∂ℓ/∂w_k.

    Parameters
    ----------
    W
        ``(C, d)`` weights (C classes), float64 recommended.
    X
        ``(n, d)`` inputs; ``y``: ``(n,)`` integer labels in [0, C).

    Returns
    -------
    loss, grad
        A scalar tensor and the ``(C, d)`` gradient (both detached).
    """
    if W.dim() != 2 or X.dim() != 2 or W.shape[1] != X.shape[1]:
        raise ValueError(f"need W (C, d) and X (n, d), got {tuple(W.shape)} and {tuple(X.shape)}")
    Wp = W.detach().clone().requires_grad_(True)
    h = X @ Wp.T  # (n, C)
    weight = torch.full((W.shape[0],), float(gamma), dtype=W.dtype)
    logits = batch_norm(h, None, None, weight=weight, training=True, eps=eps)
    loss = torch.nn.functional.cross_entropy(logits, y)
    (grad,) = torch.autograd.grad(loss, Wp)
    return loss.detach(), grad.detach()


@dataclass(frozen=True)
class SGDTrace:
    """What :func:`scale_invariant_sgd` records.

    Attributes
    ----------
    row_norms
        ``(T+1, C)`` ‖w_k‖ of each row before step t.
    grad_norms
        ``(T, C)`` ‖∂ℓ/∂w_k‖ at step t.
    cosines
        ``(T, C)`` cos(w_k, ∂ℓ/∂w_k) at step t (zero for a scale-invariant loss).
    angle_steps
        ``(T, C)`` the angle (radians) by which each row turns at step t.
    losses
        ``(T,)`` minibatch loss at step t.
    W
        ``(C, d)`` final weights.
    """

    row_norms: np.ndarray
    grad_norms: np.ndarray
    cosines: np.ndarray
    angle_steps: np.ndarray
    losses: np.ndarray
    W: torch.Tensor


def scale_invariant_sgd(
    W0: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    gamma: float = 1.0,
    eps: float = 1e-12,
) -> SGDTrace:
    r"""Plain SGD (no momentum, no weight decay) on :func:`bn_classifier_loss_grad`.

    Minibatches are drawn without replacement from a ``torch.Generator`` seeded with ``seed``,
    so two runs with the same seed see the same batches. Because each step moves w_k along a
    vector orthogonal to it, ‖w_k‖² grows by exactly lr²‖∂ℓ/∂w_k‖² per step, and the angle it
    turns is arctan(lr‖∂ℓ/∂w_k‖/‖w_k‖) ∝ lr/‖w_k‖² (since ‖∂ℓ/∂w_k‖ ∝ 1/‖w_k‖).
    """
    _check_steps(steps)
    n = X.shape[0]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [2, {n}], got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    gen = torch.Generator().manual_seed(seed)
    W = W0.detach().clone()
    C = W.shape[0]
    row_norms = np.empty((steps + 1, C))
    grad_norms = np.empty((steps, C))
    cosines = np.empty((steps, C))
    angles = np.empty((steps, C))
    losses = np.empty(steps)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for t in range(steps + 1):
        row_norms[t] = W.norm(dim=1).numpy()
        if t == steps:
            break
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        loss, grad = bn_classifier_loss_grad(W, X[idx], y[idx], gamma=gamma, eps=eps)
        W_new = W - lr * grad
        gn = grad.norm(dim=1)
        grad_norms[t] = gn.numpy()
        cosines[t] = ((W * grad).sum(dim=1) / (W.norm(dim=1) * gn)).numpy()
        along = (W * W_new).sum(dim=1) / W.norm(dim=1)  # component of w_new along w
        across = (W_new.norm(dim=1) ** 2 - along**2).clamp(min=0.0).sqrt()
        angles[t] = torch.atan2(across, along).numpy()
        losses[t] = float(loss)
        W = W_new
    return SGDTrace(
        row_norms=row_norms,
        grad_norms=grad_norms,
        cosines=cosines,
        angle_steps=angles,
        losses=losses,
        W=W,
    )
