"""Kohler et al. (2019): length-direction decoupling (GDNP) and gradient-descent rates."""

from __future__ import annotations

import numpy as np


def _check_mu_L(mu: float, L: float) -> None:
    if not 0.0 < mu <= L:
        raise ValueError(f"need 0 < mu <= L (smallest and largest eigenvalue of S), got {mu}, {L}")


def kohler_gdnp_bound(gap0: float, mu: float, L: float, steps: int) -> np.ndarray:
    r"""Kohler et al. (2019): the GDNP guarantee on least squares, t = 0..steps.

    .. math::

        R(w_t) - R^* \le \Big(1 - \frac{\nu_1}{\nu_d}\Big)^{2t}\,\big(R(w_0) - R^*\big),

    for GDNP with step η_t = wₜᵀSwₜ/(2ν_d|R(wₜ)|), where R(w) = −(wᵀbbᵀw)/(wᵀSw) is the
    generalized Rayleigh quotient (Kohler et al.'s ρ, with b = E[y*x] their u) and
    ``mu`` = ν_1, ``L`` = ν_d are the smallest and largest eigenvalues of S = E[xxᵀ] (Kohler et
    al.'s μ and L). Returns the ``(steps+1,)`` bound.
    """
    _check_mu_L(mu, L)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return gap0 * (1.0 - mu / L) ** (2 * np.arange(steps + 1))


def gd_least_squares_bound(gap0: float, mu: float, L: float, steps: int) -> np.ndarray:
    r"""The classical bound for plain GD on least squares, f(w̃) = E[(y* − xᵀw̃)²], t = 0..steps.

    With step 1/ν_max(∇²f) = 1/(2ν_d), the error e_t = w̃_t − w̃* evolves as
    e_{t+1} = (I − S/ν_d) e_t and f(w̃_t) − f* = e_tᵀ S e_t. Every eigen-component is
    multiplied by 1 − ν_i/ν_d, which lies in [0, 1 − ν_1/ν_d], so (``mu`` = ν_1, ``L`` = ν_d)

    .. math::

        f(\tilde w_t) - f^* \le \Big(1 - \frac{\nu_1}{\nu_d}\Big)^{2t}
        \big(f(\tilde w_0) - f^*\big),

    the *same* bound as :func:`kohler_gdnp_bound`, on the same quantity: for GDNP with the
    optimal length, f(w̃_t) − f* = R(w_t) − R* exactly.
    """
    _check_mu_L(mu, L)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    per_step = (1.0 - mu / L) ** 2  # max_i (1 − ν_i/ν_d)², attained at ν_i = ν_1
    return gap0 * per_step ** np.arange(steps + 1)


def gd_least_squares_rate(eigenvalues: np.ndarray, step: float) -> float:
    r"""Asymptotic per-step contraction of f − f* for GD on least squares with step η.

    e_{t+1} = (I − 2ηS)e_t, so f − f* = Σ ν_i e_i² shrinks per step by max_i (1 − 2ην_i)² in the
    long run (when e_0 has a component along the slowest eigenvector), ν_i the ``eigenvalues``
    of S. With η = 1/(2ν_d) this is (1 − ν_1/ν_d)²: the bound of
    :func:`gd_least_squares_bound` is attained asymptotically.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    return float(np.max((1.0 - 2.0 * step * lam) ** 2))


def gdnp_compressed_spectrum(S: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""Eigenvalues ν̃_1 ≤ … ≤ ν̃_{d−1} of S compressed to the hyperplane b̃^⊥, b̃ = S^{−1/2}b.

    ``u`` is the cross moment b = E[y*x] (Kohler et al.'s u). In the coordinates v = S^{1/2}w,
    GDNP with step w'Sw/(cν_d|R|) reads v_{t+1} = v_t − (2/(cν_d))·S·(v_t + b̃b̃ᵀv_t/R(w_t)).
    Near the optimum v* ∝ b̃ the direction error e ⟂ b̃ evolves as
    e_{t+1} = P(I − 2S/(cν_d))P e_t with P = I − b̃b̃ᵀ/‖b̃‖², so the compression P S P on b̃^⊥
    sets the rate. By Cauchy interlacing ν_i ≤ ν̃_i ≤ ν_{i+1} (ν_i the eigenvalues of S).
    (This linearization is the book's derivation, not a result stated by Kohler et al.)
    """
    S = np.asarray(S, dtype=float)
    u = np.asarray(u, dtype=float)
    lam, V = np.linalg.eigh(S)
    if lam[0] <= 0:
        raise ValueError("S must be positive definite")
    ut = V @ ((V.T @ u) / np.sqrt(lam))  # S^{-1/2} u
    ut = ut / np.linalg.norm(ut)
    P = np.eye(S.shape[0]) - np.outer(ut, ut)
    theta = np.linalg.eigvalsh(P @ S @ P)
    # P S P has one zero eigenvalue (along ũ); drop the eigenvalue closest to zero.
    return np.delete(theta, int(np.argmin(np.abs(theta))))


def gdnp_asymptotic_rate(S: np.ndarray, u: np.ndarray, factor: float = 2.0) -> float:
    r"""Asymptotic per-step contraction of R(w_t) − R* for GDNP with step w'Sw/(c·ν_d|R|).

    R − R* = abs(R*)·sin²∠_S(w, S⁻¹b) is quadratic in the direction error (b the argument
    ``u``), so the rate is the square of the spectral radius of P(I − 2S/(cν_d))P (see
    :func:`gdnp_compressed_spectrum`), with c the argument ``factor``:

    .. math::

        r_c = \max_i \Big(1 - \frac{2\tilde\nu_i}{c\,\nu_d}\Big)^2,\qquad
        r_2 = \Big(1 - \frac{\tilde\nu_1}{\nu_d}\Big)^2 \in
        \Big[\big(1 - \tfrac{\nu_2}{\nu_d}\big)^2, \big(1 - \tfrac{\nu_1}{\nu_d}\big)^2\Big].

    With c = 2 GDNP is asymptotically at least as fast as GD with step 1/(2ν_d), whose rate is
    (1 − ν_1/ν_d)², and at most as fast as GD would be with the smallest eigenvalue removed.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    theta = gdnp_compressed_spectrum(S, u)
    L = float(np.linalg.eigvalsh(np.asarray(S, dtype=float))[-1])
    return float(np.max((1.0 - 2.0 * theta / (factor * L)) ** 2))
