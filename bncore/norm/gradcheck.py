r"""Gradient checks for batch norm: centred finite differences, relative errors, Jacobians.

The finite-difference helpers follow cs231n's ``gradient_check.py``: each input entry is moved by
±h and the change of a scalar is divided by 2h,

.. math::

    \frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h},

whose error is O(h²) from truncation plus O(u/h) from rounding (u the unit roundoff), so in
float64 with h = 1e-5 both are ~1e-10 and a correct analytic gradient agrees to a relative error
well below 1e-7. The helpers accept NumPy arrays and torch tensors alike (the same names serve
both implementations of the book).

The rest are the measurements of the backprop and transform chapters that are more than glue:

- :func:`bn_linear_grads`: loss and gradients of ``tanh(BN(u Wᵀ))`` read out linearly, for the
  scale invariance ∂ℓ/∂(aW) = (1/a)·∂ℓ/∂W of Ioffe & Szegedy (2015), §3.3.
- One channel's Jacobian, by autograd, in closed form and its spectrum, is in
  :mod:`bncore.norm.jacobian`.
- :func:`bn_fd_errors`: the backward of :mod:`bncore.norm.numpy_bn` or :mod:`bncore.norm.torch_bn`
  against centred differences, for dx, dγ and dβ at once.
- :func:`bn_autograd_checks`: ``torch.autograd.gradcheck`` and ``gradgradcheck`` of a batch-norm
  function in training and in eval mode.
- :func:`bn_tanh_hvp`: a Hessian-vector product through batch norm, of ℓ = Σ V ⊙ tanh(BN(x)).
- :func:`channel_norm`, :func:`channel_cosine`: per-channel norms and cosines over the
  N·∏spatial values of each channel, for statements like "dx ⟂ x̂ in every channel".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from bncore.norm import numpy_bn, stats, torch_bn

__all__ = [
    "bn_autograd_checks",
    "bn_fd_errors",
    "bn_linear_grads",
    "bn_tanh_hvp",
    "channel_cosine",
    "channel_norm",
    "norm_rel_error",
    "numerical_gradient",
    "numerical_gradient_array",
    "rel_error",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def _check_float_array(x: object, name: str) -> None:
    if isinstance(x, Tensor):
        ok = x.is_floating_point()
    elif isinstance(x, np.ndarray):
        ok = np.issubdtype(x.dtype, np.floating)
    else:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")
    if not ok:
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


def _to_numpy64(a: np.ndarray | Tensor | float) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def rel_error(a: np.ndarray | Tensor, b: np.ndarray | Tensor, floor: float = 1e-8) -> float:
    """cs231n's relative error, the worst entry of ``|a − b| / max(floor, |a| + |b|)``.

    Element-wise, so a single wrong entry shows. Entries where both values are below ``floor``
    are compared absolutely (divided by ``floor``), which keeps roundoff on near-zero entries from
    dominating.

    Raises
    ------
    ValueError
        If the shapes differ or ``floor`` is not positive.
    """
    a64, b64 = _to_numpy64(a), _to_numpy64(b)
    if a64.shape != b64.shape:
        raise ValueError(f"rel_error: shapes differ, {a64.shape} vs {b64.shape}")
    if not floor > 0:
        raise ValueError(f"rel_error: floor must be > 0, got {floor}")
    if a64.size == 0:
        return 0.0
    return float(np.max(np.abs(a64 - b64) / np.maximum(floor, np.abs(a64) + np.abs(b64))))


def norm_rel_error(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """The norm-wise relative error ‖a − b‖ / max(‖a‖, ‖b‖) (Frobenius norms), 0 if both are 0.

    Insensitive to individual near-zero entries, so it is the right yardstick for "agrees to
    roundoff" claims (two formulas for the same quantity).
    """
    a64, b64 = _to_numpy64(a), _to_numpy64(b)
    if a64.shape != b64.shape:
        raise ValueError(f"norm_rel_error: shapes differ, {a64.shape} vs {b64.shape}")
    scale = max(np.linalg.norm(a64), np.linalg.norm(b64))
    return float(np.linalg.norm(a64 - b64) / scale) if scale > 0 else 0.0


def numerical_gradient(
    f: Callable[[ArrayT], float | np.ndarray | Tensor], x: ArrayT, h: float = 1e-5
) -> ArrayT:
    """∇f(x) of a scalar function by centred differences, (f(x + h·e_i) − f(x − h·e_i)) / 2h.

    Parameters
    ----------
    f
        Takes an array shaped like ``x`` and returns a scalar (a float, or a one-element array
        or tensor). It is called 2·x.size times on a private copy of ``x``; for torch inputs
        it runs under ``torch.no_grad()``.
    x
        Floating NumPy array or torch tensor; it is not modified.
    h
        The step, > 0. 1e-5 suits float64; float32 needs ~1e-2 and is much less accurate.

    Returns
    -------
    The gradient, of ``x``'s type, shape and dtype.
    """
    _check_float_array(x, "x")
    if not h > 0:
        raise ValueError(f"numerical_gradient: the step h must be > 0, got {h}")
    is_torch = isinstance(x, Tensor)
    # xc, flat and grad are tensors or arrays like x; the loop below uses what both support
    xc: Any = x.detach().clone().contiguous() if isinstance(x, Tensor) else np.array(
        x, copy=True, order="C")
    flat: Any = xc.view(-1) if is_torch else xc.reshape(-1)  # a view: writes go into xc
    grad: Any = torch.zeros_like(flat) if is_torch else np.zeros_like(flat)
    ctx = torch.no_grad() if is_torch else contextlib.nullcontext()
    with ctx:
        for i in range(flat.shape[0]):
            old = float(flat[i])
            flat[i] = old + h
            f_plus = float(f(xc))
            flat[i] = old - h
            f_minus = float(f(xc))
            flat[i] = old
            grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad.reshape(x.shape)


def numerical_gradient_array(
    f: Callable[[ArrayT], ArrayT], x: ArrayT, dout: ArrayT, h: float = 1e-5
) -> ArrayT:
    """The vector-Jacobian product (∂f/∂x)ᵀ·dout by centred differences.

    This is the gradient of the scalar Σ f(x)·dout, i.e. what a layer's backward returns when
    the loss's gradient with respect to its output is ``dout`` (cs231n's
    ``eval_numerical_gradient_array``).

    Raises
    ------
    ValueError
        If ``f(x)`` and ``dout`` have different shapes.
    """
    _check_float_array(dout, "dout")
    with torch.no_grad() if isinstance(x, Tensor) else contextlib.nullcontext():
        out_shape = tuple(f(x).shape)
    if out_shape != tuple(dout.shape):
        raise ValueError(
            f"numerical_gradient_array: f(x) has shape {out_shape} but dout has shape "
            f"{tuple(dout.shape)}; they must match"
        )
    return numerical_gradient(lambda z: (f(z) * dout).sum(), x, h)


def channel_norm(a: np.ndarray | Tensor) -> np.ndarray:
    """Per-channel Euclidean norm ‖a[:, c, ...]‖ over the m = N·∏spatial values, shape ``(C,)``.

    ``a`` is ``(N, C, *spatial)`` (NumPy or torch); the result is a float64 NumPy array.
    """
    a64 = _to_numpy64(a)
    if a64.ndim < 2:
        raise ValueError(f"channel_norm: expected (N, C, *spatial), got shape {a64.shape}")
    return np.sqrt(np.square(a64).sum(axis=stats.reduce_axes(a64.ndim)))


def channel_cosine(a: np.ndarray | Tensor, b: np.ndarray | Tensor | float) -> np.ndarray:
    """Per-channel cosine ⟨a_c, b_c⟩ / (‖a_c‖‖b_c‖) over the m values of each channel, ``(C,)``.

    ``b`` may be a scalar, broadcast to ``a``'s shape: ``channel_cosine(dx, 1.0)`` is the
    cosine between each channel of dx and the all-ones vector 1. A channel where either vector
    is zero gives 0.
    """
    a64 = _to_numpy64(a)
    b64 = np.broadcast_to(_to_numpy64(b), a64.shape)
    if a64.ndim < 2:
        raise ValueError(f"channel_cosine: expected (N, C, *spatial), got shape {a64.shape}")
    inner = (a64 * b64).sum(axis=stats.reduce_axes(a64.ndim))
    denom = channel_norm(a64) * channel_norm(b64)
    return np.divide(inner, denom, out=np.zeros_like(inner), where=denom > 0)


def bn_fd_errors(
    x: ArrayT,
    gamma: ArrayT,
    beta: ArrayT,
    dy: ArrayT,
    eps: float = 1e-5,
    h: float = 1e-4,
    metric: str = "cs231n",
) -> dict[str, float]:
    """Relative errors of a training-mode BN backward against centred differences.

    For NumPy inputs the analytic gradients are :func:`bncore.norm.numpy_bn.batch_norm_backward`'s,
    for torch inputs they come from autograd through :func:`bncore.norm.torch_bn.batch_norm`. The
    numerical ones are :func:`numerical_gradient_array` of the forward with upstream gradient
    ``dy``, with respect to ``x``, ``gamma`` and ``beta`` in turn.

    ``metric="cs231n"`` compares them with :func:`rel_error` (worst entry), ``"norm"`` with
    :func:`norm_rel_error`. The entry-wise metric is sensitive to entries of the gradient that
    happen to be near zero: an entry of 1e-6 computed to an absolute 1e-12 already scores 1e-6.

    Returns
    -------
    ``{"dx": ..., "dgamma": ..., "dbeta": ...}``.
    """
    if metric not in ("cs231n", "norm"):
        raise ValueError(f"bn_fd_errors: metric must be 'cs231n' or 'norm', got {metric!r}")
    compare = rel_error if metric == "cs231n" else norm_rel_error
    forward: Callable[[Any, Any, Any], Any]  # (x, γ, β) ↦ y, in the implementation of x's type
    analytic: Any
    if isinstance(x, Tensor):

        def torch_forward(xx: Tensor, gg: Tensor, bb: Tensor) -> Tensor:
            return torch_bn.batch_norm(xx, None, None, gg, bb, True, 0.1, eps)

        forward = torch_forward
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, gamma, beta)]
        analytic = torch.autograd.grad(forward(*leaves), leaves, dy)
    else:

        def numpy_forward(xx: np.ndarray, gg: np.ndarray, bb: np.ndarray) -> np.ndarray:
            return numpy_bn.batch_norm_forward(xx, gg, bb, eps)[0]

        forward = numpy_forward
        cache = numpy_bn.batch_norm_forward(x, gamma, beta, eps)[1]
        analytic = numpy_bn.batch_norm_backward(dy, cache)
    numeric = (
        numerical_gradient_array(lambda z: forward(z, gamma, beta), x, dy, h),
        numerical_gradient_array(lambda z: forward(x, z, beta), gamma, dy, h),
        numerical_gradient_array(lambda z: forward(x, gamma, z), beta, dy, h),
    )
    return {
        name: compare(num, ana)
        for name, num, ana in zip(("dx", "dgamma", "dbeta"), numeric, analytic, strict=True)
    }


def bn_linear_grads(
    u: Tensor, weight: Tensor, readout: Tensor, eps: float = 1e-5
) -> tuple[float, Tensor, Tensor, Tensor]:
    r"""Loss and gradients of a linear layer followed by training-mode batch norm.

    With the layer input z (the argument ``u``, Ioffe & Szegedy's u), x = z Wᵀ, y = BN(x) (per
    column, over the batch, γ = 1, β = 0, by :func:`bncore.norm.torch_bn.batch_norm`) and the
    loss ℓ = Σ V ⊙ tanh(y) for a fixed readout V,

    .. math::

        \ell(W) = \sum_{n,c} V_{nc}\,\tanh\big(\mathrm{BN}(z W^\top)_{nc}\big).

    Ioffe & Szegedy (2015, §3.3) note that BN((aW)z) = BN(Wz) for a scalar a > 0, hence
    ∂ℓ/∂z is unchanged and ∂ℓ/∂(aW) = (1/a)·∂ℓ/∂W. With ε > 0 these hold exactly only with ε
    replaced by ε/a², since BN_ε(a x) = BN_{ε/a²}(x).

    Parameters
    ----------
    u
        ``(N, d_in)`` layer input z (N = m examples).
    weight
        ``(C, d_in)`` weight W (already scaled by a, if you are testing scale invariance).
    readout
        ``(N, C)`` fixed readout V.
    eps
        BN's ε.

    Returns
    -------
    ``(loss, y, grad_weight, grad_u)``: the loss as a float, the BN output ``(N, C)``, and
    ∂ℓ/∂W ``(C, d_in)`` and ∂ℓ/∂z ``(N, d_in)``, all detached.
    """
    if u.dim() != 2 or weight.dim() != 2 or u.shape[1] != weight.shape[1]:
        raise ValueError(
            f"bn_linear_grads: need u (N, d_in) and weight (C, d_in), got {tuple(u.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if readout.shape != (u.shape[0], weight.shape[0]):
        raise ValueError(
            f"bn_linear_grads: readout must have shape (N, C) = {(u.shape[0], weight.shape[0])}, "
            f"got {tuple(readout.shape)}"
        )
    u = u.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    y = torch_bn.batch_norm(u @ w.T, None, None, training=True, eps=eps)
    loss = (readout * torch.tanh(y)).sum()
    grad_w, grad_u = torch.autograd.grad(loss, (w, u))
    return float(loss.detach()), y.detach(), grad_w, grad_u


BatchNormFn = Callable[..., Tensor]
"""A function with ``torch.nn.functional.batch_norm``'s signature."""


def bn_autograd_checks(
    fn: BatchNormFn,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float = 1e-5,
) -> dict[str, bool]:
    """``gradcheck`` and ``gradgradcheck`` of ``fn`` in training and eval mode, w.r.t. x, γ, β.

    ``x``, ``weight`` and ``bias`` are float64 and require grad; in eval mode the running
    statistics are constants. Returns ``{"gradcheck, training mode": ok, ...}``.
    """

    def training(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return fn(x, None, None, w, b, True, 0.1, eps)

    def evaluation(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return fn(x, running_mean, running_var, w, b, False, 0.1, eps)

    results = {}
    for mode, f in (("training", training), ("eval", evaluation)):
        results[f"gradcheck, {mode} mode"] = torch.autograd.gradcheck(f, (x, weight, bias))
        results[f"gradgradcheck, {mode} mode"] = torch.autograd.gradgradcheck(f, (x, weight, bias))
    return results


def bn_tanh_hvp(
    fn: BatchNormFn,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    readout: Tensor,
    direction: Tensor,
    eps: float = 1e-5,
) -> Tensor:
    r"""The Hessian-vector product ∇²ₓℓ·v of ℓ(x) = Σ V ⊙ tanh(BN(x)), BN in training mode.

    By double backward through ``fn``'s backward (``torch.autograd.functional.hvp``): it is
    right only if that backward is itself differentiable, which is what it checks.
    """

    def loss(a: Tensor) -> Tensor:
        return (readout * torch.tanh(fn(a, None, None, weight, bias, True, 0.1, eps))).sum()

    return torch.autograd.functional.hvp(loss, x.detach(), direction)[1]
