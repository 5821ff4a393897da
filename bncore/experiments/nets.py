r"""Small networks with pluggable normalization: the models the experiment chapters train.

Every hidden block is ``linear → norm → activation`` (the placement of Ioffe & Szegedy 2015,
§3.2: BN is applied to the pre-activation :math:`x = Wz + b` of the layer input z, their
:math:`Wu + b`), and a final linear ``head`` maps to the logits. The normalization is chosen
by name with :func:`make_norm`:

- ``"none"``: ``nn.Identity`` (the "standard" network of Santurkar et al. 2018),
- ``"bn"``: the book's :class:`bncore.norm.torch_bn.BatchNorm1d` / ``BatchNorm2d``,
- ``"noisy_bn"``: :class:`NoisyBatchNorm`, BN followed by i.i.d. noise on every activation of
  every example, from a distribution drawn anew at every training step (Santurkar et al. 2018,
  §2.1).

:class:`MLP` and :class:`ConvNet` expose the same interface: ``.blocks`` (an ``nn.ModuleList`` of
:class:`Block`, each with ``.linear``, ``.norm``, ``.act``, ``.pool``), ``.head``, ``forward(x)``
and ``forward_collect(x) -> (logits, pre_activations)``, where ``pre_activations[i]`` is the input
of block ``i``'s activation (after the norm), the quantity Ioffe & Szegedy plot in §4.1.
Construction is deterministic given ``torch.manual_seed`` (or
:func:`bncore.experiments.runtime.seed_everything`); the noise of :class:`NoisyBatchNorm` has its
own seed.

The module runs past 400 lines because the two networks, their shared :class:`Block`, the noisy
BN they may use and :func:`probe_mode` (which must know :class:`NoisyBatchNorm`) are one
interface that the chapters swap in and out; split up, the pieces would import each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeGuard, TypeVar, cast, overload

import torch
from torch import Tensor, nn

from bncore.norm.torch_bn import BatchNorm1d, BatchNorm2d

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "MLP",
    "NORMS",
    "Block",
    "BlockNet",
    "ConvNet",
    "NoisyBatchNorm",
    "is_block_net",
    "layer_groups",
    "layer_weights",
    "make_activation",
    "make_norm",
    "probe_mode",
]

NORMS = ("none", "bn", "noisy_bn")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
INITS = ("kaiming", "xavier", "lecun", "torch")


class NoisyBatchNorm(nn.Module):
    r"""Batch norm followed by noise whose distribution changes at every training step.

    Santurkar et al. (2018, §2.1) "perturb each activation for each sample in the batch using
    i.i.d. noise sampled from a non-zero mean and non-unit variance distribution", and the noise
    distribution "changes at each time step". With ``per_example=True`` (the default, their
    design), at training step :math:`t` the layer first draws, for every unit (channel)
    :math:`j`, the step's noise distribution, a mean and a standard deviation

    .. math::

        b_{tj}\sim U(-a, a),\qquad s_{tj}\sim U(1, k),

    and then adds to every activation of every example its own draw from it:

    .. math::

        y_{ij} = \mathrm{BN}(x)_{ij} + \xi_{tij},\qquad
        \xi_{tij}\sim\mathcal N(b_{tj},\, s_{tj}^2)\ \text{i.i.d. over } i
        \text{ (and positions)}.

    Unit :math:`j`'s batch distribution then has mean :math:`\beta_j + b_{tj}` and variance
    :math:`\gamma_j^2 + s_{tj}^2`, both redrawn at every step.

    ``per_example=False`` is the *shared* variant: one shift and one scale per unit and step,
    the same for the whole batch, :math:`y_{ij} = s_{tj}\,\mathrm{BN}(x)_{ij} + b_{tj}`. It moves
    the distribution of every unit without adding noise between the examples of a batch.

    :math:`a` = ``mean_scale`` and :math:`k` = ``std_scale``; the draws are i.i.d. over units and
    steps, ``E[b] = 0``, ``std[b] = a/√3``, ``E[s] = (1+k)/2``, ``std[s] = (k−1)/√12``. In eval
    mode the layer is plain BN (running statistics, no noise).

    Parameters
    ----------
    num_features: C, the number of units (``dims=1``, input ``(N, C)``) or channels
        (``dims=2``, input ``(N, C, H, W)``).
    dims: 1 for :class:`~bncore.norm.torch_bn.BatchNorm1d`, 2 for ``BatchNorm2d``.
    mean_scale: a ≥ 0, the half-width of the distribution of the noise mean b.
    std_scale: k ≥ 1, the upper end of the distribution of the noise scale s.
    seed: seed of this layer's own noise generator (CPU ``torch.Generator``), so that the noise
        sequence does not depend on the device or on other random draws.
    per_example: i.i.d. noise per activation and example (Santurkar et al.), or the shared
        variant.
    **bn_kw: ``eps``, ``momentum``, ``affine``, ``track_running_stats`` for the BN.

    Attributes
    ----------
    last_shift, last_scale: the ``(C,)`` b and s of the most recent training step (``None``
        before the first one).
    resample: when ``False`` a training forward reuses the step's noise instead of drawing new
        noise (used by :func:`probe_mode` so that probes do not advance the noise sequence). The
        per-example noise of an input of another shape is drawn from the step's distribution
        with a generator seeded by the layer's seed and step, so it is the same for every probe
        of that step.
    """

    def __init__(
        self,
        num_features: int,
        dims: int = 1,
        mean_scale: float = 1.0,
        std_scale: float = 2.0,
        seed: int = 0,
        per_example: bool = True,
        **bn_kw: Any,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"NoisyBatchNorm: dims must be 1 or 2, got {dims}")
        if mean_scale < 0:
            raise ValueError(f"NoisyBatchNorm: mean_scale must be >= 0, got {mean_scale}")
        if std_scale < 1:
            raise ValueError(f"NoisyBatchNorm: std_scale must be >= 1, got {std_scale}")
        self.bn = (BatchNorm1d if dims == 1 else BatchNorm2d)(num_features, **bn_kw)
        self.num_features = num_features
        self.dims = dims
        self.mean_scale = float(mean_scale)
        self.std_scale = float(std_scale)
        self.seed = int(seed)
        self.per_example = bool(per_example)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.resample = True
        self.steps = 0
        self.last_shift: Tensor | None = None
        self.last_scale: Tensor | None = None
        self.last_noise: Tensor | None = None

    def extra_repr(self) -> str:  # noqa: D102
        return (f"mean_scale={self.mean_scale}, std_scale={self.std_scale}, seed={self.seed}, "
                f"per_example={self.per_example}")

    def draw_noise(self) -> tuple[Tensor, Tensor]:
        """Draw the step's ``(shift, scale)``, a pair of ``(C,)`` tensors (CPU), and store it."""
        c, g = self.num_features, self.generator
        shift = (torch.rand(c, generator=g) * 2 - 1) * self.mean_scale
        scale = 1 + torch.rand(c, generator=g) * (self.std_scale - 1)
        self.last_shift, self.last_scale = shift, scale
        self.last_noise = None
        self.steps += 1
        return shift, scale

    def _example_noise(
        self, shape: torch.Size, shift: Tensor, scale: Tensor, fresh: bool
    ) -> Tensor:
        """ξ ~ N(shift, scale²) of the input's shape: from the training stream when ``fresh``,
        else the step's stored noise (same shape) or a per-step probe stream (other shapes).
        """
        if not fresh and self.last_noise is not None and self.last_noise.shape == shape:
            return self.last_noise
        g = self.generator if fresh else torch.Generator().manual_seed(
            self.seed * 1_000_003 + self.steps)
        view = (1, -1) + (1,) * (len(shape) - 2)
        noise = shift.reshape(view) + scale.reshape(view) * torch.randn(shape, generator=g)
        if fresh:
            self.last_noise = noise
        return noise

    def forward(self, x: Tensor) -> Tensor:
        """BN(x), then the step's noise in training mode (see the class docstring)."""
        y = self.bn(x)
        if not self.training:
            return y
        fresh = self.resample or self.last_shift is None
        if fresh:
            shift, scale = self.draw_noise()
        else:
            assert self.last_shift is not None and self.last_scale is not None
            shift, scale = self.last_shift, self.last_scale
        if self.per_example:
            noise = self._example_noise(y.shape, shift, scale, fresh)
            return y + noise.to(device=y.device, dtype=y.dtype)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = scale.to(device=y.device, dtype=y.dtype).reshape(shape)
        shift = shift.to(device=y.device, dtype=y.dtype).reshape(shape)
        return y * scale + shift


def make_norm(kind: str, num_features: int, dims: int = 1, **kw: Any) -> nn.Module:
    """The normalization layer named ``kind`` ∈ {"none", "bn", "noisy_bn"} for C = num_features.

    ``dims=1`` for ``(N, C)`` inputs, ``dims=2`` for ``(N, C, H, W)``. ``**kw`` goes to the BN
    (``eps``, ``momentum``, …) or to :class:`NoisyBatchNorm` (also ``mean_scale``, ``std_scale``,
    ``seed``); it is ignored for ``"none"``.
    """
    if dims not in (1, 2):
        raise ValueError(f"make_norm: dims must be 1 or 2, got {dims}")
    if kind == "none":
        return nn.Identity()
    if kind == "bn":
        return (BatchNorm1d if dims == 1 else BatchNorm2d)(num_features, **kw)
    if kind == "noisy_bn":
        return NoisyBatchNorm(num_features, dims=dims, **kw)
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def make_activation(name: str) -> nn.Module:
    """``"relu"``, ``"tanh"``, ``"sigmoid"`` or ``"linear"`` (identity) as a module."""
    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")
    return table[name]()


def _gain(activation: str) -> float:
    """Kaiming's gain for the activation (√2 for ReLU, 5/3 for tanh, 1 otherwise)."""
    return {"relu": math.sqrt(2.0), "tanh": 5.0 / 3.0}.get(activation, 1.0)


def _init_layer(
    layer: nn.Linear | nn.Conv2d, init: str, activation: str, weight_std: float | None
) -> None:
    """Initialize one linear/conv layer in place; biases start at 0 (except ``"torch"``).

    With fan_in = in_features·kernel_size and fan_out likewise:
    ``"kaiming"`` W ~ N(0, gain²/fan_in) with gain √2 (ReLU), 5/3 (tanh), 1 otherwise;
    ``"xavier"`` W ~ N(0, 2/(fan_in + fan_out)); ``"lecun"`` W ~ N(0, 1/fan_in);
    ``"torch"`` PyTorch's default uniform init. ``weight_std`` = σ_w overrides all of these with
    W ~ N(0, σ_w²/fan_in) (the mean-field convention).
    """
    w = layer.weight
    fan_in = w[0].numel()
    fan_out = w.shape[0] * w[0, 0].numel()
    if weight_std is not None:
        std = weight_std / math.sqrt(fan_in)
    elif init == "torch":
        return  # keep nn.Linear / nn.Conv2d's own reset_parameters()
    elif init == "kaiming":
        std = _gain(activation) / math.sqrt(fan_in)
    elif init == "xavier":
        std = math.sqrt(2.0 / (fan_in + fan_out))
    else:  # lecun
        std = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        w.normal_(0.0, std)
        if layer.bias is not None:
            layer.bias.zero_()


class Block(nn.Module):
    """One hidden block: ``pool(act(norm(linear(x))))``; ``linear`` is an ``nn.Linear`` (MLP)
    or an ``nn.Conv2d`` (ConvNet), ``pool`` is ``nn.Identity`` unless the ConvNet downsamples.
    """

    linear: nn.Linear | nn.Conv2d
    norm: nn.Module
    act: nn.Module
    pool: nn.Module

    def __init__(
        self,
        linear: nn.Linear | nn.Conv2d,
        norm: nn.Module,
        act: nn.Module,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.norm = norm
        self.act = act
        self.pool = pool if pool is not None else nn.Identity()

    def forward_pre(self, x: Tensor) -> Tensor:
        """The pre-activation ``norm(linear(x))``: the input of the activation."""
        return self.norm(self.linear(x))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.pool(self.act(self.forward_pre(x)))


def _norm_kwargs(
    norm: str, i: int, norm_kw: dict[str, Any] | None, noise: dict[str, Any] | None
) -> dict[str, Any]:
    kw = dict(norm_kw or {})
    if norm == "noisy_bn":
        noise = dict(noise or {})
        noise["seed"] = int(noise.get("seed", 0)) * 1000 + i  # a distinct stream per layer
        kw.update(noise)
    return kw


_M = TypeVar("_M", bound=nn.Module)

if TYPE_CHECKING:

    class ModuleListOf(nn.ModuleList, Generic[_M]):
        """For the type checker only: an ``nn.ModuleList`` whose items are all ``_M``.

        torch's ``ModuleList`` is not generic; the networks here (:class:`MLP`,
        :class:`ConvNet`, :class:`bncore.experiments.resnets.ResNet`) fill theirs with one kind
        of block, and this view lets their users see that.
        """

        def __iter__(self) -> Iterator[_M]: ...

        @overload
        def __getitem__(self, idx: slice) -> ModuleListOf[_M]: ...

        @overload
        def __getitem__(self, idx: int) -> _M: ...

        def __getitem__(self, idx: int | slice) -> _M | ModuleListOf[_M]: ...


class BlockNet(Protocol):
    """What :func:`layer_weights`, :func:`layer_groups` and
    :func:`bncore.experiments.bn_curvature.network_bn_layer_terms` read of a network (duck
    typed; :class:`MLP` and :class:`ConvNet` have it): ``.blocks`` and ``.head``.
    """

    blocks: ModuleListOf[Block]
    head: nn.Linear


def is_block_net(model: object) -> TypeGuard[BlockNet]:
    """Whether ``model`` has ``.blocks`` and ``.head`` (the check of :func:`layer_weights`)."""
    return hasattr(model, "blocks") and hasattr(model, "head")


class _Net(nn.Module):
    """Shared forward of :class:`MLP` and :class:`ConvNet`."""

    blocks: ModuleListOf[Block]
    head: nn.Linear

    def _flatten_for_head(self, h: Tensor) -> Tensor:
        return h

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for block in self.blocks:
            h = block(h)
        return self.head(self._flatten_for_head(h))

    def forward_collect(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits, pre)``, where ``pre[i]`` is block i's pre-activation ``norm(linear(·))``:
        ``(N, width)`` for an MLP, ``(N, C, H, W)`` for a ConvNet.
        """
        h, pre = x, []
        for block in self.blocks:
            z = block.forward_pre(h)
            pre.append(z)
            h = block.pool(block.act(z))
        return self.head(self._flatten_for_head(h)), pre


class MLP(_Net):
    """A fully connected network ``depth × (Linear → norm → activation)`` and a Linear head.

    Parameters
    ----------
    in_dim, width, depth, out_dim: input size, hidden width, number of hidden blocks (≥ 0), and
        number of outputs. Inputs with more than one feature dimension are flattened.
    norm: "none", "bn" or "noisy_bn" (see :func:`make_norm`).
    activation: "relu", "tanh", "sigmoid" or "linear".
    init: "kaiming", "xavier", "lecun" or "torch" (see ``_init_layer``); the head uses the same
        scheme with the gain of a linear layer.
    bias: whether the linear layers have biases.
    noise: keyword arguments of :class:`NoisyBatchNorm` (``mean_scale``, ``std_scale``, ``seed``)
        when ``norm="noisy_bn"``; block i gets noise seed ``1000·seed + i``.
    norm_kw: extra keyword arguments for every norm layer (e.g. ``eps``, ``momentum``).
    weight_std: if given, every weight is N(0, weight_std²/fan_in), overriding ``init``.
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        depth: int,
        out_dim: int,
        norm: str = "bn",
        activation: str = "relu",
        init: str = "kaiming",
        bias: bool = True,
        noise: dict[str, Any] | None = None,
        norm_kw: dict[str, Any] | None = None,
        weight_std: float | None = None,
    ) -> None:
        super().__init__()
        for name, v in [("in_dim", in_dim), ("width", width), ("out_dim", out_dim)]:
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MLP: {name} must be a positive int, got {v!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"MLP: depth must be an int >= 0, got {depth!r}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        self.in_dim, self.width, self.depth, self.out_dim = in_dim, width, depth, out_dim
        self.norm_kind, self.activation = norm, activation
        blocks = []
        for i in range(depth):
            lin = nn.Linear(in_dim if i == 0 else width, width, bias=bias)
            _init_layer(lin, init, activation, weight_std)
            norm_layer = make_norm(norm, width, 1, **_norm_kwargs(norm, i, norm_kw, noise))
            blocks.append(Block(lin, norm_layer, make_activation(activation)))
        self.blocks = cast("ModuleListOf[Block]", nn.ModuleList(blocks))  # holds only Block
        self.head = nn.Linear(width if depth else in_dim, out_dim, bias=bias)
        _init_layer(self.head, init, "linear", weight_std)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return super().forward(x.flatten(1))

    def forward_collect(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # noqa: D102
        return super().forward_collect(x.flatten(1))


class ConvNet(_Net):
    """A small VGG-style CNN (Simonyan & Zisserman 2015) for ``(N, C, 8, 8)`` digits images.

    Block i is ``Conv2d(3×3, padding 1) → norm → activation``, followed by 2×2 max pooling after
    every block but the last; the last block's feature maps are averaged over space (global
    average pooling) and a Linear head gives the logits. With ``channels=(16, 32, 64)`` and 8×8
    input the spatial sizes are 8 → 4 → 2 → 1 (average).

    Parameters are as for :class:`MLP`; ``norm`` uses ``BatchNorm2d`` (per channel over N·H·W,
    Ioffe & Szegedy 2015, §3.2).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        num_classes: int = 10,
        norm: str = "bn",
        activation: str = "relu",
        init: str = "kaiming",
        bias: bool = True,
        noise: dict[str, Any] | None = None,
        norm_kw: dict[str, Any] | None = None,
        weight_std: float | None = None,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"ConvNet: channels must be positive ints, got {channels}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        self.norm_kind, self.activation = norm, activation
        blocks, c_in = [], in_channels
        for i, c in enumerate(channels):
            conv = nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=bias)
            _init_layer(conv, init, activation, weight_std)
            norm_layer = make_norm(norm, c, 2, **_norm_kwargs(norm, i, norm_kw, noise))
            pool = nn.MaxPool2d(2) if i < len(channels) - 1 else nn.Identity()
            blocks.append(Block(conv, norm_layer, make_activation(activation), pool))
            c_in = c
        self.blocks = cast("ModuleListOf[Block]", nn.ModuleList(blocks))  # holds only Block
        self.head = nn.Linear(c_in, num_classes, bias=bias)
        _init_layer(self.head, init, "linear", weight_std)

    def _flatten_for_head(self, h: Tensor) -> Tensor:
        return h.mean(dim=(2, 3))  # global average pooling: (N, C, H, W) → (N, C)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if x.dim() != 4:
            raise ValueError(f"ConvNet expects (N, C, H, W) input, got shape {tuple(x.shape)}")
        return super().forward(x)


def layer_weights(model: nn.Module) -> list[Tensor]:
    """The weight of each layer in order: every block's ``linear.weight``, then ``head.weight``."""
    if not is_block_net(model):
        raise TypeError("layer_weights: the model needs .blocks and .head (an MLP or ConvNet)")
    return [b.linear.weight for b in model.blocks] + [model.head.weight]


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """All parameters of each layer in order (block i: linear, norm γ/β; then the head)."""
    if not is_block_net(model):
        raise TypeError("layer_groups: the model needs .blocks and .head (an MLP or ConvNet)")
    return [list(b.parameters()) for b in model.blocks] + [list(model.head.parameters())]


@contextmanager
def probe_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Let a probe run forward passes without side effects on training.

    Inside the context, :class:`NoisyBatchNorm` layers reuse their last noise (the noise of the
    current training step) instead of drawing new noise, and on exit every buffer (BN running
    statistics, ``num_batches_tracked``) is restored to its value on entry. The training mode
    is left as it is, so BN layers normalize with the probe batch's own statistics.
    """
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    flags = [m.resample for m in noisy]
    for m in noisy:
        m.resample = False
    try:
        yield model
    finally:
        for m, f in zip(noisy, flags, strict=True):
            m.resample = f
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
