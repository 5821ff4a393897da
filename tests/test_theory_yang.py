"""Yang et al. (2019): the gradient explosion rate λ of BN MLPs and the trainable depth."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bncore.theory import (
    RELU_EXPLOSION_LIMIT,
    arccos_kernel,
    gradient_explosion_rate,
    gradient_explosion_rate_large_eps,
    trainable_depth,
)


@pytest.mark.parametrize("b, expected", [(4, 2.0), (5, 1.5), (6, 4 / 3), (8, 1.2), (33, 31 / 30)])
def test_linear_rate_is_b_minus_2_over_b_minus_3(b: int, expected: float) -> None:
    assert gradient_explosion_rate(b, "linear") == pytest.approx(expected, rel=1e-15)


def test_relu_rate_at_batch_4_by_hand() -> None:
    # c = −1/3: √(1 − c²) = √8/3 and π − arccos(−1/3) = arccos(1/3) (arccos(−x) = π − arccos x).
    c = -1 / 3
    a = math.acos(1 / 3)
    j = (math.sqrt(8) / 3 + a * c) / math.pi
    dj = a / math.pi
    by_hand = (dj + 3) / (1 * (1 - j)) - 1  # B = 4: B − 1 = 3, B − 3 = 1
    assert by_hand == pytest.approx(3.0840609, abs=1e-6)
    assert gradient_explosion_rate(4, "relu") == pytest.approx(by_hand, rel=1e-14)


def test_relu_rate_decreases_to_pi_over_pi_minus_one() -> None:
    rates = [gradient_explosion_rate(b, "relu") for b in range(4, 400)]
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert RELU_EXPLOSION_LIMIT == pytest.approx(math.pi / (math.pi - 1))
    assert rates[-1] > RELU_EXPLOSION_LIMIT
    # the approach is O(1/B): at B = 10⁶ the gap is below 1e-5
    assert gradient_explosion_rate(10**6, "relu") == pytest.approx(RELU_EXPLOSION_LIMIT, abs=1e-5)


def test_linear_rate_tends_to_one_and_relu_exceeds_linear() -> None:
    assert gradient_explosion_rate(10**6, "linear") == pytest.approx(1.0, abs=2e-6)
    for b in (4, 8, 64, 1024):
        assert gradient_explosion_rate(b, "relu") > gradient_explosion_rate(b, "linear") > 1


def test_linear_rate_is_inverse_variance_times_projection() -> None:
    """(B−2)/(B−3) = E[1/σ²]·(B−2)/(B−1) with σ² ~ χ²_{B−1}/(B−1) (the docstring's reading)."""
    b = 10  # χ²_9: 1/σ² has finite variance, so a Monte Carlo mean converges at 1/√n
    rng = np.random.default_rng(0)
    inv = (b - 1) / rng.chisquare(b - 1, size=2_000_000)
    se = inv.std() / math.sqrt(inv.size)
    assert abs(inv.mean() - (b - 1) / (b - 3)) < 4 * se
    assert (b - 1) / (b - 3) * (b - 2) / (b - 1) == pytest.approx(
        gradient_explosion_rate(b, "linear"), rel=1e-14
    )


@pytest.mark.parametrize("c", [-1.0, -0.5, -1 / 7, 0.0, 0.3, 0.9, 1.0])
def test_arccos_kernel_matches_gaussian_expectations(c: float) -> None:
    j, dj = arccos_kernel(c)
    # Sheppard: P(u > 0, v > 0) = 1/4 + arcsin(c)/(2π) = J′(c)/2
    assert dj / 2 == pytest.approx(0.25 + math.asin(c) / (2 * math.pi), abs=1e-14)
    # E[relu(u) relu(v)] with v = c·u + s·w (s = √(1 − c²), w independent): conditioning on u,
    # E[relu(a + s·w)] = a·Φ(a/s) + s·φ(a/s); the remaining 1-D integral over u > 0 is smooth.
    s = math.sqrt(1 - c * c)
    u = np.linspace(0.0, 12.0, 200_001)
    pdf = np.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    if s > 0:
        a = c * u
        cdf = 0.5 * (1 + np.vectorize(math.erf)(a / (s * math.sqrt(2))))
        inner = a * cdf + s * np.exp(-((a / s) ** 2) / 2) / math.sqrt(2 * math.pi)
    else:  # v = ±u
        inner = np.maximum(c * u, 0.0)
    expect = float(np.trapezoid(u * inner * pdf, u))
    assert j / 2 == pytest.approx(expect, abs=1e-9)


def test_arccos_kernel_endpoints() -> None:
    assert arccos_kernel(1.0) == pytest.approx((1.0, 1.0))
    assert arccos_kernel(0.0) == pytest.approx((1 / math.pi, 0.5))
    assert arccos_kernel(-1.0) == pytest.approx((0.0, 0.0), abs=1e-15)
    with pytest.raises(ValueError, match="correlation"):
        arccos_kernel(1.5)


@pytest.mark.parametrize("b", [3, 2, 1, 0, -5])
def test_rate_raises_for_batch_size_at_most_3(b: int) -> None:
    for act in ("linear", "relu"):
        with pytest.raises(ValueError, match="B >= 4"):
            gradient_explosion_rate(b, act)


@pytest.mark.parametrize("b", [8.0, "8", True, None])
def test_rate_raises_type_error_for_non_integer_batch_size(b: object) -> None:
    with pytest.raises(TypeError, match="batch_size must be an int"):
        gradient_explosion_rate(b, "relu")  # type: ignore[arg-type]


def test_rate_accepts_numpy_integers() -> None:
    assert gradient_explosion_rate(np.int64(8), "linear") == pytest.approx(1.2)


def test_rate_raises_for_unknown_activation() -> None:
    with pytest.raises(ValueError, match="activation"):
        gradient_explosion_rate(8, "tanh")


def test_trainable_depth_is_16_over_log_rate() -> None:
    assert trainable_depth(math.e) == pytest.approx(16.0)
    lam = gradient_explosion_rate(16, "relu")
    assert trainable_depth(lam) == pytest.approx(16 / math.log(lam))
    assert trainable_depth(lam, budget=8.0) == pytest.approx(8 / math.log(lam))
    # the large-batch ReLU limit: 16/ln(π/(π−1)) ≈ 41.8 layers
    assert trainable_depth(RELU_EXPLOSION_LIMIT) == pytest.approx(41.7557, abs=1e-3)


@pytest.mark.parametrize("lam", [1.0, 0.5, -2.0, math.nan])
def test_trainable_depth_needs_an_exploding_rate(lam: float) -> None:
    with pytest.raises(ValueError, match="lam > 1"):
        trainable_depth(lam)


def test_trainable_depth_needs_positive_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        trainable_depth(1.5, budget=0.0)


@pytest.mark.parametrize("b", [4, 5, 8, 16, 128, 10_000])
def test_yang_rate_factors_through_the_large_eps_rate(b: int) -> None:
    # λ = E[1/σ²]·λ_∞ − (projection) = ((B − 1)·λ_∞ − 1)/(B − 3), for both activations
    for act in ("linear", "relu"):
        lam_inf = gradient_explosion_rate_large_eps(b, act)
        assert ((b - 1) * lam_inf - 1) / (b - 3) == pytest.approx(
            gradient_explosion_rate(b, act), rel=1e-12
        )


def test_large_eps_rate_limits() -> None:
    assert gradient_explosion_rate_large_eps(16, "linear") == 1.0
    rates = [gradient_explosion_rate_large_eps(b, "relu") for b in (4, 8, 16, 64, 10**6)]
    assert all(a < b for a, b in itertools.pairwise(rates))  # increases with B
    assert rates[-1] == pytest.approx(RELU_EXPLOSION_LIMIT, abs=1e-5)
    assert all(1 < r < gradient_explosion_rate(b, "relu")
               for r, b in zip(rates, (4, 8, 16, 64, 10**6), strict=True))
    with pytest.raises(ValueError, match="B >= 4"):
        gradient_explosion_rate_large_eps(3, "relu")
    with pytest.raises(ValueError, match="activation"):
        gradient_explosion_rate_large_eps(8, "tanh")
