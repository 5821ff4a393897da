r"""Properties of the training-mode transform and its gradient, for any input (hypothesis), in
both implementations.

With :math:`\hat x = (x-\mu)/\sqrt{\sigma^2+\epsilon}` per channel:

- a per-channel shift of x leaves the output unchanged, exactly (μ moves with x, σ² does not);
- a per-channel positive scale a gives BN(a·x; ε) = BN(x; ε/a²) exactly, so the output is scale
  invariant only as far as ε ≪ σ²; the deviation is bounded by |γ||x̂₀|·ε/(2σ²)·|1 − 1/a²|
  (x̂₀ = (x − μ)/σ, and |d(1 + t)^{-1/2}/dt| ≤ ½);
- Σ dx = 0 per channel; Σ dx·x̂ = γ·ε·(σ² + ε)^{-3/2}·Σ δ·x̂, which is 0 only for ε = 0
  (Σ x̂² = m·σ²/(σ² + ε) < m), so the gradient is orthogonal to x̂ up to the ε term;
- γ = √(σ² + ε), β = μ gives back x.

Inputs stay within ±100 (no subnormals), so float64 rounding, bounded in each test, is far below
the tolerances, which are stated where they are used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from bn_testing import IMPLS, bcast, normalize, normalize_backward
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bncore.norm import stats

U = np.finfo(np.float64).eps  # 2^-52


def finite(bound: float) -> st.SearchStrategy[float]:
    """Floats in [−bound, bound] without subnormals (whose arithmetic is not to relative u)."""
    return st.floats(-bound, bound, allow_nan=False, allow_subnormal=False)


values = finite(100)


@st.composite
def bn_shapes(draw) -> tuple[int, ...]:
    """(N, C, *spatial) of rank 2–4 with at least two values per channel."""
    spatial = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    n = draw(st.integers(2 if math.prod(spatial) == 1 else 1, 4))
    return (n, draw(st.integers(1, 3)), *spatial)


@st.composite
def problems(draw):
    """x, upstream gradient dy, γ, β and ε for one training-mode batch norm."""
    shape = draw(bn_shapes())
    channels = (shape[1],)
    x = draw(hnp.arrays(np.float64, shape, elements=values))
    dy = draw(hnp.arrays(np.float64, shape, elements=finite(10)))
    gamma = draw(hnp.arrays(np.float64, channels, elements=finite(3)))
    beta = draw(hnp.arrays(np.float64, channels, elements=finite(3)))
    eps = draw(st.floats(1e-5, 1.0))
    return x, dy, gamma, beta, eps


def per_channel(x: np.ndarray, stat) -> np.ndarray:
    return bcast(stat, x.ndim)


def conditioning(x: np.ndarray, eps: float) -> np.ndarray:
    """κ = max|x|/√(σ² + ε) per channel: how much normalization magnifies the absolute rounding
    u·max|x| of the input and its mean. Batch norm is ill-conditioned when |μ| ≫ √(σ² + ε).
    """
    _, var = stats.mean_var(x)
    return np.abs(x).max(axis=stats.reduce_axes(x.ndim)) / np.sqrt(var + eps)


def output_tol(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Bound on the rounding error of y = γ·x̂ + β, broadcast to x's shape.

    The mean carries ≲ u·max|x|·log m, which x̂ magnifies by 1/√(σ² + ε), i.e. κ·u; x̂ itself
    (|x̂| ≤ √m) carries a few u; adding β, u·|β|. A factor 64 covers the constants.
    """
    m = stats.count_per_channel(x.shape)
    tol = 64 * U * (np.abs(gamma) * (conditioning(x, eps) + math.sqrt(m) + 1) + np.abs(beta))
    return per_channel(x, tol)


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems(), data=st.data())
def test_output_is_invariant_to_per_channel_shift(impl, problem, data):
    x, _, gamma, beta, eps = problem
    shift = data.draw(hnp.arrays(np.float64, (x.shape[1],), elements=values))
    x_shifted = x + per_channel(x, shift)
    y = normalize(impl, x, gamma, beta, eps)
    y_shifted = normalize(impl, x_shifted, gamma, beta, eps)
    # exact in real arithmetic; in floating point each side is off by its rounding
    tol = output_tol(x, gamma, beta, eps) + output_tol(x_shifted, gamma, beta, eps)
    assert np.all(np.abs(y_shifted - y) <= tol)


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems(), data=st.data())
def test_scaling_input_equals_dividing_eps_by_scale_squared(impl, problem, data):
    x, _, gamma, beta, eps = problem
    scale = data.draw(hnp.arrays(np.float64, (x.shape[1],), elements=st.floats(1e-2, 1e2)))
    y_scaled = normalize(impl, x * per_channel(x, scale), gamma, beta, eps)
    for c in range(x.shape[1]):  # one channel at a time: each has its own ε/a²
        ch = slice(c, c + 1)
        eps_c = eps / scale[c] ** 2
        y_c = normalize(impl, x[:, ch], gamma[ch], beta[ch], eps_c)
        # κ is the same for (a·x, ε) and (x, ε/a²), so the two roundings are alike
        tol = 2 * output_tol(x[:, ch], gamma[ch], beta[ch], eps_c)
        assert np.all(np.abs(y_scaled[:, ch] - y_c) <= tol)


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems(), data=st.data())
def test_output_is_scale_invariant_up_to_eps_over_variance(impl, problem, data):
    x, _, gamma, beta, eps = problem
    scale = data.draw(hnp.arrays(np.float64, (x.shape[1],), elements=st.floats(1e-2, 1e2)))
    y = normalize(impl, x, gamma, beta, eps)
    y_scaled = normalize(impl, x * per_channel(x, scale), gamma, beta, eps)
    mean, var = stats.mean_var(x)  # σ = 0: the bound is inf or nan (x̂₀ = 0); y = β in both
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xhat0 = np.nan_to_num((x - per_channel(x, mean)) / per_channel(x, np.sqrt(var)))
        bound = np.abs(per_channel(x, gamma)) * np.abs(xhat0) * per_channel(
            x, eps / (2 * var) * np.abs(1 - 1 / scale**2)
        )
    x_scaled = x * per_channel(x, scale)
    rounding = output_tol(x, gamma, beta, eps) + output_tol(x_scaled, gamma, beta, eps)
    assert np.all(np.abs(y_scaled - y) <= np.nan_to_num(bound, nan=0.0) + rounding)


def _gradient_scale(x, dy, gamma, eps):
    """x̂, σ², 1/√(σ²+ε) and a per-channel bound on the rounding error of Σdx and Σdx·x̂.

    The terms summed have size |γ|/√(σ²+ε)·Σ|δ|·(1 + max|x̂|)², each with a few roundings; and
    x̂ carries the mean's rounding magnified by κ, so Σx̂ is κ·u rather than 0. Hence
    1e3·u·(1 + κ)·size (m ≤ 36 terms).
    """
    axes = stats.reduce_axes(x.ndim)
    mean, var = stats.mean_var(x)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - per_channel(x, mean)) * per_channel(x, invstd)
    size = np.abs(gamma) * invstd * np.abs(dy).sum(axis=axes)
    size = size * (1 + np.abs(xhat).max(axis=axes)) ** 2 * (1 + conditioning(x, eps))
    return xhat, var, invstd, 1e3 * U * size


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems())
def test_input_gradient_sums_to_zero_per_channel(impl, problem):
    x, dy, gamma, beta, eps = problem
    dx, _, _ = normalize_backward(impl, x, gamma, beta, dy, eps)
    _, _, _, size = _gradient_scale(x, dy, gamma, eps)
    assert np.all(np.abs(dx.sum(axis=stats.reduce_axes(x.ndim))) <= size)


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems())
def test_input_gradient_is_orthogonal_to_xhat_up_to_the_eps_term(impl, problem):
    x, dy, gamma, beta, eps = problem
    dx, _, _ = normalize_backward(impl, x, gamma, beta, dy, eps)
    xhat, _, invstd, size = _gradient_scale(x, dy, gamma, eps)
    axes = stats.reduce_axes(x.ndim)
    dot = (dx * xhat).sum(axis=axes)
    eps_term = gamma * eps * invstd**3 * (dy * xhat).sum(axis=axes)
    assert np.all(np.abs(dot - eps_term) <= size)


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems())
def test_input_gradient_is_orthogonal_to_xhat_when_eps_vanishes(impl, problem):
    x, dy, gamma, beta, _ = problem
    eps = 1e-300  # > 0, as training requires
    dx, _, _ = normalize_backward(impl, x, gamma, beta, dy, eps)
    xhat, var, _, size = _gradient_scale(x, dy, gamma, eps)
    # where σ² > 1e-280 the ε term is < 1e-20 of the terms summed, far below rounding
    live = var > 1e-280
    dot = (dx * xhat).sum(axis=stats.reduce_axes(x.ndim))
    assert np.all(np.abs(dot[live]) <= size[live])


@pytest.mark.parametrize("impl", IMPLS)
@given(problem=problems())
def test_gamma_sigma_and_beta_mu_recover_the_input(impl, problem):
    x, _, _, _, eps = problem
    mean, var = stats.mean_var(x)
    y = normalize(impl, x, np.sqrt(var + eps), mean, eps)
    # y = √(σ²+ε)·(x − μ)/√(σ²+ε) + μ: a few roundings relative to max(|x − μ|, |μ|) ≤ 2·max|x|
    atol = 16 * U * np.abs(x).max(axis=stats.reduce_axes(x.ndim))
    assert np.all(np.abs(y - x) <= per_channel(x, atol))
