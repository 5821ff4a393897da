r"""GDNP for learning a halfspace: the length by bisection, the direction by gradient steps.

Kohler et al. (2019) also analyse the logistic loss f(w̃) = E[φ(zᵀw̃)], φ(t) = log(1 + eᵗ), with
z = −y* x Gaussian, z ~ N(z̄, Σ). In the length–direction parametrization w̃ = γ·w/‖w‖_Σ
(see :mod:`bncore.experiments.gdnp_least_squares`),

.. math::

    f(w, \gamma) = \mathbb E_\xi\,\varphi\big(\gamma\,(a(w) + \xi)\big),\qquad
    a(w) = \frac{\bar z^\top w}{\|w\|_\Sigma},\quad \xi \sim \mathcal N(0, 1).

f is convex in γ, so the best length is the root of ∂f/∂γ, found by :func:`bisection`;
:func:`gdnp_halfspace` alternates that with a gradient step on the direction, and
:func:`gd_halfspace` runs plain gradient descent on w̃ for comparison. Everything is NumPy
float64 and deterministic given its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bncore.experiments.gdnp_least_squares import check_direction, check_spd, check_steps

__all__ = [
    "BisectionTrace",
    "HalfspaceProblem",
    "HalfspaceTrace",
    "bisection",
    "gd_halfspace",
    "gdnp_halfspace",
]


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
    check_steps(steps)
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

    Here z = −y* x is Gaussian, z ~ N(z̄, Σ), the distributional assumption of Kohler et al.
    (2019). In the reparametrization w̃ = γ·w/‖w‖_Σ, zᵀw̃ = γ·(a(w) + ξ) with ξ ~ N(0, 1) and
    a(w) = z̄ᵀw/‖w‖_Σ, so

    .. math::

        f(w, \gamma) = \mathbb E_\xi\,\varphi\big(\gamma\,(a(w) + \xi)\big),

    computed with the trapezoidal rule on a uniform ξ-grid (spacing ``grid_step`` on
    [−9, 9]). For the analytic integrands here the rule converges exponentially; its error is
    about exp(−2π²/(γ·h)) (the sigmoid's poles sit at distance π/γ from the real ξ-axis), below
    1e-16 for γ ≤ 50 at h = 0.01. The best direction minimizes a(w), i.e.
    w ∝ −Σ⁻¹z̄; a(w)² = −R(w) is the Rayleigh quotient
    (:func:`~bncore.experiments.gdnp_least_squares.rayleigh_quotient`) with b = z̄, S = Σ.

    Attributes
    ----------
    m
        ``(d,)`` mean z̄ of z.
    Sigma
        ``(d, d)`` covariance of z.
    grid_step
        Spacing h of the ξ-grid.
    """

    m: np.ndarray
    Sigma: np.ndarray
    grid_step: float = 0.01

    def __post_init__(self) -> None:
        Sigma = check_spd(self.Sigma, "Sigma")
        m = np.asarray(self.m, dtype=np.float64)
        if m.shape != (Sigma.shape[0],) or not np.any(m):
            raise ValueError(f"m must be a non-zero vector of shape ({Sigma.shape[0]},)")
        if not 0 < self.grid_step <= 0.1:
            raise ValueError(f"grid_step must be in (0, 0.1], got {self.grid_step}")
        object.__setattr__(self, "Sigma", Sigma)
        object.__setattr__(self, "m", m)
        half = round(9.0 / self.grid_step)
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
        """ν_1, the smallest eigenvalue of Σ (Kohler et al.'s μ)."""
        return float(np.linalg.eigvalsh(self.Sigma)[0])

    @property
    def L(self) -> float:
        """ν_d, the largest eigenvalue of Σ (Kohler et al.'s L)."""
        return float(np.linalg.eigvalsh(self.Sigma)[-1])

    @property
    def w_star(self) -> np.ndarray:
        """The optimal direction −Σ⁻¹z̄ (up to positive scale)."""
        return -np.linalg.solve(self.Sigma, self.m)

    @property
    def rho_star(self) -> float:
        """R* = −z̄ᵀΣ⁻¹z̄."""
        return float(self.m @ self.w_star)

    def _quad(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x, self._wts  # type: ignore[attr-defined]

    def margin(self, w: np.ndarray) -> float:
        """a(w) = z̄ᵀw/‖w‖_Σ, the mean of zᵀw/‖w‖_Σ."""
        w = check_direction(w, self.d)
        return float(self.m @ w / np.sqrt(w @ self.Sigma @ w))

    def loss(self, w: np.ndarray, g: float) -> float:
        """f(w, γ) = E φ(γ(a(w) + ξ))."""
        x, wts = self._quad()
        return float(wts @ _softplus(g * (self.margin(w) + x)))

    def dloss_dg(self, w: np.ndarray, g: float) -> float:
        """∂f/∂γ = E[φ'(γ(a + ξ))·(a + ξ)], increasing in γ (f is convex in γ)."""
        x, wts = self._quad()
        s = self.margin(w) + x
        return float(wts @ (_sigmoid(g * s) * s))

    def grad_w(self, w: np.ndarray, g: float) -> np.ndarray:
        r"""∇_w f(w, γ) = c(w, γ)·∇a(w), with c = γ·E[φ'(γ(a + ξ))] and
        ∇a(w) = (z̄ − a(w)·Σw/‖w‖_Σ)/‖w‖_Σ (orthogonal to w).
        """
        w = check_direction(w, self.d)
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
        ``(T+1,)`` sin² of the Σ-angle between w_t and −Σ⁻¹z̄, = (R(w_t) − R*)/abs(R*).
    rho_gap
        ``(T+1,)`` R(w_t) − R* with R the Rayleigh quotient for b = z̄, S = Σ.
    gain
        ``(T,)`` the length γ_t returned by the bisection at outer step t.
    bisection_error
        ``(T, T_s+1)`` the error abs(γ_t^(k) − γ*(w_t)) after k bisection halvings.
    bisection_width
        ``(T, T_s+1)`` bracket width after k halvings.
    loss
        ``(T,)`` f(w_t, γ_t).
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

    1. γ_t = bisection of ∂f/∂γ(w_t, ·) on ``interval`` with T_s = ``bisection_steps`` halvings;
    2. w_{t+1} = w_t − η_t ∇_w f(w_t, γ_t) with η_t = ‖w_t‖²_Σ / (ν_d·abs(a(w_t))·c_t),
       c_t = γ_t E[φ'(γ_t(a + ξ))].

    The step size is our choice: it divides out the scalar c_t of ∇_w f = c_t ∇a and, as
    ∇R = −2a∇a, turns the direction update into the least-squares GDNP step of
    :func:`~bncore.experiments.gdnp_least_squares.gdnp_least_squares` with b = z̄, S = Σ
    (for a(w_t) < 0, i.e. w_t on the correct side).
    The reference root γ*(w_t), against which ``bisection_error`` is measured, is the same
    bisection run for ``reference_steps`` halvings (to float64 resolution).
    """
    w = check_direction(w0, problem.d, "w0")
    check_steps(steps)
    check_steps(bisection_steps, "bisection_steps")
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
    r"""Plain gradient descent on f(w̃) = E[φ(zᵀw̃)], z ~ N(z̄, Σ), for comparison with GDNP.

    With s = zᵀw̃ ~ N(z̄ᵀw̃, w̃ᵀΣw̃) and Stein's lemma,
    ∇f(w̃) = z̄·E[φ'(s)] + Σw̃·E[φ''(s)]. Since φ'' ≤ 1/4, ∇²f ⪯ (Σ + z̄ z̄ᵀ)/4, and the default
    step is its inverse largest eigenvalue, 4/ν_max(Σ + z̄ z̄ᵀ). The fields of the returned
    trace that belong to the bisection are empty; ``gain`` holds ‖w̃_t‖_Σ and ``loss`` f(w̃_t).
    """
    w = check_direction(w0, problem.d, "w0")
    check_steps(steps)
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
