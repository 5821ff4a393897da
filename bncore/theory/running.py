"""Ioffe & Szegedy (2015), Alg. 2: running estimates of the population statistics."""

from __future__ import annotations


def expected_batch_variance(m: int, population_var: float = 1.0) -> float:
    r"""E[σ_B²] = (m − 1)/m · σ² for the biased variance of m i.i.d. values.

    Holds for any distribution with finite variance σ²: Σ(x_i − μ_B)² = Σ(x_i − μ)² − m(μ_B − μ)²
    has expectation mσ² − σ². This is why Ioffe & Szegedy (2015), Alg. 2, step 10, use the
    unbiased m/(m − 1)·E_B[σ_B²] as the inference variance.
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise ValueError(f"m must be an integer >= 2, got {m!r}")
    return (m - 1) / m * population_var


def ema_stationary_variance(momentum: float, batch_stat_var: float) -> float:
    r"""Variance of r_t = (1 − τ)r_{t−1} + τ·s_t at stationarity for i.i.d. s_t: τ/(2 − τ)·Var(s).

    τ is PyTorch's ``momentum``, the weight of the new value. From
    Var(r) = (1 − τ)²Var(r) + τ²Var(s). With PyTorch's default τ = 0.1 this is Var(s)/19: the
    running mean of batch means of size m fluctuates with standard deviation σ/√(19m).
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")
    return momentum / (2.0 - momentum) * batch_stat_var
