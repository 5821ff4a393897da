r"""Folding an eval-mode batch norm into the linear or convolutional layer before it.

In eval mode a batch-norm layer is a fixed per-channel affine map (Ioffe & Szegedy 2015, Alg. 2,
step 11): with running estimates μ̂, σ̂² (``running_mean``, ``running_var``),

.. math::

    \mathrm{BN}(x) = a\,x + c,\qquad a = \frac{\gamma}{\sqrt{\hat\sigma^2+\epsilon}},\qquad
    c = \beta - a\,\hat\mu .

When ``x = W z + b`` (layer input z) comes from a ``Linear`` or ``Conv{1,2,3}d`` layer with C
output channels, the composition is again such a layer, with per-output-channel rescaled weights:

.. math::

    W'_{k,\cdot} = a_k\, W_{k,\cdot},\qquad b'_k = a_k\,(b_k - \hat\mu_k) + \beta_k .

(``b = 0`` when the layer has no bias; γ = 1, β = 0 when ``affine=False``.) The folded layer
computes the same function with one layer fewer: no BN parameters or buffers to store and no
elementwise pass over the activations at inference time.

The fold is exact in real arithmetic; in floating point it differs by rounding only. The
arithmetic is done in float64 and the result cast back to the layer's dtype.

:func:`fold_bn` folds one pair; :func:`fold_sequential` and :func:`fold_model` fold every pair in
an ``nn.Sequential`` or in any :class:`LinearNormBlock` (such as the blocks of the book's
:class:`~bncore.experiments.nets.MLP`/:class:`~bncore.experiments.nets.ConvNet`);
:func:`bn_eval_cost` counts what the BN layers cost at inference (what folding saves).

Works with :mod:`bncore.norm.torch_bn`'s ``BatchNorm1d/2d/3d`` and ``torch.nn.BatchNorm1d/2d/3d``.
A BN in training mode (which normalizes with *batch* statistics, so it is not a fixed map), a BN
without running statistics (``track_running_stats=False``, likewise), a mismatched channel count
or a mismatched layer/BN pairing raise a ``ValueError``; unsupported module types a ``TypeError``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

import torch
from torch import Tensor, nn

from bncore.norm import torch_bn

__all__ = [
    "BNEvalCost",
    "LinearNormBlock",
    "bn_affine",
    "bn_eval_cost",
    "fold_bn",
    "fold_model",
    "fold_sequential",
    "is_bn",
]

# The BN classes each foldable layer type may be followed by, keyed by spatial rank.
_BN_BY_RANK: dict[int, tuple[type[nn.Module], ...]] = {
    1: (torch_bn.BatchNorm1d, nn.BatchNorm1d),
    2: (torch_bn.BatchNorm2d, nn.BatchNorm2d),
    3: (torch_bn.BatchNorm3d, nn.BatchNorm3d),
}
BatchNormModule = torch_bn._BatchNorm | nn.modules.batchnorm._BatchNorm
"""A batch-norm layer of :mod:`bncore.norm.torch_bn` or ``torch.nn``."""

_BN_TYPES: tuple[type[nn.Module], ...] = (torch_bn._BatchNorm, nn.modules.batchnorm._BatchNorm)
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@runtime_checkable
class LinearNormBlock(Protocol):
    """A block whose pre-activation is ``norm(linear(x))``, recognized by its shape alone.

    Any module with a ``linear`` layer, a ``norm`` layer and a method
    ``forward_pre(x) = norm(linear(x))`` is one, e.g. :class:`bncore.experiments.nets.Block`.
    :func:`fold_model` folds ``norm`` into ``linear`` when they are a foldable layer and a BN.
    Matching the structure instead of a class keeps this module free of the experiments that
    build such blocks.
    """

    linear: nn.Module
    norm: nn.Module

    def forward_pre(self, x: Tensor) -> Tensor:
        """``norm(linear(x))``."""
        ...


def is_bn(module: nn.Module) -> TypeGuard[BatchNormModule]:
    """Whether ``module`` is a batch-norm layer of :mod:`bncore.norm.torch_bn` or ``torch.nn``."""
    return isinstance(module, _BN_TYPES)


def _check_bn(bn: nn.Module) -> tuple[BatchNormModule, Tensor, Tensor]:
    """``bn`` as a batch-norm layer in eval mode, with its running mean and variance."""
    if not is_bn(bn):
        raise TypeError(
            "expected a BatchNorm1d/2d/3d from bncore.norm.torch_bn or torch.nn, got "
            f"{type(bn).__name__}"
        )
    if bn.training:
        raise ValueError(
            f"{type(bn).__name__} is in training mode: it normalizes with batch statistics, so it "
            "is not a fixed affine map and cannot be folded; call model.eval() first"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{type(bn).__name__} has no running statistics (track_running_stats=False): it uses "
            "batch statistics in eval mode too, so it cannot be folded"
        )
    return bn, bn.running_mean, bn.running_var


def bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """The eval-mode map of ``bn`` as (a, c) with BN(z) = a·z + c per channel, in float64.

    a = γ/√(σ̂² + ε), c = β − a·μ̂ (Ioffe & Szegedy 2015, Alg. 2, step 11); shapes ``(C,)``.
    """
    bn, running_mean, running_var = _check_bn(bn)
    f64 = torch.float64
    with torch.no_grad():
        invstd = torch.rsqrt(running_var.to(f64) + bn.eps)
        gamma = bn.weight.to(f64) if bn.weight is not None else torch.ones_like(invstd)
        beta = bn.bias.to(f64) if bn.bias is not None else torch.zeros_like(invstd)
        a = gamma * invstd
        return a, beta - a * running_mean.to(f64)


def _spatial_rank(layer: nn.Module) -> int:
    """1 for Linear and Conv1d, 2 for Conv2d, 3 for Conv3d."""
    if isinstance(layer, nn.Linear):
        return 1
    return len(layer.kernel_size)  # type: ignore[arg-type]


def fold_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A new layer equal to ``bn ∘ layer`` in eval mode: W' = a·W, b' = a·(b − μ̂) + β.

    Parameters
    ----------
    layer: an ``nn.Linear`` (followed by ``BatchNorm1d`` on ``(N, C)`` input) or an
        ``nn.Conv1d/2d/3d`` (followed by ``BatchNorm1d/2d/3d`` of the same rank), with or
        without bias, any ``groups``/``stride``/``padding``.
    bn: a batch-norm layer in eval mode with running statistics, from :mod:`bncore.norm.torch_bn` or
        ``torch.nn``, ``num_features`` equal to the layer's output channels; ``affine`` may be off.

    Returns
    -------
    A deep copy of ``layer`` (same class, same hyperparameters, same dtype and device, in eval
    mode) whose weight is rescaled per output channel and which always has a bias. Neither
    argument is modified.
    """
    if not isinstance(layer, _FOLDABLE):
        raise TypeError(
            "fold_bn folds into nn.Linear or nn.Conv1d/2d/3d, got "
            f"{type(layer).__name__}"
        )
    _check_bn(bn)
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out:
        raise ValueError(
            f"channel mismatch: {type(layer).__name__} has {out} output channels but "
            f"{type(bn).__name__} normalizes {bn.num_features}"
        )
    rank = _spatial_rank(layer)
    if not isinstance(bn, _BN_BY_RANK[rank]):
        expected = f"BatchNorm{rank}d"
        raise ValueError(
            f"{type(layer).__name__} must be followed by a {expected} to be folded, got "
            f"{type(bn).__name__}"
        )
    a, c = bn_affine(bn)  # (C,), float64
    weight = layer.weight
    with torch.no_grad():
        w64 = weight.to(torch.float64)
        b64 = layer.bias.to(torch.float64) if layer.bias is not None else torch.zeros_like(a)
        new_w = w64 * a.reshape((-1,) + (1,) * (w64.dim() - 1))  # scale each output channel
        new_b = a * b64 + c  # = a·(b − μ̂) + β
    folded = copy.deepcopy(layer)
    folded.weight = nn.Parameter(
        new_w.to(dtype=weight.dtype, device=weight.device), requires_grad=weight.requires_grad
    )
    folded.bias = nn.Parameter(
        new_b.to(dtype=weight.dtype, device=weight.device), requires_grad=weight.requires_grad
    )
    return folded.eval()


def _check_eval(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if is_bn(module) and module.training:
            raise ValueError(
                f"{name or 'model'} ({type(module).__name__}) is in training mode; batch "
                "statistics cannot be folded; call model.eval() first"
            )


def fold_sequential(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` with every (Linear | Conv) → BN pair replaced by the folded layer.

    The walk recurses into nested containers (see :func:`fold_model`). A BN that does not
    directly follow a foldable layer (e.g. BN after a ReLU or at the start) is kept as it is.
    Every BN in the model must be in eval mode (``model.eval()``); the returned copy is in eval
    mode and ``model`` itself is not modified.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"fold_sequential expects an nn.Sequential, got {type(model).__name__}")
    return fold_model(model)  # type: ignore[return-value]


def fold_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with BN folded wherever a foldable layer feeds it directly.

    Two patterns are recognized, at any depth: consecutive children ``(Linear | Conv) → BN``
    of an ``nn.Sequential``, and a :class:`LinearNormBlock` such as
    :class:`bncore.experiments.nets.Block`, whose pre-activation is ``norm(linear(x))`` (its
    ``norm`` becomes ``nn.Identity``). So it folds the book's
    :class:`~bncore.experiments.nets.MLP` and :class:`~bncore.experiments.nets.ConvNet` as well as
    plain ``nn.Sequential`` models. All BN layers must be in eval mode; ``model`` is not modified
    and the copy is returned in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_model expects an nn.Module, got {type(model).__name__}")
    _check_eval(model)
    folded = copy.deepcopy(model)
    if isinstance(folded, nn.Sequential):
        folded = _fold_sequential_children(folded)
    else:
        _fold_in_place(folded)
    return folded.eval()


def _fold_in_place(module: nn.Module) -> None:
    """Fold every :class:`LinearNormBlock` in ``module`` and recurse; Sequential children are
    rebuilt.
    """
    if (isinstance(module, LinearNormBlock) and isinstance(module.linear, _FOLDABLE)
            and is_bn(module.norm)):
        module.linear = fold_bn(module.linear, module.norm)
        module.norm = nn.Identity()
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential):
            setattr(module, name, _fold_sequential_children(child))
        else:
            _fold_in_place(child)


def _fold_sequential_children(model: nn.Sequential) -> nn.Sequential:
    children = list(model.children())
    out: list[nn.Module] = []
    i = 0
    while i < len(children):
        mod = children[i]
        nxt = children[i + 1] if i + 1 < len(children) else None
        if isinstance(mod, _FOLDABLE) and nxt is not None and is_bn(nxt):
            out.append(fold_bn(mod, nxt))
            i += 2
            continue
        if isinstance(mod, nn.Sequential):
            out.append(_fold_sequential_children(mod))
        else:
            _fold_in_place(mod)
            out.append(mod)
        i += 1
    return nn.Sequential(*out)


@dataclass
class BNEvalCost:
    """What the BN layers of a model cost at inference, i.e. what folding removes.

    ``layers``: number of BN modules; ``stored``: parameters and running buffers they hold
    (γ, β, μ̂, σ̂², 4 per channel, plus ``num_batches_tracked``); ``elements``: activations
    they touch for the given input; ``flops``: 2 per element (one multiply, one add, even with
    a = γ/√(σ̂²+ε) and c = β − aμ̂ precomputed).
    """

    layers: int
    stored: int
    elements: int

    @property
    def flops(self) -> int:
        """Multiply-adds of the eval-mode affine map, counted as 2 operations per element."""
        return 2 * self.elements


def bn_eval_cost(model: nn.Module, example: Tensor) -> BNEvalCost:
    """Count BN modules, their stored numbers, and the activations they touch for ``example``.

    Runs one forward pass of ``model`` (which must be in eval mode, so nothing is updated) with
    hooks on every batch-norm layer.
    """
    if model.training:
        raise ValueError("bn_eval_cost needs the model in eval mode; call model.eval() first")
    bns = [m for m in model.modules() if is_bn(m)]
    elements = 0

    def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal elements
        elements += out.numel()

    handles = [m.register_forward_hook(hook) for m in bns]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    stored = sum(p.numel() for m in bns for p in m.parameters())
    stored += sum(b.numel() for m in bns for b in m.buffers())
    return BNEvalCost(layers=len(bns), stored=stored, elements=elements)
