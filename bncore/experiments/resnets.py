r"""Residual networks with the block variants that replace or mimic batch norm.

Every network here is a stack of pre-activation residual blocks (He et al. 2016, "Identity
Mappings") on a stream ``x_l`` of constant width,

.. math::

    x_{l} = x_{l-1} + r_l(x_{l-1}),\qquad l = 1,\dots,L,

where ``x_0`` is the output of a linear (or 3×3 conv) *stem* and the *residual branch*
``r_l`` has two weight layers (Fixup's m = 2). The variants differ only in the branch:

``"bn"``
    r(x) = W₂ ReLU(BN(W₁ ReLU(BN(x)))), He-initialized W, no biases. BN on the branch, identity
    skip (De & Smith 2020).
``"none"``
    r(x) = W₂ ReLU(W₁ ReLU(x) + b₁) + b₂, He-initialized, zero biases: the same block with the
    normalization removed.
``"skipinit"``
    r(x) = α·f(x) with f the ``"none"`` branch and one learnable scalar α per block,
    initialized at 0 (De & Smith 2020), so every block is the identity at initialization.
``"fixup"``
    r(x) = s·W₂(ReLU(W₁(ReLU(x) + a₁) + a₂) + a₃) + a₄ with scalar biases a (init 0) and a scalar
    multiplier s (init 1); W₁ is He-initialized and scaled by L^{-1/(2m-2)} = L^{-1/2}, W₂ is
    zero, and so is the classifier (Zhang et al. 2019, the three rules of Fig. 1; their m is the
    number of layers per branch).
``"nf"``
    r(x) = α·f(x/σ̄_l) with σ̄_l = √Var(x_{l-1}) *predicted* as √(1 + (l-1)α²) and a fixed α
    (0.2 by default), and f = W₂ ReLU(W₁ ReLU(·)) with scaled weight standardization
    Ŵ = g·(W − mean)/(std·√fan_in), with the gain g = √(2/(1 − 1/π)) for ReLU (Brock et al.
    2021, who write γ for the gain and β_l for σ̄_l).

All weight layers of a branch are ``nn.Linear`` (``dims=1``, input ``(N, C)``) or 3×3
``nn.Conv2d`` with circular padding (``dims=2``, input ``(N, C, H, W)``). Circular padding
gives every pixel the full 3×3 fan-in, so the variance algebra of the MLP carries over to the
conv net exactly (with zero padding the border pixels see fewer inputs).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncore.experiments.nets import make_norm

if TYPE_CHECKING:
    from bncore.experiments.nets import ModuleListOf

__all__ = [
    "RELU_WS_GAIN",
    "VARIANTS",
    "ResNet",
    "ResidualBlock",
    "ScaledWSConv2d",
    "ScaledWSLinear",
    "branch_weights",
    "fixup_scale",
    "nf_betas",
]

VARIANTS: tuple[str, ...] = ("bn", "none", "skipinit", "fixup", "nf")

#: Brock et al. (2021): the gain γ that makes ReLU followed by a weight-standardized layer
#: variance preserving: Var(ReLU(z)) = (1 − 1/π)/2 for z ~ N(0, 1), so the gain is √(2/(1 − 1/π)).
RELU_WS_GAIN: float = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))


def fixup_scale(num_blocks: int, layers_per_branch: int = 2) -> float:
    """Fixup's rescaling L^{-1/(2m-2)} of the non-final branch layers (Zhang et al. 2019, Fig. 1).

    ``num_blocks`` is L (the number of residual branches), ``layers_per_branch`` is Fixup's
    m ≥ 2 (not a batch size).
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be ≥ 1, got {num_blocks}")
    if layers_per_branch < 2:
        raise ValueError(f"Fixup needs m ≥ 2 layers per branch, got {layers_per_branch}")
    return float(num_blocks) ** (-1.0 / (2 * layers_per_branch - 2))


def nf_betas(num_blocks: int, alpha: float, input_var: float = 1.0) -> list[float]:
    """σ̄_l = √Var(x_{l-1}) for l = 1..L predicted by Var(x_l) = Var(x_{l-1}) + α²
    (Brock et al. 2021): σ̄_l = √(input_var + (l-1)·α²).
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be ≥ 1, got {num_blocks}")
    if input_var <= 0:
        raise ValueError(f"input_var must be > 0, got {input_var}")
    return [math.sqrt(input_var + (ell - 1) * alpha**2) for ell in range(1, num_blocks + 1)]


class ScaledWSLinear(nn.Linear):
    r"""Linear layer with scaled weight standardization (Brock et al. 2021).

    .. math:: \hat W_{ij} = \gamma\,\frac{W_{ij} - \mu_i}{\sigma_i\sqrt{N}},

    with μ_i, σ_i the mean and (biased) standard deviation of row i and N the fan-in, so each
    row of Ŵ has zero mean and norm γ. Removes the mean shift of ReLU inputs and, with
    γ = :data:`RELU_WS_GAIN`, preserves the variance of ReLU(z), z ~ N(0, 1).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 gain: float = RELU_WS_GAIN, eps: float = 1e-6) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.gain, self.eps = gain, eps

    def standardized_weight(self) -> Tensor:
        """Ŵ: (out, in)."""
        w = self.weight
        mean = w.mean(dim=1, keepdim=True)
        var = w.var(dim=1, unbiased=False, keepdim=True)
        return self.gain * (w - mean) * torch.rsqrt(var * w.shape[1] + self.eps)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.linear(x, self.standardized_weight(), self.bias)


class ScaledWSConv2d(nn.Conv2d):
    """3×3 conv with scaled weight standardization over each filter's C·k·k fan-in
    (Brock et al. 2021); see :class:`ScaledWSLinear`.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 gain: float = RELU_WS_GAIN, eps: float = 1e-6) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, padding_mode="circular",
                         bias=bias)
        self.gain, self.eps = gain, eps

    def standardized_weight(self) -> Tensor:
        """Ŵ: (out, in, 3, 3)."""
        w = self.weight
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        return self.gain * (w - mean) * torch.rsqrt(var * fan_in + self.eps)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self._conv_forward(x, self.standardized_weight(), self.bias)


def _layer(width: int, dims: int, bias: bool, ws: bool = False) -> nn.Linear | nn.Conv2d:
    """One weight layer of a branch: width → width, He-initialized, zero bias."""
    layer: nn.Linear | nn.Conv2d
    if dims == 1:
        layer = ScaledWSLinear(width, width, bias=bias) if ws else nn.Linear(width, width, bias)
    else:
        layer = (ScaledWSConv2d(width, width, bias=bias) if ws else
                 nn.Conv2d(width, width, 3, padding=1, padding_mode="circular", bias=bias))
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")  # std √(2/fan_in)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _bn(width: int, dims: int) -> nn.Module:
    return make_norm("bn", width, dims)


class ResidualBlock(nn.Module):
    """x ↦ x + r(x) with the branch r of ``variant`` (see the module docstring).

    Parameters
    ----------
    width: channels (or features) of the stream.
    variant: one of :data:`VARIANTS`.
    dims: 1 for ``(N, C)`` inputs (linear layers), 2 for ``(N, C, H, W)`` (3×3 convs).
    index: l, the block's 1-based position (used by ``"nf"`` for σ̄_l).
    num_blocks: L (used by ``"fixup"`` for the L^{-1/2} scaling).
    alpha: SkipInit's initial α (default 0) or NF's fixed α (default 0.2).
    input_var: Var(x_0) assumed by ``"nf"`` when predicting σ̄_l.
    """

    def __init__(self, width: int, variant: str, *, dims: int = 1, index: int = 1,
                 num_blocks: int = 1, alpha: float | None = None,
                 input_var: float = 1.0) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (linear) or 2 (conv), got {dims}")
        if width < 1:
            raise ValueError(f"width must be ≥ 1, got {width}")
        if not 1 <= index <= num_blocks:
            raise ValueError(f"need 1 ≤ index ≤ num_blocks, got index={index}, "
                             f"num_blocks={num_blocks}")
        self.variant, self.dims, self.index = variant, dims, index
        bias = variant in ("none", "skipinit", "nf")
        self.layer1 = _layer(width, dims, bias, ws=variant == "nf")
        self.layer2 = _layer(width, dims, bias, ws=variant == "nf")
        if variant == "bn":
            self.norm1, self.norm2 = _bn(width, dims), _bn(width, dims)
        if variant == "skipinit":
            self.alpha = nn.Parameter(torch.tensor(0.0 if alpha is None else float(alpha)))
        if variant == "nf":
            self.nf_alpha = 0.2 if alpha is None else float(alpha)
            self.beta = nf_betas(index, self.nf_alpha, input_var)[-1]
        if variant == "fixup":
            with torch.no_grad():
                self.layer1.weight.mul_(fixup_scale(num_blocks, 2))
                self.layer2.weight.zero_()
            self.biases = nn.Parameter(torch.zeros(4))  # a₁..a₄: scalar biases (rule 3)
            self.scale = nn.Parameter(torch.ones(()))  # s: scalar multiplier (rule 3)

    def branch(self, x: Tensor) -> Tensor:
        """r(x): what the block adds to the stream (after α, s and the division by σ̄_l)."""
        v = self.variant
        if v == "bn":
            h = self.layer1(F.relu(self.norm1(x)))
            return self.layer2(F.relu(self.norm2(h)))
        if v == "fixup":
            a = self.biases
            h = self.layer1(F.relu(x) + a[0])
            return self.scale * self.layer2(F.relu(h + a[1]) + a[2]) + a[3]
        if v == "nf":
            x = x / self.beta
        f = self.layer2(F.relu(self.layer1(F.relu(x))))
        if v == "skipinit":
            return self.alpha * f
        if v == "nf":
            return self.nf_alpha * f
        return f

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return x + self.branch(x)


class ResNet(nn.Module):
    """Stem → L residual blocks → head, for vectors (``dims=1``) or images (``dims=2``).

    The stem is a linear map (or 3×3 conv) with LeCun init (variance 1/fan_in), so that a
    standardized input gives E[x_0²] ≈ 1. The head is ReLU (BN-ReLU for ``"bn"``, the
    pre-activation ResNets' final norm), global average pooling for images, and a linear
    classifier (zero for ``"fixup"``, else N(0, 1/width)).

    Attributes: ``.stem``, ``.blocks`` (``nn.ModuleList`` of :class:`ResidualBlock`), ``.head``.
    """

    def __init__(self, in_features: int, width: int, depth: int, num_classes: int,
                 variant: str = "bn", *, dims: int = 1, alpha: float | None = None) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth (number of residual blocks) must be ≥ 1, got {depth}")
        if in_features < 1 or num_classes < 1:
            raise ValueError("in_features and num_classes must be ≥ 1, "
                             f"got {in_features} and {num_classes}")
        self.variant, self.dims, self.depth = variant, dims, depth
        self.stem: nn.Module = (nn.Linear(in_features, width, bias=False) if dims == 1 else
                                nn.Conv2d(in_features, width, 3, padding=1,
                                          padding_mode="circular", bias=False))
        nn.init.kaiming_normal_(self.stem.weight, mode="fan_in", nonlinearity="linear")
        self.blocks = cast(  # holds only ResidualBlock
            "ModuleListOf[ResidualBlock]",
            nn.ModuleList(
                ResidualBlock(width, variant, dims=dims, index=i + 1, num_blocks=depth,
                              alpha=alpha)
                for i in range(depth)
            ),
        )
        self.final_norm: nn.Module = _bn(width, dims) if variant == "bn" else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        with torch.no_grad():
            if variant == "fixup":
                self.head.weight.zero_()
            else:
                self.head.weight.normal_(0.0, 1.0 / math.sqrt(width))
            self.head.bias.zero_()

    def _check(self, x: Tensor) -> None:
        if x.dim() != (2 if self.dims == 1 else 4):
            shape = "(N, C)" if self.dims == 1 else "(N, C, H, W)"
            raise ValueError(
                f"ResNet(dims={self.dims}) expects input {shape}, got {tuple(x.shape)}"
            )

    def _readout(self, x: Tensor) -> Tensor:
        z = F.relu(self.final_norm(x))
        if self.dims == 2:
            z = z.mean(dim=(2, 3))  # global average pooling: (N, C, H, W) → (N, C)
        return self.head(z)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        self._check(x)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self._readout(h)

    def forward_collect(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Logits, the stream ``[x_0, ..., x_L]`` and the branch outputs ``[r_1, ..., r_L]``."""
        self._check(x)
        h = self.stem(x)
        streams, branches = [h], []
        for block in self.blocks:
            r = block.branch(h)
            h = h + r
            branches.append(r)
            streams.append(h)
        return self._readout(h), streams, branches


def branch_weights(model: ResNet) -> list[Tensor]:
    """The 2L branch weights ``[W₁¹, W₂¹, W₁², ...]`` in input-to-output order."""
    if not isinstance(model, ResNet):
        raise TypeError(f"expected a bncore.experiments.resnets.ResNet, got {type(model).__name__}")
    out: list[Tensor] = []
    for block in model.blocks:
        out += [block.layer1.weight, block.layer2.weight]
    return out
