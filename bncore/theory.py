"""Closed-form predictions of batch-norm theory, each with its paper and equation.

Theory lives here, apart from the simulations that test it (``explosion``, ``signal_prop``,
``gdnp``, ``landscape``), so that a chapter can draw one against the other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# --- Santurkar et al. 2018: gradient and Hessian bounds through BN (Thm 4.1, 4.2) ---


def _santurkar_check(grad_out: Tensor, yhat: Tensor, gamma: Tensor, sigma: Tensor) -> int:
    """Validate the (m, C) / (C,) shapes shared by the Thm 4.1 and 4.2 bounds; return m."""
    if grad_out.dim() != 2 or grad_out.shape != yhat.shape:
        raise ValueError(
            "grad_out and yhat must both have shape (m, C) (batch, channels), got "
            f"{tuple(grad_out.shape)} and {tuple(yhat.shape)}"
        )
    m, c = grad_out.shape
    if m < 2:
        raise ValueError(f"the bounds need a batch of m >= 2 values per channel, got m = {m}")
    for name, t in (("gamma", gamma), ("sigma", sigma)):
        if t.shape != (c,):
            raise ValueError(f"{name} must have shape (C,) = ({c},), got {tuple(t.shape)}")
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be positive in every channel")
    return m


def santurkar_grad_bound(
    grad_out: Tensor,
    yhat: Tensor,
    gamma: Tensor,
    sigma: Tensor,
    *,
    misprint: bool = False,
) -> Tensor:
    r"""Right-hand side of Santurkar et al. (2018), Theorem 4.1, per channel j.

    .. math::

        \|\nabla_{y_j}\hat L\|^2 \le \frac{\gamma_j^2}{\sigma_j^2}\Big(\|g_j\|^2
        - \tfrac1m\langle \mathbf 1, g_j\rangle^2 - \tfrac1m\langle g_j, \hat y_j\rangle^2\Big),

    where y_j ∈ R^m is channel j's pre-BN activation over the batch, ŷ_j = (y_j − μ_j)/σ_j its
    normalized value, σ_j = √(σ_B² + ε) the batch standard deviation BN divides by, and
    g_j = ∇_{z_j} L the gradient of the loss downstream of the BN output z_j = γ_j ŷ_j + β_j
    (the paper's ∇_{y_j} L of the "identical non-BN network").

    Parameters
    ----------
    grad_out: (m, C) the downstream gradient g.
    yhat: (m, C) the normalized activations ŷ.
    gamma, sigma: (C,) BN's scale γ and the standard deviation σ_j it divides by.
    misprint: use 1/√m instead of 1/m in front of ⟨g, ŷ⟩², as some copies of the paper
        print it. That version is *not* a bound (it undercuts the exact value whenever
        ⟨g, ŷ⟩ ≠ 0 and m > 1).

    Returns
    -------
    (C,) the bound on ‖∇_{y_j} L̂‖² for each channel. For ε = 0 it holds with equality (BN's
    backward is γ/σ times the orthogonal projection onto {1, ŷ}^⊥).
    """
    m = _santurkar_check(grad_out, yhat, gamma, sigma)
    coef = 1.0 / math.sqrt(m) if misprint else 1.0 / m
    sq = grad_out.square().sum(0)
    mean_term = grad_out.sum(0).square() / m
    yhat_term = coef * (grad_out * yhat).sum(0).square()
    return gamma.square() / sigma.square() * (sq - mean_term - yhat_term)


def santurkar_grad_gap(
    grad_out: Tensor, yhat: Tensor, gamma: Tensor, var: Tensor, eps: float
) -> Tensor:
    r"""Exact slack of Theorem 4.1 for BN with ε > 0 (derived in the smoothing chapter).

    With σ_j² = σ_B² + ε, BN's backward is (γ/σ_j)·P with P = I − 11ᵀ/m − ŷŷᵀ/m, whose
    eigenvalue along ŷ is λ = ε/σ_j² instead of 0, so P² ⪯ P and

    .. math::

        \text{bound} - \|\nabla_{y_j}\hat L\|^2
        = \frac{\gamma_j^2\,\epsilon\,\langle g_j, \hat y_j\rangle^2}
               {m\,(\sigma_{B,j}^2+\epsilon)^2}.

    Parameters
    ----------
    grad_out, yhat: (m, C) as in :func:`santurkar_grad_bound`.
    gamma: (C,) BN's scale; var: (C,) the biased batch variance σ_B² (without ε); eps: ε ≥ 0.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    m = _santurkar_check(grad_out, yhat, gamma, torch.sqrt(var + eps))
    return gamma.square() * eps * (grad_out * yhat).sum(0).square() / (m * (var + eps).square())


def santurkar_hessian_bound(
    grad_in: Tensor,
    grad_out: Tensor,
    yhat: Tensor,
    quad_out: Tensor,
    gamma: Tensor,
    sigma: Tensor,
) -> Tensor:
    r"""Right-hand side of Santurkar et al. (2018), Theorem 4.2, per channel j.

    .. math::

        (\nabla_{y_j}\hat L)^\top \frac{\partial^2\hat L}{\partial y_j\partial y_j}
        (\nabla_{y_j}\hat L) \le \frac{\gamma^2}{\sigma^2}
        (\nabla_{y_j}\hat L)^\top H_{jj} (\nabla_{y_j}\hat L)
        - \frac{\gamma}{m\sigma^2}\langle \hat g_j, \hat y_j\rangle
        \|\nabla_{y_j}\hat L\|^2,

    with ĝ_j = ∇_{z_j} L and H_jj = ∂²L/∂z_j∂z_j the downstream gradient and Hessian (the
    paper's "gradient and Hessian of the loss with respect to the layer outputs"), γ, β held
    constant. For ε = 0 it is an identity: the quadratic form has exactly these two parts,
    the downstream curvature seen through BN's Jacobian and BN's own curvature along ŷ.

    Parameters
    ----------
    grad_in: (m, C) v = ∇_y L̂, the gradient through BN.
    grad_out: (m, C) ĝ = ∇_z L. yhat: (m, C) ŷ.
    quad_out: (C,) v_jᵀ H_jj v_j, the downstream Hessian's quadratic form along channel j's v.
    gamma, sigma: (C,) γ and σ_j = √(σ_B² + ε).
    """
    m = _santurkar_check(grad_out, yhat, gamma, sigma)
    if grad_in.shape != grad_out.shape or quad_out.shape != gamma.shape:
        raise ValueError("grad_in must be (m, C) like grad_out and quad_out (C,) like gamma")
    s2 = sigma.square()
    return gamma.square() / s2 * quad_out - gamma / (m * s2) * (grad_out * yhat).sum(
        0
    ) * grad_in.square().sum(0)

# --- Yang et al. 2019: gradient explosion at initialization ---

_YANG_ACTIVATIONS = ("linear", "relu")


def _check_batch_size(batch_size: int) -> int:
    """Return B as an int; ``TypeError`` unless it is an integer, ``ValueError`` if B ≤ 3."""
    import operator

    if isinstance(batch_size, bool):
        raise TypeError("batch_size must be an int, got bool")
    try:
        batch_size = operator.index(batch_size)
    except TypeError:
        raise TypeError(
            f"batch_size must be an int, got {type(batch_size).__name__} {batch_size!r}"
        ) from None
    if batch_size <= 3:
        raise ValueError(
            f"the gradient explosion rate is defined for batch_size B >= 4 "
            f"(it has a pole at B = 3), got B = {batch_size}"
        )
    return batch_size


def arccos_kernel(c: float) -> tuple[float, float]:
    r"""The ReLU ("arc-cosine") kernel J(c) and its derivative J′(c), for c ∈ [−1, 1].

    .. math::

        J(c) = \frac{\sqrt{1-c^2} + (\pi - \arccos c)\,c}{\pi},\qquad
        J'(c) = \frac{\pi - \arccos c}{\pi},

    so that for a standard bivariate Gaussian (u, v) with correlation c,
    E[relu(u)·relu(v)] = J(c)/2 and E[relu′(u)·relu′(v)] = J′(c)/2 (Cho & Saul 2009; the
    normalization used by Yang et al. 2019).
    """
    if not -1.0 <= c <= 1.0:
        raise ValueError(f"c must be a correlation in [-1, 1], got {c}")
    theta = math.acos(c)
    return (math.sqrt(1.0 - c * c) + (math.pi - theta) * c) / math.pi, (math.pi - theta) / math.pi


def gradient_explosion_rate(batch_size: int, activation: str = "relu") -> float:
    r"""Per-layer growth factor λ of the *squared* gradient norm of a batch-normalized MLP.

    Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz (2019), *A Mean Field Theory of Batch
    Normalization* (ICLR): in the network z^l = W^l φ(BN(z^{l−1})) with
    W^l_ij ~ N(0, σ_w²/N), γ = 1, β = 0, batch size B and width N → ∞, the squared norm of the
    gradient grows by a factor λ per layer going from the output toward the input,
    E‖∇_{W^{l−1}} L‖² ≈ λ·E‖∇_{W^l} L‖², independently of σ_w. For

    - φ = identity:  λ = (B − 2)/(B − 3);
    - φ = ReLU:
      λ = (J′(c) + B − 1) / ((B − 3)(1 − J(c))) − 1/(B − 3), with c = −1/(B − 1), the
      correlation between two examples of a batch at BN's symmetric fixed point, and J, J′
      the arc-cosine kernel of :func:`arccos_kernel`. λ decreases in B to
      π/(π − 1) ≈ 1.467 as B → ∞ (c → 0, J → 1/π, J′ → 1/2).

    The linear case reads: BN divides by the batch standard deviation, whose inverse square
    has mean E[(χ²_{B−1}/(B−1))^{−1}] = (B − 1)/(B − 3) at the fixed point, and projects out
    one of the B − 1 centred directions, (B − 2)/(B − 1); the product is (B − 2)/(B − 3).
    The *norm* grows by √λ per layer.

    Raises ``ValueError`` for B ≤ 3 (the rate is undefined: E[1/σ²] diverges) and for an
    unknown activation, ``TypeError`` for a non-integer B.
    """
    b = _check_batch_size(batch_size)
    if activation == "linear":
        return (b - 2) / (b - 3)
    if activation == "relu":
        c = -1.0 / (b - 1)
        j, dj = arccos_kernel(c)
        return (dj + b - 1) / ((b - 3) * (1.0 - j)) - 1.0 / (b - 3)
    raise ValueError(f"activation must be one of {_YANG_ACTIVATIONS}, got {activation!r}")


RELU_EXPLOSION_LIMIT: float = math.pi / (math.pi - 1.0)
"""lim_{B→∞} λ for ReLU, π/(π − 1) ≈ 1.467 (Yang et al. 2019): a squared-norm rate."""


def trainable_depth(lam: float, budget: float = 16.0) -> float:
    r"""Depth at which the squared gradient norm has grown by e^{budget}: budget / ln λ.

    Yang et al. (2019) compare the depth × batch-size region where plain BN networks still
    train with the curve L = 16/ln λ. Its reading: through L layers the squared gradient
    norm grows by λ^L from the last layer to the first, and 16/ln λ is the depth at which
    that ratio reaches e^16 ≈ 8.9·10⁶. The 16 is an empirical constant (how large a spread of
    gradient scales across layers training tolerates), not a derived one; ``budget`` lets a
    chapter vary it.
    """
    lam = float(lam)
    if not lam > 1.0:
        raise ValueError(f"trainable_depth needs an exploding rate lam > 1, got {lam}")
    if not budget > 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    return budget / math.log(lam)


def gradient_explosion_rate_large_eps(batch_size: int, activation: str = "relu") -> float:
    r"""The rate λ of :func:`gradient_explosion_rate` in the limit ε → ∞ (BN = centring only).

    Derived in this book (chapter "Gradient explosion at initialization"), not in Yang et al.
    (2019), with the same mean-field bookkeeping: width → ∞, gradients independent of the
    forward weights, and the symmetric fixed point (every pair of examples with correlation
    c = −1/(B − 1) after centring). When ε ≫ σ_B², BN(z) ≈ (z − μ_B)/√ε: it still centres,
    but it no longer divides by the fluctuating σ_B, nor projects out x̂. Per layer, the
    centred variance of φ(u) shrinks by f ∝ (1 − J(c))(B − 1)/(2B) and the squared gradient
    by b ∝ (B − 1 + J′(c))/(2B) (same constant), so the weight gradient grows by

    .. math::

        \lambda_\infty = \frac{b}{f} = \frac{B - 1 + J'(c)}{(B - 1)\,(1 - J(c))}
        \quad(\text{ReLU}),\qquad \lambda_\infty = 1 \quad(\text{linear}),

    and λ_∞ → π/(π − 1) as B → ∞. Yang et al.'s rates factor through it:
    λ = ((B − 1)·λ_∞ − 1)/(B − 3), i.e. the division by σ_B multiplies by
    E[1/σ²] = (B − 1)/(B − 3) and the projection removes 1/(B − 3). For ReLU the explosion
    that survives a large ε is that of centring a non-negative signal; for linear φ none does.
    Same arguments and errors as :func:`gradient_explosion_rate` (B ≥ 4).
    """
    b = _check_batch_size(batch_size)
    if activation == "linear":
        return 1.0
    if activation == "relu":
        j, dj = arccos_kernel(-1.0 / (b - 1))
        return (b - 1 + dj) / ((b - 1) * (1.0 - j))
    raise ValueError(f"activation must be one of {_YANG_ACTIVATIONS}, got {activation!r}")


# --- De & Smith 2020; Brock et al. 2021: residual-stream variance ---


RESIDUAL_VARIANTS: tuple[str, ...] = ("bn", "none", "skipinit", "fixup", "nf")


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0 (number of residual blocks), got {depth!r}")
    return depth


def residual_stream_variance(
    depth: int, variant: str, *, alpha: float | None = None, input_var: float = 1.0
) -> np.ndarray:
    r"""Predicted second moment q_ℓ = E[x_ℓ²] of a residual stream at initialization, ℓ = 0..L.

    The stream is x_ℓ = x_{ℓ−1} + r_ℓ(x_{ℓ−1}) (:class:`bncore.resnets.ResNet`), the branch
    r_ℓ ends in a weight layer W with zero-mean entries drawn independently of x_{ℓ−1}, so the
    cross term E[x_{ℓ−1}·r_ℓ] vanishes and q_ℓ = q_{ℓ−1} + E[r_ℓ²]. The branch's second moment
    follows from one fact: for a zero-mean symmetric u, a He-initialized layer
    (Var W_ij = 2/fan_in) after a ReLU maps E[u²] to 2·E[relu(u)²] = E[u²]. So:

    - ``"bn"``: r = W₂ ReLU(BN(W₁ ReLU(BN(x)))). BN's output has unit second moment whatever
      q_{ℓ−1} is, so E[r²] = 1 and q_ℓ = q_0 + ℓ: the variance grows like ℓ + 1, and block ℓ's
      branch contributes 1/(ℓ + 1) of it (De & Smith 2020, normalized residual networks).
      With BN's ε the 1 is σ²/(σ² + ε), which differs from 1 by ~ε.
    - ``"none"``: r = W₂ ReLU(W₁ ReLU(x)); both ReLU→He pairs preserve the second moment, so
      E[r²] = q_{ℓ−1} and q_ℓ = 2·q_{ℓ−1} = 2^ℓ q_0 (De & Smith 2020, unnormalized
      residual networks). Exact in expectation over the weights for a symmetric input; in a
      finite network the stream is only approximately symmetric (mean-field approximation).
    - ``"skipinit"``: r = α·f(x) with f the unnormalized branch, so q_ℓ = (1 + α²)·q_{ℓ−1}
      = (1 + α²)^ℓ q_0 (De & Smith 2020, SkipInit). At SkipInit's α = 0 every block is the identity
      and q_ℓ = q_0 exactly; α ≲ 1/√L keeps (1 + α²)^L ≤ e.
    - ``"fixup"``: the last layer of every branch is zero (Zhang et al. 2019, §3), so q_ℓ = q_0.
    - ``"nf"``: r = α·f(x/β_ℓ) with β_ℓ² = 1 + (ℓ−1)α² the *predicted* Var(x_{ℓ−1}) and f
      variance preserving, so q_ℓ = q_{ℓ−1} + α²·q_{ℓ−1}/β_ℓ² (Brock et al. 2021, §4), which is
      q_ℓ = 1 + ℓα² when q_0 = 1, the value the β_ℓ assume.

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
    r"""Share of Var(x_ℓ) contributed by block ℓ's BN branch, ℓ = 1..L: 1/(q_0 + ℓ).

    De & Smith (2020): BN divides the branch by √Var(x_{ℓ−1}) ≈ √ℓ relative to the
    unnormalized block, so with q_0 = 1 the ℓ-th branch carries 1/(ℓ + 1) of the variance of
    the block's output and the deep blocks are close to the identity. Shape (depth,).
    """
    depth = _check_depth(depth)
    return 1.0 / residual_stream_variance(depth, "bn", input_var=input_var)[1:]


def bn_stream_channel_moments(
    depth: int, input_sq_mean: float = 0.0, input_var: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Average channel squared mean and average channel variance of a BN-ReLU-W ResNet stream.

    Splits q_ℓ = q_0 + ℓ of :func:`residual_stream_variance` into the two curves of a signal
    propagation plot (Brock et al. 2021, §3). The branch ends in W₂·ReLU(z) with z = BN(h)
    zero-mean and unit-variance over the batch; if z is Gaussian, ReLU(z) has batch mean
    1/√(2π), so the channel mean of W₂ReLU(z) has E[mean²] = fan_in·(2/fan_in)·(1/(2π)) = 1/π.
    Each block thus adds 1/π to the average channel squared mean and 1 − 1/π to the average
    channel variance: the mean shift Brock et al. observe in BN-ReLU-Conv ResNets. Gaussian
    approximation for z. Returns two arrays of shape (depth + 1,).
    """
    depth = _check_depth(depth)
    ell = np.arange(depth + 1, dtype=float)
    return input_sq_mean + ell / math.pi, input_var + ell * (1.0 - 1.0 / math.pi)


def bn_resnet_gradient_growth(depth: int, batch_size: int, input_var: float = 1.0) -> np.ndarray:
    r"""Heuristic growth of the stream gradient of a BN ResNet at initialization, ℓ = 0..L.

    Returns E‖∂L/∂x_ℓ‖² / E‖∂L/∂x_L‖² = ∏_{k=ℓ+1}^{L} (1 + λ²/q_{k−1}), q_{k−1} = q_0 + k − 1.

    Derivation (this book's, in the spirit of Yang et al. 2019 and De & Smith 2020): backward
    through block k, ∂L/∂x_{k−1} = g + J_kᵀg with g = ∂L/∂x_k and J_k the branch Jacobian;
    the cross term vanishes in expectation over the branch's last weights, so
    E‖∂L/∂x_{k−1}‖² = E‖g‖²(1 + E‖J_kᵀg‖²/‖g‖²). The branch has two BN→ReLU→W layers; each
    multiplies a squared gradient by λ = :func:`gradient_explosion_rate` (B) when its input has
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


# --- Kohler et al. 2019: length-direction decoupling (GDNP) ---


def _check_mu_L(mu: float, L: float) -> None:
    if not 0.0 < mu <= L:
        raise ValueError(f"need 0 < mu <= L (smallest and largest eigenvalue of S), got {mu}, {L}")


def kohler_gdnp_bound(gap0: float, mu: float, L: float, steps: int) -> np.ndarray:
    r"""Kohler et al. (2019): the GDNP guarantee on least squares, t = 0..steps.

    .. math::

        \rho(w_t) - \rho^* \le \Big(1 - \frac{\mu}{L}\Big)^{2t}\,\big(\rho(w_0) - \rho^*\big),

    for GDNP with step η_t = wₜᵀSwₜ/(2L|ρ(wₜ)|), where ρ(w) = −(wᵀuuᵀw)/(wᵀSw) and μ, L are
    the smallest and largest eigenvalues of S = E[xxᵀ]. Returns the ``(steps+1,)`` bound.
    """
    _check_mu_L(mu, L)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return gap0 * (1.0 - mu / L) ** (2 * np.arange(steps + 1))


def gd_least_squares_bound(gap0: float, mu: float, L: float, steps: int) -> np.ndarray:
    r"""The classical bound for plain GD on least squares, f(w̃) = E[(y − xᵀw̃)²], t = 0..steps.

    With step 1/λ_max(∇²f) = 1/(2L), the error e_t = w̃_t − w̃* evolves as
    e_{t+1} = (I − S/L) e_t and f(w̃_t) − f* = e_tᵀ S e_t. Every eigen-component is multiplied
    by 1 − λ_i/L, which lies in [0, 1 − μ/L], so

    .. math::

        f(\tilde w_t) - f^* \le \Big(1 - \frac{\mu}{L}\Big)^{2t}\,\big(f(\tilde w_0) - f^*\big),

    the *same* bound as :func:`kohler_gdnp_bound`, on the same quantity: for GDNP with the
    optimal length, f(w̃_t) − f* = ρ(w_t) − ρ* exactly.
    """
    _check_mu_L(mu, L)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    per_step = (1.0 - mu / L) ** 2  # max_i (1 − λ_i/L)², attained at λ_i = μ
    return gap0 * per_step ** np.arange(steps + 1)


def gd_least_squares_rate(eigenvalues: np.ndarray, step: float) -> float:
    r"""Asymptotic per-step contraction of f − f* for GD on least squares with step η.

    e_{t+1} = (I − 2ηS)e_t, so f − f* = Σ λ_i e_i² shrinks per step by max_i (1 − 2ηλ_i)² in the
    long run (when e_0 has a component along the slowest eigenvector). With η = 1/(2L) this is
    (1 − μ/L)²: the bound of :func:`gd_least_squares_bound` is attained asymptotically.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    return float(np.max((1.0 - 2.0 * step * lam) ** 2))


def gdnp_compressed_spectrum(S: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""Eigenvalues θ_1 ≤ … ≤ θ_{d−1} of S compressed to the hyperplane ũ^⊥, ũ = S^{−1/2}u.

    In the coordinates v = S^{1/2}w, GDNP with step w'Sw/(cL|ρ|) reads
    v_{t+1} = v_t − (2/(cL))·S·(v_t + ũũᵀv_t/ρ(w_t)). Near the optimum v* ∝ ũ the direction
    error e ⟂ ũ evolves as e_{t+1} = P(I − 2S/(cL))P e_t with P = I − ũũᵀ/‖ũ‖², so the
    compression P S P on ũ^⊥ sets the rate. By Cauchy interlacing λ_i ≤ θ_i ≤ λ_{i+1}.
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
    r"""Asymptotic per-step contraction of ρ(w_t) − ρ* for GDNP with step w'Sw/(c·L|ρ|).

    ρ − ρ* = abs(ρ*)·sin²∠_S(w, S⁻¹u) is quadratic in the direction error, so the rate is the
    square of the spectral radius of P(I − 2S/(cL))P (see :func:`gdnp_compressed_spectrum`):

    .. math::

        r_c = \max_i \Big(1 - \frac{2\theta_i}{cL}\Big)^2,\qquad
        r_2 = \Big(1 - \frac{\theta_1}{L}\Big)^2 \in
        \Big[\big(1 - \tfrac{\lambda_2}{L}\big)^2, \big(1 - \tfrac{\lambda_1}{L}\big)^2\Big].

    With c = 2 GDNP is asymptotically at least as fast as GD with step 1/(2L), whose rate is
    (1 − λ_1/L)², and at most as fast as GD would be with the smallest eigenvalue removed.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    theta = gdnp_compressed_spectrum(S, u)
    L = float(np.linalg.eigvalsh(np.asarray(S, dtype=float))[-1])
    return float(np.max((1.0 - 2.0 * theta / (factor * L)) ** 2))


# --- Ioffe & Szegedy 2015, Alg. 2: running estimates for inference ---


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
    r"""Variance of r_t = (1 − α)r_{t−1} + α·s_t at stationarity for i.i.d. s_t: α/(2 − α)·Var(s).

    From Var(r) = (1 − α)²Var(r) + α²Var(s). With PyTorch's α = 0.1 this is Var(s)/19: the
    running mean of batch means of size m fluctuates with standard deviation σ/√(19m).
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")
    return momentum / (2.0 - momentum) * batch_stat_var
