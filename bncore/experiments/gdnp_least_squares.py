r"""GDNP on least squares: the length of the weight in closed form, its direction by gradient.

Kohler, Daneshmand, Lucchi, Hofmann, Zhou & Neymeyr (2019), *Exponential Convergence Rates for
Batch Normalization: The Power of Length-Direction Decoupling in Non-Convex Optimization*
(AISTATS), read batch norm of a linear unit as a reparametrization of its weights. For a
zero-mean input x with second-moment matrix S = E[x xᵀ],

.. math::

    \mathrm{BN}(w^\top x) = \gamma\,\frac{w^\top x}{\sqrt{w^\top S w}}
    \quad\Longleftrightarrow\quad \tilde w = \gamma\,\frac{w}{\|w\|_S},\qquad
    \|w\|_S = \sqrt{w^\top S w},

so the length γ and the direction w/‖w‖_S of the effective weight w̃ become separate
parameters. On least squares f(w̃) = E[(y* − xᵀw̃)²] = E[y*²] − 2bᵀw̃ + w̃ᵀSw̃ with b = E[y* x],
minimizing over the length in closed form, γ*(w) = bᵀw/‖w‖_S, leaves the generalized Rayleigh
quotient

.. math::

    f(w, \gamma^*(w)) = \mathbb E[(y^\star)^2] + R(w),\qquad
    R(w) = -\frac{w^\top b\,b^\top w}{w^\top S w}.

:func:`gdnp_least_squares` runs GDNP with the paper's step η_t = wₜᵀSwₜ/(2ν_d|R(wₜ)|),
ν_d the largest eigenvalue of S (Kohler et al.'s L; or with any other factor in place of the
2), and :func:`gd_least_squares` runs plain gradient descent on w̃ for comparison. The bounds
these runs are held to are closed forms in :mod:`bncore.theory.kohler`. Everything is NumPy
float64 and deterministic given its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncore.norm.numpy_bn import batch_norm_forward

__all__ = [
    "LeastSquaresProblem",
    "LeastSquaresTrace",
    "bn_least_squares_grad_w",
    "bn_linear_loss",
    "gd_least_squares",
    "gdnp_least_squares",
    "least_squares_from_data",
    "make_least_squares_data",
    "optimal_gain",
    "rayleigh_gradient",
    "rayleigh_quotient",
    "spectrum_covariance",
]


# Input checks at the boundary, shared with :mod:`bncore.experiments.gdnp_halfspace`.


def check_direction(w: np.ndarray, d: int, name: str = "w") -> np.ndarray:
    """``w`` as a finite, non-zero float64 vector of shape ``(d,)``, or a ``ValueError``."""
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (d,):
        raise ValueError(f"{name} must be a vector of shape ({d},), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or Inf")
    if not np.any(w):
        raise ValueError(f"{name} must be non-zero (its direction w/‖w‖ is undefined at 0)")
    return w


def check_spd(S: np.ndarray, name: str = "S") -> np.ndarray:
    """``S`` as a symmetric positive definite float64 matrix, or a ``ValueError``."""
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {S.shape}")
    if not np.allclose(S, S.T, rtol=1e-12, atol=1e-12 * float(np.abs(S).max())):
        raise ValueError(f"{name} must be symmetric")
    if np.linalg.eigvalsh(S)[0] <= 0:
        raise ValueError(f"{name} must be positive definite (its smallest eigenvalue is ≤ 0)")
    return S


def check_steps(steps: int, name: str = "steps") -> None:
    """Raise ``ValueError`` unless ``steps`` is a non-negative integer."""
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {steps!r}")


@dataclass(frozen=True)
class LeastSquaresProblem:
    r"""The population (or empirical) least-squares problem min E[(y* − xᵀw̃)²].

    Attributes
    ----------
    S
        ``(d, d)`` second-moment matrix E[x xᵀ] (the covariance, as x has zero mean).
    u
        ``(d,)`` cross moment b = E[y* x] (Kohler et al.'s u).
    ey2
        E[y*²], the loss of w̃ = 0.
    """

    S: np.ndarray
    u: np.ndarray
    ey2: float

    def __post_init__(self) -> None:
        S = check_spd(self.S)
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
        """ν_1, the smallest eigenvalue of S (Kohler et al.'s μ)."""
        return float(self.eigenvalues[0])

    @property
    def L(self) -> float:
        """ν_d, the largest eigenvalue of S (Kohler et al.'s L)."""
        return float(self.eigenvalues[-1])

    @property
    def w_star(self) -> np.ndarray:
        """The least-squares solution w̃* = S⁻¹b (also the optimal GDNP direction)."""
        return np.linalg.solve(self.S, self.u)

    @property
    def rho_star(self) -> float:
        """R* = min_w R(w) = −bᵀS⁻¹b, attained on the ray w ∝ S⁻¹b."""
        return float(-self.u @ self.w_star)

    def loss(self, w_tilde: np.ndarray) -> float:
        """f(w̃) = E[y*²] − 2bᵀw̃ + w̃ᵀSw̃ = E[(y* − xᵀw̃)²]."""
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
    """The empirical problem: S = XᵀX/n, b = Xᵀy/n, E[y*²] = yᵀy/n (X assumed centered)."""
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
    reparametrization w̃ = γ w/‖w‖_S, so its loss is f(w, γ) = E[y*²] − 2γ bᵀw/‖w‖_S + γ².
    """
    X = np.asarray(X, dtype=np.float64)
    w = check_direction(w, X.shape[1])
    out, _ = batch_norm_forward((X @ w)[:, None], np.array([gamma]), np.zeros(1), eps=1e-12)
    return float(np.mean((np.asarray(y, dtype=np.float64) - out[:, 0]) ** 2))


def rayleigh_quotient(w: np.ndarray, S: np.ndarray, u: np.ndarray) -> float:
    r"""R(w) = −(wᵀb bᵀw)/(wᵀSw), Kohler et al. (2019), least squares.

    The loss of the BN-reparametrized least-squares model after minimizing over its length g
    is f(w, γ*(w)) = E[y*²] + R(w). R is scale-invariant: R(c·w) = R(w) for c ≠ 0.
    """
    S = np.asarray(S, dtype=np.float64)
    w = check_direction(w, S.shape[0])
    u = np.asarray(u, dtype=np.float64)
    return float(-((u @ w) ** 2) / (w @ S @ w))


def rayleigh_gradient(w: np.ndarray, S: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""∇R(w) = (2/wᵀSw)·(−(bᵀw) b − R(w) S w).

    It is orthogonal to w (wᵀ∇R = 0), as for every scale-invariant function.
    """
    S = np.asarray(S, dtype=np.float64)
    w = check_direction(w, S.shape[0])
    u = np.asarray(u, dtype=np.float64)
    sw = S @ w
    quad = float(w @ sw)
    rho = -float((u @ w) ** 2) / quad
    return (2.0 / quad) * (-(u @ w) * u - rho * sw)


def optimal_gain(w: np.ndarray, S: np.ndarray, u: np.ndarray) -> float:
    """γ*(w) = bᵀw/‖w‖_S, the length that minimizes f(w, γ) = E[y*²] − 2γ bᵀw/‖w‖_S + γ²."""
    S = np.asarray(S, dtype=np.float64)
    w = check_direction(w, S.shape[0])
    return float(np.asarray(u, dtype=np.float64) @ w / np.sqrt(w @ S @ w))


def bn_least_squares_grad_w(w: np.ndarray, g: float, S: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""∂f/∂w of f(w, γ) = E[y*²] − 2γ bᵀw/‖w‖_S + γ², the BN-reparametrized least squares.

    .. math::

        \nabla_w f(w, \gamma)
        = -\frac{2\gamma}{\|w\|_S}\Big(b - \frac{b^\top w}{\|w\|_S^2} S w\Big).

    At γ = γ*(w) (argument ``g``) it equals ∇R(w) (the envelope theorem), which is what GDNP
    follows.
    """
    S = np.asarray(S, dtype=np.float64)
    w = check_direction(w, S.shape[0])
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
        ``(T+1,)`` excess loss f(w̃_t) − f*; for GDNP this is R(w_t) − R* exactly.
    direction_error
        ``(T+1,)`` sin² of the S-angle between w_t and w* = S⁻¹b, equal to (R(w_t) − R*)/abs(R*).
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
        w_{t+1} = w_t - \eta_t \nabla_w f(w_t, g_t),

        \eta_t = \frac{w_t^\top S w_t}{c\,\nu_d\,|R(w_t)|},

    with ν_d the largest eigenvalue of S and c = ``factor`` (the paper's theorem uses c = 2 and
    then guarantees R(w_t) − R* ≤ (1 − ν_1/ν_d)^{2t}(R(w_0) − R*), ν_1 the smallest; see
    :func:`bncore.theory.kohler_gdnp_bound`). ``factor=1`` takes twice as long a step.
    """
    w = check_direction(w0, problem.d, "w0")
    check_steps(steps)
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
    r"""Plain gradient descent on f(w̃) = E[(y* − xᵀw̃)²] (no normalization).

    w̃_{t+1} = w̃_t − η·2(S w̃_t − b). The default η = 1/(2ν_d) is 1/ν_max(∇²f) (∇²f = 2S),
    the classical step that guarantees f(w̃_t) − f* ≤ (1 − ν_1/ν_d)^{2t}(f(w̃_0) − f*).
    ``w0`` may be zero.
    """
    w = np.asarray(w0, dtype=np.float64)
    if w.shape != (problem.d,):
        raise ValueError(f"w0 must have shape ({problem.d},), got {w.shape}")
    check_steps(steps)
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
