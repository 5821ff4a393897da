"""De & Smith (2020), Brock et al. (2021): variance of the residual stream with and without BN."""

from __future__ import annotations

import math

import numpy as np

from bncore.theory.explosion import gradient_explosion_rate

RESIDUAL_VARIANTS: tuple[str, ...] = ("bn", "none", "skipinit", "fixup", "nf")


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0 (number of residual blocks), got {depth!r}")
    return depth


def residual_stream_variance(
    depth: int, variant: str, *, alpha: float | None = None, input_var: float = 1.0
) -> np.ndarray:
    r"""Predicted second moment q_l = E[x_l²] of a residual stream at initialization, l = 0..L.

    The stream is x_l = x_{l−1} + r_l(x_{l−1}) (:class:`bncore.experiments.resnets.ResNet`), the
    branch r_l ends in a weight layer W with zero-mean entries drawn independently of x_{l−1}, so
    the cross term E[x_{l−1}·r_l] vanishes and q_l = q_{l−1} + E[r_l²]. The branch's second moment
    follows from one fact: for a zero-mean symmetric u, a He-initialized layer (Var W_ij = 2/fan_in)
    after a ReLU maps E[u²] to 2·E[relu(u)²] = E[u²]. So:

    - ``"bn"``: r = W₂ ReLU(BN(W₁ ReLU(BN(x)))). BN's output has unit second moment whatever
      q_{l−1} is, so E[r²] = 1 and q_l = q_0 + l: the variance grows like l + 1, and block l's
      branch contributes 1/(l + 1) of it (De & Smith 2020, normalized residual networks).
      With BN's ε the 1 is σ²/(σ² + ε), which differs from 1 by ~ε.
    - ``"none"``: r = W₂ ReLU(W₁ ReLU(x)); both ReLU→He pairs preserve the second moment, so
      E[r²] = q_{l−1} and q_l = 2·q_{l−1} = 2^l q_0 (De & Smith 2020, unnormalized
      residual networks). Exact in expectation over the weights for a symmetric input; in a
      finite network the stream is only approximately symmetric (mean-field approximation).
    - ``"skipinit"``: r = α·f(x) with f the unnormalized branch, so q_l = (1 + α²)·q_{l−1}
      = (1 + α²)^l q_0 (De & Smith 2020, SkipInit). At SkipInit's α = 0 every block is the identity
      and q_l = q_0 exactly; α ≲ 1/√L keeps (1 + α²)^L ≤ e.
    - ``"fixup"``: the last layer of every branch is zero (Zhang et al. 2019, §3), so q_l = q_0.
    - ``"nf"``: r = α·f(x/σ̄_l) with σ̄_l² = 1 + (l−1)α² the *predicted* Var(x_{l−1})
      (Brock et al.'s β_l) and f
      variance preserving, so q_l = q_{l−1} + α²·q_{l−1}/σ̄_l² (Brock et al. 2021, §4), which is
      q_l = 1 + lα² when q_0 = 1, the value the σ̄_l assume.

    ``alpha`` is SkipInit's α (default 0) or NF's α (default 0.2); ``input_var`` is q_0.
    Returns an array of shape (depth + 1,).
    """
    depth = _check_depth(depth)
    if variant not in RESIDUAL_VARIANTS:
        raise ValueError(f"variant must be one of {RESIDUAL_VARIANTS}, got {variant!r}")
    if not input_var > 0:
        raise ValueError(f"input_var must be > 0, got {input_var}")
    ell = np.arange(depth + 1, dtype=float)
    if variant == "bn":
        return input_var + ell
    if variant == "none":
        return input_var * 2.0**ell
    if variant == "skipinit":
        a = 0.0 if alpha is None else float(alpha)
        return input_var * (1.0 + a * a) ** ell
    if variant == "fixup":
        return np.full(depth + 1, float(input_var))
    a = 0.2 if alpha is None else float(alpha)
    q = np.empty(depth + 1)
    q[0] = input_var
    for i in range(1, depth + 1):
        beta_sq = 1.0 + (i - 1) * a * a
        q[i] = q[i - 1] + a * a * q[i - 1] / beta_sq
    return q


def bn_branch_fraction(depth: int, input_var: float = 1.0) -> np.ndarray:
    r"""Share of Var(x_l) contributed by block l's BN branch, l = 1..L: 1/(q_0 + l).

    De & Smith (2020): BN divides the branch by √Var(x_{l−1}) ≈ √l relative to the
    unnormalized block, so with q_0 = 1 the l-th branch carries 1/(l + 1) of the variance of
    the block's output and the deep blocks are close to the identity. Shape (depth,).
    """
    depth = _check_depth(depth)
    return 1.0 / residual_stream_variance(depth, "bn", input_var=input_var)[1:]


def bn_stream_channel_moments(
    depth: int, input_sq_mean: float = 0.0, input_var: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Average channel squared mean and average channel variance of a BN-ReLU-W ResNet stream.

    Splits q_l = q_0 + l of :func:`residual_stream_variance` into the two curves of a signal
    propagation plot (Brock et al. 2021, §3). The branch ends in W₂·ReLU(y) with y = BN(x)
    zero-mean and unit-variance over the batch; if y is Gaussian, ReLU(y) has batch mean
    1/√(2π), so the channel mean of W₂ReLU(y) has E[mean²] = fan_in·(2/fan_in)·(1/(2π)) = 1/π.
    Each block thus adds 1/π to the average channel squared mean and 1 − 1/π to the average
    channel variance: the mean shift Brock et al. observe in BN-ReLU-Conv ResNets. Gaussian
    approximation for y. Returns two arrays of shape (depth + 1,).
    """
    depth = _check_depth(depth)
    ell = np.arange(depth + 1, dtype=float)
    return input_sq_mean + ell / math.pi, input_var + ell * (1.0 - 1.0 / math.pi)


def bn_resnet_gradient_growth(depth: int, batch_size: int, input_var: float = 1.0) -> np.ndarray:
    r"""Heuristic growth of the stream gradient of a BN ResNet at initialization, l = 0..L.

    Returns E‖∂ℓ/∂x_l‖² / E‖∂ℓ/∂x_L‖² = ∏_{k=l+1}^{L} (1 + λ²/q_{k−1}), q_{k−1} = q_0 + k − 1.

    Derivation (this book's, in the spirit of Yang et al. 2019 and De & Smith 2020): backward
    through block k, ∂ℓ/∂x_{k−1} = g + J_kᵀg with g = ∂ℓ/∂x_k and J_k the branch Jacobian;
    the cross term vanishes in expectation over the branch's last weights, so
    E‖∂ℓ/∂x_{k−1}‖² = E‖g‖²(1 + E‖J_kᵀg‖²/‖g‖²). The branch has two BN→ReLU→W layers; each
    multiplies a squared gradient by λ = :func:`gradient_explosion_rate` (m) when its input has
    unit variance, and the first BN divides by √q_{k−1} more. Hence 1 + λ²/q_{k−1}: the
    per-block factor tends to 1 and the total growth is polynomial, ≈ L^{λ²}, instead of the
    plain network's λ^{2L}. Approximate: the stream's batch statistics are not at the fixed
    point that λ assumes. Shape (depth + 1,).
    """
    depth = _check_depth(depth)
    lam = gradient_explosion_rate(batch_size, "relu")
    factors = 1.0 + lam**2 / (input_var + np.arange(depth, dtype=float))  # block k = 1..L
    growth = np.ones(depth + 1)
    growth[:-1] = np.cumprod(factors[::-1])[::-1]
    return growth
