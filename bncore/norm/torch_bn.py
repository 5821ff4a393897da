r"""Batch normalization in PyTorch with a hand-written, twice-differentiable backward.

:func:`batch_norm` has the signature and semantics of ``torch.nn.functional.batch_norm`` and
:class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d` are drop-ins for
``torch.nn``'s modules (same arguments, parameters, buffers and ``state_dict`` keys).

Layout is ``input: (N, C, *spatial)``. In training mode, per channel over m = N·∏spatial values,

.. math::

    y = \gamma\,\hat x + \beta,\qquad \hat x = (x-\mu_B)\,s,

    s = \frac{1}{\sqrt{\sigma_B^2+\epsilon}},\qquad
    \sigma_B^2 = \frac1m\sum (x-\mu_B)^2 \text{ (biased)}.

The computation is composed of the phases of :mod:`bncore.norm.torch_phases` (statistics
:func:`mean_var`, :func:`invstd` → :func:`normalize` → :func:`update_running`; backward
:func:`backward_reduce` → :func:`backward_elemt`), the shape of ``torch.nn.SyncBatchNorm``.

The gradient is Ioffe & Szegedy's (2015, §3). A first-order backward reuses the forward's μ and s,
as torch's kernel does, and works in one new tensor; a backward that is itself differentiated
recomputes them from the saved input with differentiable tensor operations, so autograd can
differentiate it again (gradgradcheck, Hessian-vector products);
:meth:`BatchNormFunction.jvp` gives forward-mode derivatives with the same phases (the Jacobian
is symmetric), and the function composes with ``torch.func`` (``grad``, ``vjp``, ``jvp``,
``jacrev``, ``jacfwd``, ``vmap``; forward-over-reverse Hessian-vector products). As in torch, a
forward-mode tangent on the running statistics is an error in eval and ignored in training.

Float16/bfloat16 inputs are normalized in float32 (statistics, rsqrt(σ² + ε) and the affine map,
also in eval with half running statistics) and rounded once at the end. NaN or Inf in a channel's
input makes that channel's output NaN, as in torch; other channels are unaffected. An input with
no values (m = 0) gives an empty output, leaves the running statistics alone, and gives γ and β
zero gradients, as in torch.

The module runs past 400 lines because the Function, the functional form and the modules are one
contract with ``torch.nn`` (argument checks, state dicts) that reads best in one place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bncore.norm import stats
from bncore.norm.torch_phases import (
    _acc_dtype,
    _bcast,
    backward_elemt,
    backward_reduce,
    expand,
    invstd,
    mean_var,
    normalize,
    update_running,
)
from bncore.norm.validate import check_dtype, check_input, check_rank, check_running_stats

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormFunction",
    "backward_elemt",
    "backward_reduce",
    "batch_norm",
    "expand",
    "invstd",
    "mean_var",
    "normalize",
    "update_running",
]


# --- the autograd Function ---


def _statistics(
    acc: Tensor, mean: Tensor | None, var: Tensor | None, eps: float, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(μ, σ², s) in the accumulation dtype: from the batch in training, else the given ones."""
    if training or mean is None or var is None:
        mean, var = mean_var(acc)
    else:
        mean, var = mean.to(acc.dtype, copy=True), var.to(acc.dtype)  # a copy: saved for backward
    return mean, var, invstd(var, eps)


class BatchNormFunction(torch.autograd.Function):
    """y = γ·x̂ + β with x̂ normalized by batch (training) or running (eval) statistics.

    ``forward(x, weight, bias, running_mean, running_var, training, momentum, eps)`` has
    ``torch.nn.functional.batch_norm``'s arguments. In training it also updates the running
    estimates in place (when given), inside the function as torch's kernel does, so that
    ``torch.func`` transforms of a training step work. The running estimates are constants:
    they have no gradient, and a forward-mode tangent on them is an error in eval.
    """

    # vmap runs forward/setup_context/backward/jvp per batch: each input of a vmapped batch is
    # normalized by its own statistics, and updates its own running estimates if they are batched
    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
        running_var: Tensor | None, training: bool, momentum: float, eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Normalize (statistics → normalize), then the running update in training.

        Returns y and, as non-differentiable outputs, the μ and s it was normalized with (in the
        accumulation dtype), which a first-order backward reuses; :func:`batch_norm` returns y.
        """
        acc = x.to(_acc_dtype(x.dtype))
        mean, var, invstd = _statistics(acc, running_mean, running_var, eps, training)
        if training and running_mean is not None and running_var is not None:
            update_running(running_mean, running_var, mean, var,
                           stats.count_per_channel(x.shape), momentum)
        return normalize(acc, mean, invstd, weight, bias).to(x.dtype), mean, invstd

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        """Save x, γ and the μ, s of the forward (in eval, those of the running statistics)."""
        x, weight, _bias, _running_mean, _running_var, training, _momentum, eps = inputs
        _y, mean, invstd = output
        ctx.mark_non_differentiable(mean, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.save_for_forward(x, weight, mean, invstd)
        ctx.eps, ctx.training = eps, training
        ctx.set_materialize_grads(False)  # a tangent left undefined stays None in jvp

    @staticmethod
    def _saved(ctx: Any) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        """(x, γ, x in the accumulation dtype, μ, s, x̂).

        In training, when the backward is itself being differentiated (grad mode on: a
        ``create_graph`` backward, ``torch.func``), μ and s are recomputed from x so that they
        carry their dependence on x; otherwise the forward's μ and s are reused, as torch's
        kernel does, and only x̂ is recomputed.
        """
        x, weight, mean, s = ctx.saved_tensors
        acc = x.to(_acc_dtype(x.dtype))
        if ctx.training and torch.is_grad_enabled():
            mean, _, s = _statistics(acc, None, None, ctx.eps, True)
        return x, weight, acc, mean, s, normalize(acc, mean, s, None, None)

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, *_stats: Tensor | None) -> tuple[Any, ...]:
        """Gradients: dx by the phases (training) or the scaling γs (eval), dγ = Σδx̂, dβ = Σδ."""
        if dy is None:  # the output's gradient is undefined (not materialized): so are these
            return (None,) * 8
        x, weight, acc, mean, s, xhat = BatchNormFunction._saved(ctx)
        g = dy.to(acc.dtype)
        # first order: x̂'s memory holds δ·x̂ for the sum, then x̂ again, then dx (one new tensor
        # for the whole backward; a pass in place costs less than a fresh tensor)
        reuse = _may_overwrite(g)
        sum_dy, sum_dy_xhat = backward_reduce(g, xhat, overwrite_xhat=reuse)
        dx = None
        if ctx.needs_input_grad[0]:
            if reuse and ctx.training:
                xhat = normalize(acc, mean, s, None, None, out=xhat)
            dx = _input_derivative(g, xhat, s, weight, ctx.training, sum_dy, sum_dy_xhat,
                                   overwrite_xhat=reuse).to(x.dtype)
        dweight = sum_dy_xhat.to(weight.dtype) if ctx.needs_input_grad[1] and weight is not None \
            else None
        dbias = sum_dy.to(weight.dtype if weight is not None else dy.dtype)
        return dx, dweight, dbias if ctx.needs_input_grad[2] else None, None, None, None, None, None

    @staticmethod
    def jvp(
        ctx: Any, dx: Tensor | None, dweight: Tensor | None, dbias: Tensor | None,
        dmean: Tensor | None, dvar: Tensor | None, *_: Any,
    ) -> tuple[Tensor, None, None]:
        """Forward mode: dy = γ·dx̂ + dγ·x̂ + dβ.

        The Jacobian of x ↦ x̂ is symmetric (s/m·(m·I − 11ᵀ − x̂x̂ᵀ) per channel in training, s·I
        in eval), so dx̂ is the backward's phases applied to the tangent dx: the forward and the
        reverse mode share one formula.
        """
        tangents = (dx, dweight, dbias)
        if not ctx.training and (dmean is not None or dvar is not None) \
                and any(t is not None for t in tangents):  # torch's rule, and its message
            raise RuntimeError(
                "batch_norm is not differentiable wrt running_mean and running_var, they cannot "
                "have forward grad defined; detach them (running estimates are constants of "
                "eval mode; in training their tangents are ignored)"
            )
        x, weight, acc, _mean, s, xhat = BatchNormFunction._saved(ctx)
        dy = torch.zeros_like(xhat)
        if dx is not None:
            d = dx.to(acc.dtype)
            dy = _input_derivative(d, xhat, s, weight, ctx.training, *backward_reduce(d, xhat))
        if dweight is not None:
            dy = dy + xhat * _bcast(dweight.to(acc.dtype), x.dim())
        if dbias is not None:
            dy = dy + _bcast(dbias.to(acc.dtype), x.dim())
        return dy.to(x.dtype), None, None


#: The dispatch key of autograd's batched gradients (legacy vmap), absent from the Python enum.
_BATCHED = torch._C._dispatch_key_parse("Batched")


def _may_overwrite(dy: Tensor) -> bool:
    """Whether the backward may turn x̂'s memory into dx (x̂ is needed no more).

    Only when nothing differentiates the backward (grad mode off) and the backward is not itself
    vmapped (by ``torch.func`` or by autograd's batched gradients, ``is_grads_batched``): there δ
    is batched where x̂ is not, and x̂ cannot take a batched result in place. (Two private torch
    queries; ``torch.autograd.Function`` uses the first itself.)
    """
    return (not torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active()
            and not torch._C._dispatch_keys(dy).has(_BATCHED))


def _input_derivative(
    v: Tensor, xhat: Tensor, s: Tensor, weight: Tensor | None, training: bool, sum_v: Tensor,
    sum_v_xhat: Tensor, overwrite_xhat: bool = False,
) -> Tensor:
    """The input Jacobian (symmetric) times ``v``: the backward elementwise phase in training,
    the scaling γs in eval (a fixed affine map). ``overwrite_xhat``: x̂'s memory may be reused.
    """
    if training:
        return backward_elemt(v, xhat, s, weight, sum_v, sum_v_xhat,
                              stats.count_per_channel(v.shape), overwrite_xhat=overwrite_xhat)
    scale = s if weight is None else s * weight.to(s.dtype)
    return v * expand(scale, v.dim())


# --- the functional form and the modules ---


def _empty_batch(input: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """The result for an input with no values, as torch's: empty, and zero gradients for γ, β."""
    y = input * 1
    if input.dim() >= 2:
        if weight is not None:
            y = y * _bcast(weight, input.dim())
        if bias is not None:
            y = y + _bcast(bias, input.dim())
    return y.to(input.dtype)


def _batch_norm(
    input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
    weight: Tensor | None, bias: Tensor | None, training: bool, momentum: float, eps: float,
) -> Tensor:
    """:func:`batch_norm` on validated arguments (the modules validate once, then call this)."""
    if input.numel() == 0:
        return _empty_batch(input, weight, bias)
    return BatchNormFunction.apply(
        input, weight, bias, running_mean, running_var, training, momentum, eps
    )[0]


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.batch_norm``, differentiable twice.

    Parameters
    ----------
    input
        ``(N, C, *spatial)`` floating tensor.
    running_mean, running_var
        ``(C,)`` running estimates, or ``None``. In training mode, when given, they are updated
        in place: running ← (1 − momentum)·running + momentum·batch, with the unbiased batch
        variance for ``running_var``.
    weight, bias
        ``(C,)`` γ and β, or ``None`` for 1 and 0.
    training
        Use batch statistics (and update the running estimates) if ``True``; otherwise
        normalize with ``running_mean`` and ``running_var``.
    momentum
        The weight τ of the new batch in the running average.
    eps
        Added to the variance inside the square root.
    """
    if not _check_arguments(input, running_mean, running_var, weight, bias, training, eps):
        return _empty_batch(input, weight, bias)
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _check_arguments(
    input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
    weight: Tensor | None, bias: Tensor | None, training: bool, eps: float,
) -> bool:
    """Validate :func:`batch_norm`'s arguments as torch does; ``False`` for an empty 1-D input,
    which torch accepts as it is.
    """
    check_dtype(input.is_floating_point(), input.dtype)
    check_running_stats(running_mean is not None, running_var is not None, training)
    if input.numel() == 0 and input.dim() < 2:
        return False
    lengths = {
        name: None if t is None else t.numel()
        for name, t in [("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)]
    }
    check_input(input.shape, None, eps, training, lengths)
    return True


class _BatchNorm(nn.Module):
    """Shared state and forward of :class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d`.

    Parameters ``weight`` (γ, init 1) and ``bias`` (β, init 0) exist when ``affine`` (``bias``
    only if also ``bias=True``, as in torch ≥ 2.13); buffers
    ``running_mean`` (init 0), ``running_var`` (init 1) and ``num_batches_tracked`` exist when
    ``track_running_stats``; the names match ``torch.nn.BatchNorm*`` so state dicts load both ways.
    """

    _version = 2  # as torch's: version 2 added num_batches_tracked
    _ranks: tuple[int, ...] = ()
    _functional = staticmethod(_batch_norm)  # on validated arguments; bncore.norm.fast's fuses

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.zeros(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0 and fresh running statistics."""
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
        strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        """Load a state dict of any version; one from before version 2 has no counter.

        As torch does, a missing ``num_batches_tracked`` keeps the module's own counter (a real
        0 if the module lives on the meta device).
        """
        key = prefix + "num_batches_tracked"
        version = local_metadata.get("version")
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            own = self.num_batches_tracked
            state_dict[key] = (
                own if own is not None and own.device.type != "meta"
                else torch.tensor(0, dtype=torch.long)
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, input: Tensor) -> Tensor:
        """Normalize ``input``, ``(N, C, *spatial)``; in training, update the running estimates."""
        check_rank(input.dim(), self._ranks, type(self).__name__)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        running = (self.running_mean, self.running_var) if track else (None, None)
        first = "running_mean" if running[0] is not None else "weight" if self.affine else None
        check_dtype(input.is_floating_point(), input.dtype)
        check_input(input.shape, self.num_features, self.eps, use_batch_stats, None, first)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # the only case that reads the counter on the host
                factor = stats.momentum_factor(None, int(self.num_batches_tracked))
        return self._functional(input, *running, self.weight, self.bias, use_batch_stats, factor,
                                self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input; drop-in for ``torch.nn.BatchNorm1d``."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), per channel over N·H·W; drop-in for ``nn.BatchNorm2d``."""

    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W) input; drop-in for ``torch.nn.BatchNorm3d``."""

    _ranks = (5,)
