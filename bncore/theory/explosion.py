"""Yang et al. (2019): gradient explosion at initialization in deep batch-normalized nets."""

from __future__ import annotations

import math
import operator

_YANG_ACTIVATIONS = ("linear", "relu")


def _check_batch_size(batch_size: int) -> int:
    """Return m as an int; ``TypeError`` unless it is an integer, ``ValueError`` if m ≤ 3."""
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

    so that for a standard bivariate Gaussian (g₁, g₂) with correlation c,
    E[relu(g₁)·relu(g₂)] = J(c)/2 and E[relu′(g₁)·relu′(g₂)] = J′(c)/2 (Cho & Saul 2009; the
    normalization used by Yang et al. 2019).
    """
    if not -1.0 <= c <= 1.0:
        raise ValueError(f"c must be a correlation in [-1, 1], got {c}")
    theta = math.acos(c)
    return (math.sqrt(1.0 - c * c) + (math.pi - theta) * c) / math.pi, (math.pi - theta) / math.pi


def gradient_explosion_rate(batch_size: int, activation: str = "relu") -> float:
    r"""Per-layer growth factor λ of the *squared* gradient norm of a batch-normalized MLP.

    Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz (2019), *A Mean Field Theory of Batch
    Normalization* (ICLR): in the network x^l = W^l φ(BN(x^{l−1})) with
    W^l_ij ~ N(0, σ_w²/n), γ = 1, β = 0, batch size m and width n → ∞, the squared norm of the
    gradient of the loss ℓ grows by a factor λ per layer going from the output toward the input,
    E‖∇_{W^{l−1}} ℓ‖² ≈ λ·E‖∇_{W^l} ℓ‖², independently of σ_w. (Yang et al. write B for the
    batch size m and N for the width n.) For

    - φ = identity:  λ = (m − 2)/(m − 3);
    - φ = ReLU:
      λ = (J′(c) + m − 1) / ((m − 3)(1 − J(c))) − 1/(m − 3), with c = −1/(m − 1), the
      correlation between two examples of a batch at BN's symmetric fixed point, and J, J′
      the arc-cosine kernel of :func:`arccos_kernel`. λ decreases in m to
      π/(π − 1) ≈ 1.467 as m → ∞ (c → 0, J → 1/π, J′ → 1/2).

    The linear case reads: BN divides by the batch standard deviation, whose inverse square
    has mean E[(χ²_{m−1}/(m−1))^{−1}] = (m − 1)/(m − 3) at the fixed point, and projects out
    one of the m − 1 centred directions, (m − 2)/(m − 1); the product is (m − 2)/(m − 3).
    The *norm* grows by √λ per layer.

    Raises ``ValueError`` for m ≤ 3 (the rate is undefined: E[1/σ²] diverges) and for an
    unknown activation, ``TypeError`` for a non-integer m.
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
"""lim_{m→∞} λ for ReLU, π/(π − 1) ≈ 1.467 (Yang et al. 2019): a squared-norm rate."""


def trainable_depth(lam: float, budget: float = 16.0) -> float:
    r"""Depth at which the squared gradient norm has grown by e^{budget}: budget / ln λ.

    Yang et al. (2019) compare the depth × batch-size region where plain BN networks still
    train with the curve L = 16/ln λ (L the depth). Its reading: through L layers the squared
    gradient norm grows by λ^L from the last layer to the first, and 16/ln λ is the depth at which
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
    c = −1/(m − 1) after centring). When ε ≫ σ_B², BN(x) ≈ (x − μ_B)/√ε: it still centres,
    but it no longer divides by the fluctuating σ_B, nor projects out x̂. Per layer, the
    centred variance of φ(x) shrinks by f ∝ (1 − J(c))(m − 1)/(2m) and the squared gradient
    by r ∝ (m − 1 + J′(c))/(2m) (same constant), so the weight gradient grows by

    .. math::

        \lambda_\infty = \frac{r}{f} = \frac{m - 1 + J'(c)}{(m - 1)\,(1 - J(c))}
        \quad(\text{ReLU}),\qquad \lambda_\infty = 1 \quad(\text{linear}),

    and λ_∞ → π/(π − 1) as m → ∞. Yang et al.'s rates factor through it:
    λ = ((m − 1)·λ_∞ − 1)/(m − 3), i.e. the division by σ_B multiplies by
    E[1/σ²] = (m − 1)/(m − 3) and the projection removes 1/(m − 3). For ReLU the explosion
    that survives a large ε is that of centring a non-negative signal; for linear φ none does.
    Same arguments and errors as :func:`gradient_explosion_rate` (m ≥ 4).
    """
    b = _check_batch_size(batch_size)
    if activation == "linear":
        return 1.0
    if activation == "relu":
        j, dj = arccos_kernel(-1.0 / (b - 1))
        return (b - 1 + dj) / ((b - 1) * (1.0 - j))
    raise ValueError(f"activation must be one of {_YANG_ACTIVATIONS}, got {activation!r}")
